"""Shared by the experiment scripts: where the corpora are, and the run's provenance line."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from prequential import accounting, numerics

# PREQUENTIAL_CORPORA points elsewhere, e.g. to a copy carried to a machine without ../shared.
CORPORA = Path(os.environ.get("PREQUENTIAL_CORPORA") or Path(__file__).resolve().parents[2] / "shared" / "corpora")
DOCS = Path(__file__).resolve().parents[1] / "docs"


def corpus_files() -> tuple[list[Path], list[str]]:
    """The corpus files that match SOURCES.md, and a note for each listed file that is missing or
    differs from its listed SHA-256 (so a benchmark says what it could not measure)."""
    listed = re.findall(r"^\| (\w+) \| ([^|]+?) \| \d+ \| ([0-9a-f]+)…? \|", (CORPORA / "SOURCES.md").read_text(), re.M)
    files, problems = [], []
    for corpus, name, digest in listed:
        path = CORPORA / corpus / name
        if not path.is_file():
            problems.append(f"{corpus}/{name} is missing")
        elif not hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest):
            problems.append(f"{corpus}/{name} differs from SOURCES.md")
        else:
            files.append(path)
    return files, problems


def corpus_path(name: str, folders: dict[str, Path]) -> Path:
    """A file as the benchmarks name it: a path under the corpora, or SET/NAME in a set that
    experiments/corpus.py built (folders: set name -> where it was built)."""
    corpus, _, rest = name.partition("/")
    return folders[corpus] / rest if corpus in folders else CORPORA / name


def corpus_label(path: Path, folders: dict[str, Path]) -> str:
    """The name `corpus_path` takes for `path`: SET/NAME for a file of a built set, CORPUS/NAME for
    a shared one."""
    corpus = next((name for name, folder in folders.items() if path.parent == folder), path.parent.name)
    return f"{corpus}/{path.name}"


def provenance(threads: int) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in accounting.library_versions().items())
    return (
        f"Machine: {platform.machine()} {platform.processor() or ''}, {numerics.usable_cores()} core(s) used, "
        f"XLA on {threads} thread(s); {date.today()}; prequential {accounting.package_version()}; {libs}."
    )


def run_prequential(
    args: list[str], cwd: Path, *, prefix: tuple[str, ...] = (), env: dict | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    """Run the command in a fresh process (after `prefix`, e.g. taskset); its wall time and result."""
    started = time.perf_counter()
    done = subprocess.run([*prefix, sys.executable, "-m", "prequential", *args], cwd=cwd, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, done


def per_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=1, help="files run in this many processes, one core each")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # a worker writes its results here


def per_file(script: str, files: list[Path], args: argparse.Namespace, work: Callable[[Path], Any], options: list[str]) -> list:
    """work(path) for every file, in the order of `files`: here on one core, or (--jobs N) in N
    processes, each pinned to its own core and running `script --files ... --json OUT *options` on
    its share (the largest files first, each to the least loaded worker). A worker writes its
    results as JSON and exits."""
    if args.jobs <= 1:
        numerics.activate("cpu", 1)
        results = [work(path) for path in files]
        if args.json:
            Path(args.json).write_text(json.dumps(results))
            raise SystemExit(0)
        return results
    shares: list[list[Path]] = [[] for _ in range(args.jobs)]
    for path in sorted(files, key=lambda p: -p.stat().st_size):
        min(shares, key=lambda share: sum(p.stat().st_size for p in share)).append(path)
    cores = sorted(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        workers = []
        for k, share in enumerate(filter(None, shares)):
            out = Path(tmp) / f"{k}.json"
            command = [sys.executable, script, "--files", ",".join(str(p) for p in share), "--json", str(out), *options]
            workers.append((share, out, subprocess.Popen(["taskset", "-c", str(cores[k % len(cores)]), *command])))
        results = {}
        for share, out, worker in workers:
            if worker.wait():
                raise SystemExit(f"a worker failed on {', '.join(p.name for p in share)}")
            results |= dict(zip(share, json.loads(out.read_text()), strict=True))
    return [results[path] for path in files]


def jobs_note(args: argparse.Namespace) -> str:
    """For the provenance line: how the files shared the machine."""
    return f" Files ran in {args.jobs} processes at once, each on its own core." if args.jobs > 1 else ""
