"""Round trips through the Python API (in-process, tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prequential
from prequential.config import preset

TINY = preset("tiny")
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
    assert len(blob) < len(data) + 120  # header only: the input is stored as it is


def test_layout_with_empty_streams():
    # Fewer tokens than streams: the last streams hold nothing at all.
    roundtrip(b"ab", TINY.replace(streams=7))


def test_same_input_same_file():
    data = b"the same seed and data give the same file " * 5
    assert prequential.compress(data, TINY) == prequential.compress(data, TINY)


@pytest.mark.parametrize(("n", "streams", "segment"), [(0, 4, 8), (1, 7, 8), (100, 4, 8), (1000, 3, 5)])
def test_layout_counts_tokens_before_each_position(n, streams, segment):
    from prequential.replay import Layout

    layout = Layout(n, streams, segment)
    valid = layout.valid()
    for position in range(0, valid.shape[1] + 1, 3):
        assert layout.tokens_before(position) == valid[:, :position].sum()
    assert layout.tokens_before(valid.shape[1]) == n == layout.lengths().sum()
