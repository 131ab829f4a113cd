"""The learner's schedule and the learned calibration of counts (learner.py, model.py)."""

from __future__ import annotations

import gc
import itertools
import math
import weakref

import jax
import numpy as np
import pytest
from conftest import CALIBRATED, CHANNELS, SAMPLE, TINY, random_segment

import prequential
from prequential import intmath
from prequential import learner as learner_module
from prequential.counts import CountInputs
from prequential.learner import Learner, learner_for
from prequential.optimizer import learning_rate
from prequential.replay import Layout, train_pass
from prequential.store import ArrayStore


def test_learning_rate_warms_up_then_decays_with_the_tokens_trained_on():
    config = TINY.replace(learning_rate=1e-3, warmup_segments=4, lr_decay_tokens=3200)
    per_update = config.streams * config.segment  # 32 tokens
    rate = learning_rate(config)
    assert float(rate(0)) == pytest.approx(1e-3 / 4)
    assert float(rate(4)) == pytest.approx(1e-3 / math.sqrt(1 + 4 * per_update / 3200))
    assert float(rate(100)) == pytest.approx(1e-3 / math.sqrt(2))  # 3200 tokens in
    assert float(learning_rate(config.replace(warmup_segments=0, lr_decay_tokens=0))(10**6)) == pytest.approx(1e-3)


def test_count_state_tables_move_state_rate_times_faster():
    config = CALIBRATED
    learner = Learner.create(config)
    state = learner.init()
    mixer = learner.tree(state.params)["params"]["mixer"]
    np.testing.assert_allclose(config.count_state_rate * mixer["state_log_alpha"], math.log(config.count_alpha), rtol=1e-6)
    rng = np.random.default_rng(1)
    window = rng.integers(0, 256, (config.streams, config.window), dtype=np.int32)
    targets = rng.integers(0, 256, (config.streams, config.segment), dtype=np.int32)
    counts = CountInputs.of(rng.integers(0, 5, (config.streams, config.segment, config.count_channels, 256), dtype=np.uint16))
    before = jax.tree_util.tree_map(np.asarray, state.params)
    after, *_ = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
    moved = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a) - b).max(), learner.tree(after.params), learner.tree(before))
    step = moved["params"]["mixer"]
    # Adam's first step moves every parameter with a gradient by the learning rate; a table is
    # stored divided by state_rate, so its value moves state_rate times as far.
    assert step["state_weight"] == pytest.approx(config.learning_rate, rel=1e-3)
    assert step["Dense_0"]["kernel"] == pytest.approx(config.learning_rate, rel=1e-3)


def test_mixing_weights_are_stored_divided_by_weight_rate_and_move_that_much_slower():
    rng = np.random.default_rng(3)
    config = CHANNELS
    window, targets, counts = random_segment(config, rng, max_count=5)
    valid = np.ones(targets.shape, bool)
    runs = {}
    for rate in (1.0, 0.5):
        learner = Learner.create(config.replace(count_weight_rate=rate))
        state = learner.init()
        bias = np.asarray(learner.tree(state.params)["params"]["mixer"]["Dense_0"]["bias"])
        np.testing.assert_allclose(bias * rate, config.count_weight, rtol=1e-6)
        state, first, *_ = learner.train(state, window, targets, valid, counts)
        _, second, *_ = learner.train(state, window, targets, valid, counts)
        runs[rate] = np.asarray(first), np.asarray(second)
    # The same weights at the start (0.5 is exact), so the same bits; after one step, the slower
    # mixing has moved half as far, so the bits differ.
    np.testing.assert_array_equal(runs[1.0][0], runs[0.5][0])
    assert not np.array_equal(runs[1.0][1], runs[0.5][1])


def test_mixer_weight_offsets_are_selected_by_the_byte_before_each_prediction():
    config = CHANNELS
    learner = Learner.create(config)
    state = learner.init()
    rng = np.random.default_rng(2)
    window, targets, counts = random_segment(config, rng, max_count=5)
    window[:, -config.segment :] = rng.integers(1, 4, (config.streams, config.segment))  # the scored positions' bytes: 1, 2, 3
    before = np.asarray(learner.tree(state.params)["params"]["mixer"]["select_weight"])
    after, *_ = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
    moved = np.abs(np.asarray(learner.tree(after.params)["params"]["mixer"]["select_weight"]) - before).reshape(config.count_channels, 257)
    assert (moved[:, 1:4] > 0).all()  # every channel's offset for bytes 1, 2 and 3 learned
    assert not np.delete(moved, [1, 2, 3], axis=1).any()  # no other byte's


def test_each_stream_learns_its_own_mixer_weight_offsets():
    config = CHANNELS
    learner = Learner.create(config)
    state = learner.init()
    rng = np.random.default_rng(3)
    window, targets, counts = random_segment(config, rng, max_count=5)
    mask = np.zeros(targets.shape, bool)
    mask[2] = True  # only the third stream's positions are scored
    before = np.asarray(learner.tree(state.params)["params"]["mixer"]["stream_weight"])
    after, *_ = learner.train(state, window, targets, mask, counts)
    moved = np.abs(np.asarray(learner.tree(after.params)["params"]["mixer"]["stream_weight"]) - before)
    moved = moved.reshape(config.count_channels, config.streams)
    assert (moved[:, 2] > 0).all()  # every channel's offset for that stream learned
    assert not np.delete(moved, 2, axis=1).any()  # no other stream's


@pytest.mark.parametrize("config", [TINY.replace(count_states=0), TINY, CALIBRATED], ids=["0", "1", "2"])
def test_counts_round_trip_with_each_calibration(config):
    data = b"a rose is a rose is a rose; " * 30
    assert prequential.decompress(prequential.compress(data, config)) == data


def test_each_segment_trains_on_the_memory_states_the_step_before_returned():
    config = TINY.replace(n_layers=2, memory_cache=1)
    learner = Learner.create(config)
    train = learner.train
    seen = []  # (memory states given, memory states returned) per training step

    def spy(state, window, *rest):
        out = train(state, window, *rest)
        seen.append((np.asarray(window[1]), np.asarray(out[3])))
        return out

    learner.compiled["train"] = spy
    data = np.frombuffer(SAMPLE[:2000], np.uint8)
    train_pass(learner, Layout(len(data), config.streams, config.segment), ArrayStore(data))
    assert len(seen) > 2 and not seen[0][0].any()  # a pass starts from zero states
    assert seen[1][0].any()
    for (_, returned), (given, _) in itertools.pairwise(seen):
        assert np.array_equal(given, returned)


def test_only_exact_programs_compile_with_int8_dot_kernels_and_steps_without_tree_reductions():
    # Native floats depend on XLA's passes and kernels, so native programs must compile as they
    # always have (or their files stop decoding); integers do not, so exact ones take YNNPACK's
    # int8 dots, and an exact step drops the tree reduction pass, for speed.
    def options(numerics: str, step: bool) -> dict:
        return Learner.create(TINY.replace(numerics=numerics))._compiler_options(step).get("compiler_options", {})

    assert options("native", step=True) == options("native", step=False) == {}
    # Only XLA's CPU compiler has these options (and was measured faster with them); the int8
    # kernels only where intmath takes int8 dots (x86-64).
    int8_dots = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"} if intmath.int8_dots() else {}
    if jax.default_backend() == "cpu":
        assert options("exact", step=False) == int8_dots
        assert options("exact", step=True) == {**int8_dots, "xla_disable_hlo_passes": "tree_reduction_rewriter"}
    else:
        assert options("exact", step=True) == {}


def test_an_evicted_learner_frees_its_programs_without_the_garbage_collector():
    # Compiled programs hold memory mappings, of which a process has a limited number; a sweep
    # over configs must not keep every evicted learner's programs until a cyclic collection.
    gc.disable()
    try:
        first = learner_for(TINY.replace(seed=7000))
        program = weakref.ref(first.init)
        first = None
        for seed in range(7001, 7001 + learner_module._MAX_LEARNERS):
            assert learner_for(TINY.replace(seed=seed)).init is not None  # a jitted function, kept by its learner
        assert program() is None
    finally:
        gc.enable()
    # The most recently used stay: the same learner again, its programs kept.
    last = learner_for(TINY.replace(seed=7000 + learner_module._MAX_LEARNERS))
    assert learner_for(TINY.replace(seed=7000 + learner_module._MAX_LEARNERS)) is last and "init" in last.compiled
