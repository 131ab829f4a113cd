"""Shared by the experiment scripts: where the corpora are, and the run's provenance line."""

from __future__ import annotations

import os
import platform
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
