"""Longer end-to-end checks with the default preset (marker `slow`; CI runs them scaled down by
PREQUENTIAL_SLOW_SCALE, e.g. 0.25)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import prequential
from prequential import api
from prequential.config import preset

SCALE = float(os.environ.get("PREQUENTIAL_SLOW_SCALE", "1"))
BOOK = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "canterbury" / "alice29.txt"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def book() -> bytes:
    if not BOOK.exists():
        pytest.skip("the shared corpora are not beside this checkout")
    return BOOK.read_bytes()[: int(60000 * SCALE)]


def test_default_preset_round_trip_beats_bzip2_and_agrees_with_measure(book):
    import bz2

    out = io.BytesIO()
    report = api.encode(book, out, preset("default"))
    assert prequential.decompress(out.getvalue()) == book
    assert report.file_bytes < len(bz2.compress(book, 9))
    assert report.overhead_percent < 0.1
    measured = prequential.measure(book, preset("default"), baselines=False)
    assert abs(measured.total_bits - report.total_bits) < 0.001 * report.total_bits
