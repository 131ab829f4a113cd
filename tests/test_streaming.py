"""Bounded memory: files are streamed through token stores, and the match model reads a bounded ring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import SAMPLE, TINY

import prequential
from prequential import api
from prequential.errors import PrequentialError
from prequential.store import FileStore


def test_a_file_is_coded_like_the_same_bytes(tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"ignored prefix" + SAMPLE[:4000])
    with open(path, "rb") as source:
        source.seek(len(b"ignored prefix"))  # a file is read from its position to its end
        out = io.BytesIO()
        report = api.encode(source, out, TINY)
    assert out.getvalue() == prequential.compress(SAMPLE[:4000], TINY)
    assert report.original_bytes == 4000


def test_an_incompressible_file_is_stored_from_the_file(tmp_path):
    data = np.random.default_rng(1).bytes(3000)
    path = tmp_path / "in"
    path.write_bytes(data)
    with open(path, "rb") as source:
        out = io.BytesIO()
        report = api.encode(source, out, TINY)
    assert report.stored and prequential.decompress(out.getvalue()) == data


def test_decoding_goes_through_a_scratch_directory(tmp_path):
    blob = prequential.compress(SAMPLE[:2000], TINY)
    out = io.BytesIO()
    api.decode(io.BytesIO(blob), out, scratch=str(tmp_path))
    assert out.getvalue() == SAMPLE[:2000]
    assert not list(tmp_path.iterdir())  # the scratch file is gone


@pytest.mark.parametrize("window_log2", [8, 9])
def test_streams_longer_than_the_match_window_round_trip(window_log2):
    # 4 streams of 1,500 tokens each: the ring of 256 or 512 tokens wraps several times.
    config = TINY.replace(match_window_log2=window_log2)
    data = (SAMPLE * 2)[:6000]
    blob = prequential.compress(data, config)
    assert prequential.decompress(blob) == data
    assert blob != prequential.compress(data, TINY)  # the window changes what the match model sees


def test_a_file_that_shrinks_while_read_is_a_clear_error(tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as source:
        store = FileStore(source.fileno())
        path.write_bytes(b"x" * 10)
        with pytest.raises(PrequentialError, match="shrank"):
            store.read(50, 20)
