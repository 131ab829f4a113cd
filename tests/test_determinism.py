"""Bit-exact decoding in other processes and under another CPU affinity, or a clear refusal."""

from __future__ import annotations

import pytest
from conftest import ALL_CORES, SAMPLE, one_line_error, run_cli

import prequential
from prequential import numerics

DATA = SAMPLE[:4000]


def test_file_made_in_process_decodes_in_a_fresh_process(tmp_path):
    pq = tmp_path / "s.pq"
    pq.write_bytes(prequential.compress(DATA, "tiny"))
    done = run_cli("decompress", "-q", str(pq), "-o", "-")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == DATA


def test_one_thread_file_decodes_on_one_core(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(DATA)
    assert run_cli("compress", "-q", "--preset", "tiny", str(src)).returncode == 0
    done = run_cli("decompress", "-q", "-k", str(tmp_path / "a.pq"), "-o", "-", cores=ALL_CORES[:1])
    assert done.returncode == 0 and done.stdout == DATA


@pytest.mark.skipif(len(ALL_CORES) < 2, reason="needs 2 cores to encode with 2 threads")
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_all_core_file_under_taskset_one_core_decodes_exactly_or_is_refused(tmp_path, preset):
    src = tmp_path / "a"
    src.write_bytes(DATA)
    done = run_cli("compress", "-q", "--preset", preset, "--threads", str(len(ALL_CORES)), str(src))
    assert done.returncode == 0, done.stderr.decode()
    done = run_cli("decompress", "-q", "-k", str(tmp_path / "a.pq"), "-o", "-", cores=ALL_CORES[:1])
    if done.returncode == 0:
        assert done.stdout == DATA
    else:
        message = one_line_error(done)
        assert "refusing to decode" in message and f"CPU threads: file {len(ALL_CORES)}, here 1" in message
        assert done.stdout == b""


def test_threads_are_recorded_in_the_header():
    import io

    from prequential.api import inspect

    header, _ = inspect(io.BytesIO(prequential.compress(b"recorded " * 20, "tiny")))
    here = numerics.activate("cpu", 1)
    assert header.numerics == here and header.numerics.threads == 1 and header.numerics.backend == "cpu"
