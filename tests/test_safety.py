"""No code is ever run from data: the package has no pickle, marshal, eval, exec or dynamic import."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "prequential"
FORBIDDEN = re.compile(r"\b(pickle|marshal|shelve|eval|exec|__import__|import_module|cloudpickle|dill)\b")


def test_package_source_has_no_code_loading():
    hits = [
        f"{path.name}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert hits == []


def test_the_pattern_catches_what_it_should():
    assert FORBIDDEN.search("import pickle") and FORBIDDEN.search("x = eval(s)") and not FORBIDDEN.search("evaluate()")
