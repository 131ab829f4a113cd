"""Checkpoints of a long pass, taken at the end of coder blocks, so an interrupted run resumes.

A checkpoint is a NumPy .npz archive of plain arrays (read back with allow_pickle=False): the
learner's state leaves (keyed by their paths in the state's tree), the count tables, the memory
states (config.memory_cache), the bits so far (per segment for a measurement), and a JSON
description of the run (the identity a resume must match, and where the output stood). Not
orbax: it would bring tensorstore and asynchronous writers for what is one archive of a few
arrays, and we read files we did not write ourselves only through a format that cannot execute
anything. It is written to a temporary file, fsynced, and renamed over the previous one, so a
stop during a write leaves the previous checkpoint usable. At a block end the range coder has
just been flushed, so no coder state is needed: the compressed output up to there is in a
payload file beside the checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from prequential import accounting
from prequential.config import Config, to_compact
from prequential.counts import ContextCounts
from prequential.errors import PrequentialError
from prequential.learner import Learner
from prequential.numerics import Numerics
from prequential.replay import BlockEnd, Carry, new_counts

# The count table itself is saved as its used rows only (see _used_rows); these are saved whole.
_COUNT_ARRAYS = (
    "checks",
    "context",
    "word",
    "previous_words",
    "recent",
    "match_table",
    "match_at",
    "match_run",
    "line_start",
    "above_start",
    "same_line",
    "last_seen",
    "last_gaps",
    "record_guess",
    "record_votes",
    "pixel",
    "fields16",
    "utf16",
    "nul_lines",
    "record",
    "followed",
    "followed_one",
    "shape",
    "nest",
    "depth",
)


def identity(config: Config, source: bytes, sha256: str, given_sha256: str | None, here: Numerics, **extra: Any) -> dict[str, Any]:
    """What a resumed run must share with the interrupted one: the package, code, config and
    data, and (native numerics only: exact results do not depend on them) the threads, device
    and layout. The compressor and `measure` both use this."""
    out = {
        "package": accounting.package_version(),
        "code": accounting.code_digest(source).hex(),
        "config": list(to_compact(config)),
        "sha256": sha256,
        "given": given_sha256,
        **extra,
    }
    if config.numerics == "native":
        out |= {
            "threads": here.threads,
            "device": f"{here.backend} {here.device_kind}",
            "devices": here.devices,
            "flags": here.flags_digest.hex(),
        }
    return out


def save(path: str | Path, identity: dict[str, Any], progress: dict[str, Any], block_end: BlockEnd) -> None:
    arrays: dict[str, np.ndarray] = {
        "run": np.frombuffer(json.dumps({"identity": identity, "progress": progress}).encode(), np.uint8),
        "next_segment": np.array(block_end.next_segment),
        "ideal_bits": np.array(block_end.ideal_bits, np.float64),
    }
    if block_end.segment_bits is not None:
        arrays["segment_bits"] = block_end.segment_bits
    arrays |= {_state_key(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(block_end.carry.state)[0]}
    if block_end.carry.memory is not None:
        arrays["memory"] = np.asarray(block_end.carry.memory)
    counts = block_end.carry.counts
    if counts is not None:
        arrays |= {f"counts.{name}": getattr(counts, name) for name in _COUNT_ARRAYS}
        rows = _used_rows(counts)
        arrays |= {"counts.rows": rows, "counts.counts": counts.counts[rows], "counts.time": np.array(counts.time)}
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as out:
        np.savez(out, **arrays)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def load(path: str | Path, identity: dict[str, Any], learner: Learner) -> tuple[dict[str, Any], BlockEnd]:
    """The progress record and the state of a checkpoint; refuses one made for another run."""
    try:
        with np.load(path, allow_pickle=False) as z:
            run = json.loads(z["run"].tobytes())
            if run["identity"] != identity:
                differ = sorted(k for k in identity if run["identity"].get(k) != identity[k])
                raise PrequentialError(f"checkpoint {str(path)!r} is for another run ({', '.join(differ)} differ); remove it to start over")
            paths, treedef = jax.tree_util.tree_flatten_with_path(learner.state_shape())
            state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(z[_state_key(path)]) for path, _ in paths])
            counts = new_counts(learner.config, learner.config.streams)
            if counts is not None:
                for name in _COUNT_ARRAYS:
                    getattr(counts, name)[...] = z[f"counts.{name}"]
                counts.counts[z["counts.rows"]] = z["counts.counts"]
                counts.time = int(z["counts.time"])
            segment_bits = z["segment_bits"].copy() if "segment_bits" in z else None
            memory = z["memory"].copy() if learner.config.caches_memory else None
            block_end = BlockEnd(int(z["next_segment"]), Carry(state, counts, memory), float(z["ideal_bits"]), segment_bits)
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise PrequentialError(f"checkpoint {str(path)!r} is unreadable ({err}); remove it to start over") from None
    return run["progress"], block_end


def _state_key(path: tuple) -> str:
    """An archive key for a state leaf, from its path in the state's tree: "state.params...",
    "state.opt_state.nu" (names, not positions, so that a checkpoint says what it holds)."""
    return "state" + jax.tree_util.keystr(path)


def _used_rows(counts: ContextCounts) -> np.ndarray:
    """Rows of the count table that are not all zero: the table has up to millions of rows, of
    which a run has touched at most (positions x channels), so a checkpoint keeps only those."""
    return np.flatnonzero((counts.checks != 0) | counts.counts.any(axis=1))


class Checkpointer:
    """Saves the state at a block end when `interval` seconds have passed since the last save."""

    def __init__(self, path: str | Path, identity: dict[str, Any], interval: float) -> None:
        self.path, self.identity, self.interval = Path(path), identity, interval
        self.last = time.monotonic()
        self.seconds_spent = 0.0

    def maybe_save(self, block_end: BlockEnd, progress: dict[str, Any]) -> None:
        if time.monotonic() - self.last < self.interval:
            return
        started = time.monotonic()
        save(self.path, self.identity, progress, block_end)
        self.last = time.monotonic()
        self.seconds_spent += self.last - started

    def remove(self) -> None:
        for path in (self.path, Path(f"{self.path}.tmp")):
            path.unlink(missing_ok=True)
