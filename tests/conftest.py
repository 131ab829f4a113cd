"""Shared helpers. In-process tests use the test process as it is (the library never pins it);
tests that start the command give the child process every core the session has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from prequential.config import preset
from prequential.counts import CountInputs

ALL_CORES = sorted(os.sched_getaffinity(0))  # captured before any test pins this process
# One persistent compilation cache for this process, the other test workers and every command
# they start: the same programs are compiled once per session, not once per process. JAX is
# already imported here (it reads its environment then), so this process is set up directly.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # as the command does: keep every program
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
if shutil.which("taskset") is None:  # util-linux; every Debian-like machine has it
    raise RuntimeError("the tests need taskset (package util-linux) to set the CPU affinity of the processes they start")
SAMPLE = (Path(__file__).parents[1] / "prequential" / "data" / "sample.txt").read_bytes()
TINY = preset("tiny")  # the preset of the tests: compiles fastest
# The tests share these few variations of it, so that each is compiled once per session.
# Every kind of count channel (both indirect contexts), the mixer's selection and its per-stream offsets.
CHANNELS = TINY.replace(count_indirect=2, count_shape=1, count_order0=1, count_nest=1, count_select=1, count_stream_rate=5.0)
# the full calibration of counts, its tables at a rate other than the default (a test sees the config's)
CALIBRATED = TINY.replace(count_states=2, count_state_rate=8.0)


def run_cli(
    *args: str, cores: list[int] | None = None, stdin: bytes | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m prequential ARGS` in a fresh process on `cores` (default: all), with `env`
    added to the environment."""
    affinity = ",".join(map(str, cores or ALL_CORES))
    return subprocess.run(
        ["taskset", "-c", affinity, sys.executable, "-m", "prequential", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """Assert the command failed the way a user should see it fail, and return its message."""
    err = done.stderr.decode()
    assert done.returncode != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("prequential: "), err
    return lines[0]


def random_segment(config, rng, max_count: int = 30) -> tuple[np.ndarray, np.ndarray, CountInputs]:
    """A training step's window (tokens and the start symbol), targets and counts below `max_count`, drawn at random."""
    window = rng.integers(0, 257, (config.streams, config.window), dtype=np.int32)
    targets = rng.integers(0, 256, (config.streams, config.segment), dtype=np.int32)
    counts = CountInputs.of(rng.integers(0, max_count, (config.streams, config.segment, config.count_channels, 256), dtype=np.uint16))
    return window, targets, counts
