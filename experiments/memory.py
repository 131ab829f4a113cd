"""Peak resident memory of compress and decompress at several input sizes, and what checkpoints cost.

Each run is the real command under `/usr/bin/time -v` (peak RSS of the process), pinned to one
core. Large generated inputs are stopped after --seconds with SIGINT once their memory has had
time to settle (the count tables fill within the first megabytes), and the checkpoint the run
left is resumed for another --seconds to show the machinery works at that size; a complete
compress (with checkpoints at the default interval) and decompress of a corpus file give the
full-run numbers and the checkpoint overhead. Writes docs/memory.md. Usage:

    python experiments/memory.py [--sizes 10M,200M] [--seconds 270]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import CORPORA, DOCS, provenance

SIZES = {"K": 10**3, "M": 10**6, "G": 10**9}


def generated(path: Path, n_bytes: int) -> None:
    """Text-like data: random 4 KB pieces of the corpora's texts, so counts keep meeting new contexts."""
    texts = b"".join((CORPORA / "canterbury" / name).read_bytes() for name in ("alice29.txt", "lcet10.txt", "plrabn12.txt"))
    rng = np.random.default_rng(0)
    with open(path, "wb") as out:
        written = 0
        while written < n_bytes:
            start = int(rng.integers(0, len(texts) - 4096))
            piece = texts[start : start + min(4096, n_bytes - written)]
            out.write(piece)
            written += len(piece)


def _default_sigint() -> None:
    """A shell's background job ignores SIGINT and its commands inherit that; undo it, so the
    stop below works as Ctrl-C does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def timed(args: list[str], core: int, cwd: Path, seconds: float | None) -> tuple[int, float, str]:
    """(peak RSS in bytes, wall seconds, stderr) of the prequential command, stopped after `seconds`."""
    command = ["/usr/bin/time", "-v", "taskset", "-c", str(core), sys.executable, "-m", "prequential", *args]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        # SIGINT to the command itself (time's child: taskset execs it), as Ctrl-C would.
        for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), signal.SIGINT)
        _, err = proc.communicate()
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) * 1024
    return peak, time.monotonic() - started, err


def checkpoint_position(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return int(z["next_segment"])


def complete_runs(work: Path, name: str, core: int) -> tuple[list[tuple], list[str]]:
    """A whole compress (checkpoints at the default interval) and decompress of a corpus file."""
    corpus = work / "corpus"
    corpus.write_bytes((CORPORA / name).read_bytes())
    peak, _, _ = timed(["compress", "-q", "-k", "--checkpoint", "c.ckpt", "--json", "c.json", "corpus"], core, work, None)
    report = json.loads((work / "c.json").read_text())
    rows = [("compress", name, corpus.stat().st_size, "complete", peak, report["speed_kb_per_s"])]
    share = 100 * report["checkpoint_seconds"] / report["seconds"]
    notes = [
        f"- Checkpoints at the default interval (60 s) on {name}: {report['checkpoint_seconds']:.2f} s of "
        f"{report['seconds']:.1f} s, {share:.2f} % of the encode time."
    ]
    corpus.unlink()
    peak, _, _ = timed(["decompress", "-q", "-k", "corpus.pq", "-o", "corpus"], core, work, None)
    same = corpus.read_bytes() == (CORPORA / name).read_bytes()
    rows.append(("decompress", name, corpus.stat().st_size, "complete, bit-exact" if same else "MISMATCH", peak, 0.0))
    return rows, notes


def stopped_runs(work: Path, size: str, core: int, seconds: float) -> list[tuple]:
    """Compress generated data for `seconds`, stop it, resume it for `seconds`, stop it again."""
    n_bytes = int(size[:-1]) * SIZES[size[-1].upper()]
    data = work / f"gen{size}"
    generated(data, n_bytes)
    flags = ["compress", "-q", "-k", "--checkpoint", f"{size}.ckpt", "--checkpoint-interval", "60"]
    rows = []
    for attempt in ("first run, stopped", "resumed, stopped"):
        extra = ["--resume"] if attempt.startswith("resumed") else []
        peak, wall, _ = timed([*flags, *extra, data.name, "-o", f"{size}.pq"], core, work, seconds)
        checkpoint = work / f"{size}.ckpt"
        done = checkpoint_position(checkpoint) * 256 if checkpoint.exists() else 0
        assert not (work / f"{size}.pq").exists(), "a stopped run left output at the destination"
        rows.append(("compress", f"generated {size}", n_bytes, f"{attempt} after {wall:.0f} s (~{done:,} bytes checkpointed)", peak, 0.0))
    data.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,200M")
    parser.add_argument("--seconds", type=float, default=270.0, help="per stopped run; a checkpoint needs a block (1 MB)")
    parser.add_argument("--file", default="canterbury/lcet10.txt", help="corpus file for the complete runs")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    sizes = args.sizes.split(",")
    # The complete runs, then the sizes, spread over the cores; each core runs its jobs one by one.
    plan: dict[int, list] = {core: [] for core in cores}
    plan[cores[0]].append(lambda work, core: complete_runs(work, args.file, core))
    for i, size in enumerate(sizes):
        plan[cores[(i + 1) % len(cores)]].append(lambda work, core, size=size: (stopped_runs(work, size, core, args.seconds), []))

    def run_jobs(work: Path, core: int) -> list[tuple[list, list]]:
        return [job(work, core) for job in plan[core]]

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor() as pool:
        for results in pool.map(run_jobs, [Path(tmp)] * len(cores), cores):
            for job_rows, job_notes in results:
                rows += job_rows
                notes += job_notes
    table = "| command | input | bytes | run | peak RSS MB | KB/s |\n|---|---|---:|---|---:|---:|\n" + "".join(
        f"| {c} | {name} | {n:,} | {run} | {peak / 1e6:.0f} | {f'{speed:.2f}' if speed else ''} |\n"
        for c, name, n, run, peak, speed in rows
    )
    text = (
        "# Memory and checkpoint cost\n\nGenerated by `python experiments/memory.py`. "
        + provenance(1)
        + " Peak RSS from `/usr/bin/time -v` (the whole process: Python, JAX and XLA included). The default preset;"
        " the 'bytes checkpointed' of a stopped run are counted in whole 8-stream segments (256 bytes).\n\n"
        + table
        + "\n"
        + "\n".join(notes)
        + "\n"
    )
    (DOCS / "memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
