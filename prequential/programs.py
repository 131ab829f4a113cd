"""The learner's traced programs, kept on disk beside JAX's compilation cache.

JAX's persistent cache keeps compiled programs, but finds them by the lowered program, so every
process still traces the model first: about 5 s of Flax and JAX tracing for the default preset,
most of a short command's time. `stored` keeps the traced program itself, serialized with
`jax.export` (StableHLO, the form JAX hands to XLA), in a file named by a hash of everything it
depends on: the replay code, the numeric libraries, the backend, the config, the function and
the shapes of its arguments. A later process loads it, and XLA's cache gives the compiled code.

Only exact numerics use it: their results are the same integers however XLA compiles them, so a
stored program computes what tracing anew would (native numerics' floats could differ between a
stored and a freshly traced program, and encoder and decoder must run the same ones).
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from jax import export

from prequential import accounting


def directory() -> Path | None:
    """Where programs are kept: a folder in JAX's compilation cache, when one is set (the CLI
    sets it; so may a library user); None (no storing) otherwise."""
    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / "prequential-programs" if cache else None


# JAX settings that change what tracing makes of the same code.
_TRACING_SETTINGS = ("jax_enable_x64", "jax_threefry_partitionable", "jax_default_matmul_precision", "jax_numpy_dtype_promotion")


def salt(description: str) -> bytes:
    """What every program of a learner depends on besides its function and argument shapes: the
    replay code, the numeric libraries' versions (the header's digest of them), the backend and machine, JAX's tracing settings, and
    `description` (the config)."""
    settings = ";".join(f"{name}={getattr(jax.config, name)}" for name in _TRACING_SETTINGS)
    backend = f"{jax.default_backend()} {platform.machine()}"  # a program's ops can depend on the machine (intmath.int8_dots)
    parts = [accounting.replay_source(), accounting.library_digest(), backend, settings, description]
    return b"\0".join(part if isinstance(part, bytes) else part.encode() for part in parts)


def stored(fn: Callable, name: str, context: bytes) -> Callable:
    """`fn`, to be jitted, as a function that at trace time loads its stored program for the
    arguments' shapes (or traces `fn` and stores it): a jit of it traces `fn` only on a miss.
    `context` is the learner's salt."""

    def load_or_trace(*args: Any) -> Any:
        folder = directory()
        if folder is None:
            return fn(*args)
        leaves, tree = jax.tree_util.tree_flatten(args)
        shapes = [jax.ShapeDtypeStruct(jax.typeof(x).shape, jax.typeof(x).dtype) for x in leaves]
        signature = repr((name, str(tree), [(s.shape, s.dtype.name) for s in shapes])).encode()
        path = folder / (hashlib.blake2b(context + b"\0" + signature, digest_size=16).hexdigest() + ".jaxexport")
        program = _load(path)
        if program is None:
            program = export.export(jax.jit(fn))(*jax.tree_util.tree_unflatten(tree, shapes))
            _save(program, path)
        return program.call(*args)

    return load_or_trace


def _load(path: Path) -> export.Exported | None:
    """The program stored at `path`; None if there is none or it does not read back (a damaged
    file is a miss like any other: the program is traced and stored again)."""
    try:
        return export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # whatever a damaged flatbuffer raises
        return None


def _save(program: export.Exported, path: Path) -> None:
    """Store `program` whole or not at all (another process may be storing or reading it). One
    that cannot be serialized, or a folder that cannot be written, is not stored: it is traced
    again next time."""
    try:
        data = program.serialize()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent)
    except (OSError, ValueError, ImportError):
        return
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)


def serializable(*types: type) -> None:
    """Let stored programs take and return these NamedTuples: a serialized program names the
    pytree types of its arguments and results, and one with an unnamed type is not stored."""
    for kind in types:
        export.register_namedtuple_serialization(kind, serialized_name=f"prequential.{kind.__name__}")
