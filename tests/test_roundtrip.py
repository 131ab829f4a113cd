"""Round trips through the Python API (in-process, tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prequential
from prequential.errors import FormatError

SMALL_BLOCKS = TINY.replace(block_segments=16)  # many coder blocks even for short inputs
BT = TINY.streams * TINY.segment  # tokens per segment over all streams
BLOCK = BT * SMALL_BLOCKS.block_segments  # tokens per coder block


def roundtrip(data: bytes, config=TINY) -> bytes:
    blob = prequential.compress(data, config)
    assert prequential.decompress(blob) == data
    return blob


@pytest.mark.parametrize(
    "data",
    [b"", b"x", bytes(range(256)), bytes(256) * 8, b"abracadabra " * 40],
    ids=["empty", "one-byte", "all-256-values", "zeros", "text"],
)
def test_special_inputs(data):
    roundtrip(data)


@pytest.mark.parametrize("n", [BT - 1, BT, BT + 1, 2 * BT + 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3])
def test_lengths_around_segment_and_block_boundaries(n):
    rng = np.random.default_rng(n)
    # Low-entropy bytes, so the model codes them below 8 bits and the file is not stored raw.
    roundtrip(rng.integers(97, 101, n, dtype=np.uint8).tobytes(), SMALL_BLOCKS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3 * BT + 5))
def test_any_bytes(data):
    roundtrip(data, SMALL_BLOCKS)


@settings(max_examples=10, deadline=None)
@given(st.text(max_size=400))
def test_any_text(text):
    roundtrip(text.encode())


def test_random_binary_is_stored_not_expanded():
    data = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    blob = roundtrip(data)
    # magic, format, flags, a 2-byte length, the data's CRC-32 and the header's: nothing about a model
    assert len(blob) == len(data) + 16
    assert blob.endswith(data)


def test_stored_data_is_checked_by_its_crc():
    data = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    blob = bytearray(prequential.compress(data, TINY))
    blob[-100] ^= 0x01
    with pytest.raises(FormatError, match="CRC-32"):
        prequential.decompress(bytes(blob))


def test_layout_with_empty_streams():
    # Fewer tokens than streams: the last streams hold nothing at all.
    roundtrip(b"ab", TINY.replace(streams=7))


def test_same_input_same_file():
    data = b"the same seed and data give the same file " * 5
    assert prequential.compress(data, TINY) == prequential.compress(data, TINY)


@pytest.mark.parametrize(("n", "streams", "segment"), [(0, 4, 8), (1, 7, 8), (100, 4, 8), (1000, 3, 5)])
def test_layout_reads_writes_and_counts_every_token_once(n, streams, segment):
    from prequential.replay import Layout
    from prequential.store import ArrayStore

    layout = Layout(n, streams, segment)
    tokens = np.arange(n, dtype=np.int32)
    width = layout.segments * segment
    grid = layout.read(ArrayStore(tokens), -3, width)  # positions before 0 hold nothing
    valid = layout.valid(-3, width)
    assert np.array_equal(np.sort(grid[valid]), tokens) and not grid[~valid].any()
    assert np.array_equal(grid[valid], tokens)  # stream by stream, in order
    copy = ArrayStore(np.full(n, -1, np.int32))
    for s in range(layout.segments):
        layout.write(copy, s * segment, layout.read(ArrayStore(tokens), s * segment, (s + 1) * segment))
    assert np.array_equal(copy.tokens, tokens)
    for position in range(0, width + 1, 3):
        assert layout.tokens_before(position) == valid[:, 3 : 3 + position].sum()
    assert layout.segment_tokens().sum() == n == layout.lengths().sum()
