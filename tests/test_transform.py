"""The x86 call/jump filter (transform.py): exact inversion, what it converts, and where it applies."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY

import prequential
from prequential import transform
from prequential.config import NO_COUNTS
from prequential.measure import measure


def calls(n: int, seed: int = 0) -> bytes:
    """An ELF-looking input: calls to a few targets from many places, among other bytes."""
    rng = np.random.default_rng(seed)
    out = bytearray(b"\x7fELF" + bytes(12))
    for _ in range(n):
        out += rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        target = int(rng.choice([0x1000, 0x2340, 0x8000]))
        out += bytes([0xE8]) + ((target - len(out) - 5) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)


def test_the_filter_makes_calls_to_one_target_equal_bytes():
    data = (
        bytes([0x90, 0xE8])
        + (0x100 - 6).to_bytes(4, "little", signed=True)
        + bytes([0xE8])
        + (0x100 - 11).to_bytes(4, "little", signed=True)
    )
    filtered = transform.encode_bytes(data)
    # The offsets differ (they are relative to different places); the absolute targets agree.
    assert data[2:6] != data[7:11] and filtered[2:5] == filtered[7:10]
    assert filtered[5] == data[5] and filtered[10] == data[10]  # the top byte is left alone


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_chunked_filter_inverts_exactly_and_equals_the_whole_one(monkeypatch, chunk):
    rng = np.random.default_rng(1)
    samples = [rng.choice(np.array([0, 0xFF, 0xE8, 0xE9, 5], np.uint8), size=int(rng.integers(0, 80))).tobytes() for _ in range(300)]
    whole = [transform.encode_bytes(x) for x in samples]
    monkeypatch.setattr(transform, "_CHUNK", chunk)
    for x, y in zip(samples, whole, strict=True):
        assert transform.encode_bytes(x) == y
        assert transform.decode_bytes(y) == x
    assert any(x != y for x, y in zip(samples, whole, strict=True))  # the samples do get converted


def test_the_filter_applies_to_executables_only():
    assert transform.applies(TINY, b"\x7fELF\x02") and transform.applies(TINY, b"MZ\x90\x00")
    assert not transform.applies(TINY, b"#!/bin/sh") and not transform.applies(TINY, b"")
    assert not transform.applies(TINY.replace(x86_filter=0), b"\x7fELF")
    assert not transform.applies(TINY.replace(vocab_size=300, **NO_COUNTS), b"\x7fELF")


def test_an_executable_round_trips_and_is_coded_filtered(tmp_path):
    data = calls(400)
    blob = prequential.compress(data, TINY)
    assert prequential.decompress(blob) == data
    source = tmp_path / "a.out"
    source.write_bytes(data)
    with open(source, "rb") as f, open(tmp_path / "a.pq", "wb") as out:
        prequential.encode(f, out, TINY)  # the streamed path filters through a temporary file
    assert (tmp_path / "a.pq").read_bytes() == blob
    filtered, plain = measure(data, TINY, baselines=False), measure(data, TINY.replace(x86_filter=0), baselines=False)
    assert filtered.data_bits < plain.data_bits  # repeated targets are cheaper than varying offsets
