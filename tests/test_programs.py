"""Traced programs kept on disk (programs.py): found again by a new learner, never for another
config, never for native numerics, and a damaged file is traced anew."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import SAMPLE, TINY

from prequential import programs
from prequential.learner import Learner
from prequential.replay import Layout, train_pass
from prequential.store import ArrayStore

TOKENS = np.frombuffer(SAMPLE[:600], np.uint8).astype(np.int32)


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """A folder of its own for the programs of one test."""
    monkeypatch.setattr(programs, "directory", lambda: tmp_path)
    return tmp_path


def _train(learner: Learner) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bits per segment of a short training pass, and the state it ends with."""
    config = learner.config
    bits, carry = train_pass(learner, Layout(len(TOKENS), config.streams, config.segment), ArrayStore(TOKENS.copy()))
    return bits, [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(carry.state)]


def _untraceable(monkeypatch) -> None:
    """Make tracing the model fail: from then on, a learner can only run stored programs."""

    def fail(*args, **kwargs):
        raise AssertionError("traced the model, where a stored program should have been loaded")

    monkeypatch.setattr(Learner, "_forward", fail)
    monkeypatch.setattr(Learner, "_module_params", fail)


def _same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1], strict=True))


def test_a_new_learner_runs_the_stored_programs_and_computes_the_same(folder, monkeypatch):
    traced = _train(Learner.create(TINY))
    assert list(folder.glob("*.jaxexport")), "nothing was stored"
    _untraceable(monkeypatch)
    assert _same(_train(Learner.create(TINY)), traced)


def test_another_config_does_not_find_the_programs_of_this_one(folder, monkeypatch):
    _train(Learner.create(TINY))
    _untraceable(monkeypatch)
    with pytest.raises(AssertionError, match="traced the model"):
        _train(Learner.create(TINY.replace(seed=1)))


def test_a_damaged_program_is_traced_and_stored_again(folder):
    traced = _train(Learner.create(TINY))
    for path in folder.glob("*.jaxexport"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert _same(_train(Learner.create(TINY)), traced)
    assert all(programs._load(path) is not None for path in folder.glob("*.jaxexport"))


def test_native_numerics_and_a_users_model_store_nothing(folder):
    native = TINY.replace(numerics="native")
    _train(Learner.create(native))
    assert not Learner.create(native).stores_programs
    assert not Learner.create(TINY, optimizer=Learner.create(TINY).optimizer).stores_programs
    assert not list(folder.glob("*.jaxexport"))


def test_programs_are_kept_in_a_folder_of_jaxs_compilation_cache_and_only_with_one():
    cache = jax.config.jax_compilation_cache_dir  # the tests' own (conftest.py)
    assert programs.directory() == Path(cache) / "prequential-programs"
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert programs.directory() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", cache)
