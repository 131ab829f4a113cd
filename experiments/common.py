"""Shared by the experiment scripts: where the corpora are, and the run's provenance line."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

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
