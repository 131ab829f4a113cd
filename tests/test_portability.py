"""Exact-numerics files decode bit-exactly under settings that change XLA's floats: older
instruction sets, another core count, another thread count (devices: test_devices.py)."""

from __future__ import annotations

import pytest
from conftest import ALL_CORES, SAMPLE, run_cli

DATA = SAMPLE[:3000]
THREADS = str(min(2, len(ALL_CORES)))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One file, made in a fresh process with every core the session has (up to two threads)."""
    folder = tmp_path_factory.mktemp("portable")
    (folder / "in").write_bytes(DATA)
    # tiny with every kind of count channel, the mixer's selection and per-stream offsets, as the default has them
    channels = "count_indirect = 2\ncount_shape = 1\ncount_order0 = 1\ncount_nest = 1\ncount_select = 1\ncount_stream_rate = 5.0\n"
    (folder / "config.toml").write_text('preset = "tiny"\n' + channels)
    done = run_cli("compress", "-q", "-k", "--config", "config.toml", "--threads", THREADS, "in", cwd=folder)
    assert done.returncode == 0, done.stderr.decode()
    return folder / "in.pq"


@pytest.mark.parametrize(
    ("cores", "env"),
    [
        (None, {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}),
        (None, {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}),
        (ALL_CORES[:1], {}),
    ],
    ids=["sse4.2", "avx2", "one-core"],
)
def test_the_file_decodes_bit_exactly(made, cores, env):
    done = run_cli("decompress", "-q", "-k", str(made), "-o", "-", cores=cores, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == DATA
