"""Data-parallel streams over several devices (4 simulated CPU devices): round trip and refusal."""

from __future__ import annotations

import importlib.metadata
import json
import socket
import subprocess
import sys

import pytest
from conftest import SAMPLE, one_line_error, run_cli

WITH_TWO = """
import sys
from prequential import numerics
numerics.activate("cpu", 1, devices=2)  # JAX starts here with 2 devices
import prequential
try:
    sys.stdout.buffer.write(prequential.decompress(open(sys.argv[1], "rb").read()))
except prequential.PrequentialError as err:
    print(err)
    sys.exit(1)
"""


def test_four_device_file_decodes_on_one_and_a_native_one_is_refused_on_two(tmp_path):
    data = SAMPLE[:3000]
    (tmp_path / "in").write_bytes(data)
    # With per-stream mixing offsets: each device must look up its own streams' rows.
    (tmp_path / "streams.toml").write_text('preset = "tiny"\ncount_stream_rate = 5.0\n')
    done = run_cli("compress", "-q", "-k", "--config", "streams.toml", "--devices", "4", "in", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    info = run_cli("info", "in.pq", "--json", "i.json", cwd=tmp_path)
    assert json.loads((tmp_path / "i.json").read_text())["numerics"]["devices"] == 4, info.stderr.decode()
    one = run_cli("decompress", "-q", "-k", "in.pq", "-o", "-", cwd=tmp_path)  # one device
    assert one.returncode == 0 and one.stdout == data, one.stderr.decode()
    # One device's file decodes split over four, too.
    assert run_cli("compress", "-q", "-k", "-f", "--preset", "tiny", "in", cwd=tmp_path).returncode == 0
    four = run_cli("decompress", "-q", "-k", "--devices", "4", "in.pq", "-o", "-", cwd=tmp_path)
    assert four.returncode == 0 and four.stdout == data, four.stderr.decode()
    # A native-numerics file keeps the encoder's layout: two devices are refused.
    (tmp_path / "native.toml").write_text('preset = "tiny"\nnumerics = "native"\n')
    done = run_cli("compress", "-q", "-k", "-f", "--config", "native.toml", "--devices", "4", "in", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    refused = subprocess.run([sys.executable, "-c", WITH_TWO, "in.pq"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 1, refused.stderr
    assert "devices: file 4, here 2" in refused.stdout


def test_devices_must_divide_the_streams(tmp_path):
    (tmp_path / "in").write_bytes(SAMPLE[:500])
    done = run_cli("compress", "-q", "-k", "--preset", "tiny", "--devices", "3", "in", cwd=tmp_path)
    assert "cannot be split evenly over 3 devices" in one_line_error(done)
    assert not (tmp_path / "in.pq").exists()


HAS_CUDA_PLUGIN = any((d.metadata["Name"] or "").startswith("jax-cuda") for d in importlib.metadata.distributions())


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="JAX's CUDA plugin is installed here: the GPU backend may well start")
def test_gpu_backend_without_a_gpu_is_one_clear_line(tmp_path):
    """The GPU path up to JAX's start runs on CPU machines too: it must fail cleanly there."""
    (tmp_path / "in").write_bytes(SAMPLE[:500])
    done = run_cli("compress", "-q", "-k", "--preset", "tiny", "--backend", "gpu", "in", cwd=tmp_path)
    assert "no gpu backend is available here" in one_line_error(done)
    assert not (tmp_path / "in.pq").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _together(*args: str, processes: int, cwd) -> list[subprocess.CompletedProcess]:
    """The same command in `processes` processes joined through jax.distributed on this host."""
    port = _free_port()
    command = [sys.executable, "-m", "prequential", *args, "--coordinator", f"localhost:{port}", "--processes", str(processes)]
    running = [
        subprocess.Popen([*command, "--process-id", str(i)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(processes)
    ]
    outputs = [p.communicate(timeout=600) for p in running]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(running, outputs, strict=True)]


# In CI's slow pass, run serially: beside another pytest-xdist worker its processes hung past the
# timeout twice here (not understood yet; alone it passes).
@pytest.mark.slow
def test_two_processes_round_trip_and_one_alone_decodes_too(tmp_path):
    """Two processes (as on two hosts) with 2 CPU devices each: one 4-device mesh, gloo all-reduce.
    Verify decodes as decompress does, on the same mesh."""
    data = SAMPLE[:3000]
    (tmp_path / "in").write_bytes(data)
    for done in _together("compress", "-q", "--preset", "tiny", "--devices", "4", "in", processes=2, cwd=tmp_path):
        assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "in").exists(), "several processes keep their input"
    info = run_cli("info", "in.pq", "--json", "i.json", cwd=tmp_path)
    numerics = json.loads((tmp_path / "i.json").read_text())["numerics"]
    assert (numerics["devices"], numerics["processes"]) == (4, 2), info.stderr.decode()
    verified = _together("verify", "in.pq", processes=2, cwd=tmp_path)
    assert [done.returncode for done in verified] == [0, 0], verified[1].stderr.decode()
    assert [b"in.pq: OK" in done.stderr for done in verified] == [True, False]  # process 0 reports
    alone = run_cli("decompress", "-q", "-k", "in.pq", "-o", "alone", cwd=tmp_path)  # exact numerics: one process decodes it too
    assert alone.returncode == 0 and (tmp_path / "alone").read_bytes() == data, alone.stderr.decode()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--processes", "2"], "need all of --coordinator, --processes and --process-id"),
        (["--coordinator", "localhost:1", "--processes", "2", "--process-id", "5"], "process id 5 is not one of 2 processes"),
    ],
)
def test_bad_process_options_are_one_line(tmp_path, options, message):
    (tmp_path / "in").write_bytes(SAMPLE[:500])
    done = run_cli("compress", "-q", "-k", "--preset", "tiny", "in", *options, cwd=tmp_path)
    assert message in one_line_error(done)
    assert not (tmp_path / "in.pq").exists()
