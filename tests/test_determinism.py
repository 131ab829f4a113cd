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
def test_native_all_core_file_under_taskset_one_core_decodes_exactly_or_is_refused(tmp_path, preset):
    """Native numerics: the thread count may change the floats, so the decoder says so (exact
    numerics decode under any: test_portability.py)."""
    src = tmp_path / "a"
    src.write_bytes(DATA)
    (tmp_path / "native.toml").write_text(f'preset = "{preset}"\nnumerics = "native"\n')
    done = run_cli("compress", "-q", "--config", "native.toml", "--threads", str(len(ALL_CORES)), str(src), cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    done = run_cli("decompress", "-q", "-k", str(tmp_path / "a.pq"), "-o", "-", cores=ALL_CORES[:1])
    if done.returncode == 0:
        assert done.stdout == DATA
    else:
        message = one_line_error(done)
        assert "refusing to decode" in message and f"CPU threads: file {len(ALL_CORES)}, here 1" in message
        assert done.stdout == b""


def test_the_settings_are_recorded_in_the_header():
    import io

    from prequential.api import read_info

    header, _ = read_info(io.BytesIO(prequential.compress(b"recorded " * 20, "tiny")))
    here = numerics.current()
    assert header.numerics == here and header.numerics.backend == "cpu"


def test_library_calls_leave_the_process_alone(tmp_path):
    """compress, decompress and measure use the process as it is: no pinning, no XLA flags."""
    import os

    affinity, flags = os.sched_getaffinity(0), os.environ.get("XLA_FLAGS")
    blob = prequential.compress(DATA[:600], "tiny")
    assert prequential.decompress(blob) == DATA[:600]
    prequential.measure(DATA[:600], prequential.PRESETS["tiny"], baselines=False)
    assert os.sched_getaffinity(0) == affinity and os.environ.get("XLA_FLAGS") == flags
