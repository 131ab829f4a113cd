"""Shared by the experiment scripts: where the corpora are, and the run's provenance line."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from prequential import accounting, numerics

# PREQUENTIAL_CORPORA points elsewhere, e.g. to a copy carried to a machine without ../shared.
CORPORA = Path(os.environ.get("PREQUENTIAL_CORPORA") or Path(__file__).resolve().parents[2] / "shared" / "corpora")
DOCS = Path(__file__).resolve().parents[1] / "docs"


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
