"""prequential: lossless compression by learning the data online (Rae's transmission scheme).

>>> import prequential
>>> blob = prequential.compress(b"hello hello hello", "tiny")
>>> prequential.decompress(blob)
b'hello hello hello'
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prequential.api import compress, decode, decompress, encode
    from prequential.config import PRESETS, Config
    from prequential.errors import PrequentialError
    from prequential.measure import MeasureResult, measure

# Imported on first use (PEP 562), so that `import prequential.cli` does not import JAX before the
# command has set up its process (__main__.py).
_HOMES = {
    "compress": "api",
    "decode": "api",
    "decompress": "api",
    "encode": "api",
    "PRESETS": "config",
    "Config": "config",
    "PrequentialError": "errors",
    "MeasureResult": "measure",
    "measure": "measure",
}
__all__ = ["PRESETS", "Config", "MeasureResult", "PrequentialError", "compress", "decode", "decompress", "encode", "measure"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'prequential' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"prequential.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


class _Package(types.ModuleType):
    """An exported name that is also a submodule's (`prequential.measure`, the function) stays the
    export: the import system binds the submodule here when something first imports it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOMES and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
