"""Every corrupt, truncated, foreign or hostile file is refused with a PrequentialError."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prequential
from prequential import container
from prequential.errors import FormatError, NumericsError, PrequentialError, VersionError
from prequential.replay import Layout

DATA = b"a small text, coded with the tiny preset, then damaged in every way we can think of. " * 6


@pytest.fixture(scope="module")
def blob() -> bytes:
    return prequential.compress(DATA, "tiny")


def header_of(blob: bytes) -> tuple[container.Header, int]:
    stream = io.BytesIO(blob)
    return container.read_header(stream), stream.tell()


def with_header(blob: bytes, **changes) -> bytes:
    """The same file with header fields changed and a valid header checksum."""
    header, size = header_of(blob)
    return container.encode_header(dataclasses.replace(header, **changes)) + blob[size:]


def test_wrong_magic(blob):
    with pytest.raises(FormatError, match="not a prequential file"):
        prequential.decompress(b"GARBAGE!" + blob[8:])


def test_unknown_format_version(blob):
    with pytest.raises(FormatError, match="format version 9"):
        prequential.decompress(blob[:4] + b"\x09" + blob[5:])


def test_every_truncation_is_refused(blob):
    for n in range(len(blob)):
        with pytest.raises(FormatError):
            prequential.decompress(blob[:n])


def test_extension_is_refused(blob):
    with pytest.raises(FormatError, match="after the end"):
        prequential.decompress(blob + b"\x00")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_flipped_bit_is_refused(blob, data):
    i = data.draw(st.integers(0, 8 * len(blob) - 1))
    damaged = bytearray(blob)
    damaged[i // 8] ^= 1 << (i % 8)
    with pytest.raises(PrequentialError):
        prequential.decompress(bytes(damaged))


def test_absurd_declared_size_is_refused_before_work(blob):
    with pytest.raises(PrequentialError, match="more than the limit"):
        prequential.decompress(with_header(blob, n_bytes=1 << 62))


def test_block_claiming_absurd_word_count(blob):
    _, size = header_of(blob)
    body = b"\xff\xff\xff\xff\x0f"  # varint 2**32 - 1 words
    block = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(FormatError, match="claims"):
        prequential.decompress(blob[:size] + block)


def test_other_package_version_names_the_version_to_install(blob):
    with pytest.raises(VersionError, match=r"pip install prequential==9\.9\.9"):
        prequential.decompress(with_header(blob, package_version="9.9.9"))


def test_other_library_versions_are_refused(blob):
    with pytest.raises(VersionError, match="jax"):
        prequential.decompress(with_header(blob, library_digest=b"\0\0\0\0"))


def test_other_replay_code_is_refused(blob):
    with pytest.raises(VersionError, match="replay code"):
        prequential.decompress(with_header(blob, code_digest=b"\0\0\0\0"))


def test_invalid_config_in_header_is_refused(blob):
    header, size = header_of(blob)
    bad = dataclasses.replace(header.config, d_model=30, n_heads=7)  # not a multiple of n_heads
    with pytest.raises(FormatError, match="d_model"):
        prequential.decompress(container.encode_header(dataclasses.replace(header, config=bad)) + blob[size:])


def test_fingerprint_mismatch_is_refused_before_decoding(blob):
    with pytest.raises(NumericsError, match="refusing to decode"):
        prequential.decompress(with_header(blob, fingerprint=bytes(8)))


def test_another_device_decodes_an_exact_file_and_is_refused_for_a_native_one(blob):
    header, _ = header_of(blob)
    other = dataclasses.replace(header.numerics, device_kind="NVIDIA H100 80GB HBM3", backend="gpu", threads=7, devices=4)
    assert prequential.decompress(with_header(blob, numerics=other)) == DATA  # exact: the settings are information
    native = prequential.compress(DATA, prequential.PRESETS["tiny"].replace(numerics="native"))
    header, _ = header_of(native)
    other = dataclasses.replace(header.numerics, device_kind="NVIDIA H100 80GB HBM3")
    with pytest.raises(NumericsError, match="native-numerics file decodes only where its floats are reproduced"):
        prequential.decompress(with_header(native, numerics=other))


def test_a_desync_is_caught_at_the_first_sync_point(blob):
    """A block whose parameter digest disagrees (as if the floats diverged) stops decoding there."""
    header, size = header_of(blob)
    plan = next(Layout(header.n_bytes, header.config.streams, header.config.segment).blocks(header.config))
    stream = io.BytesIO(blob[size:])
    block = container.read_block(stream, plan.n_sync, plan.last, plan.max_words)
    first = bytes(b ^ 0xFF for b in block.digests[0])
    forged = container.encode_block(block.words, [first, *block.digests[1:]], block.ideal_bits)  # a valid CRC
    first_sync = header.config.sync_segments - 1
    with pytest.raises(NumericsError, match=f"diverged from the encoder at segment {first_sync}:"):
        prequential.decompress(blob[:size] + forged + blob[size + stream.tell() :])
