"""The learner's schedule and the learned calibration of counts (learner.py, model.py)."""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
from conftest import CALIBRATED, CHANNELS, SAMPLE, TINY

import prequential
from prequential.counts import CountInputs
from prequential.learner import Learner
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
    window = rng.integers(0, 256, (config.streams, config.window), dtype=np.int32)
    targets = rng.integers(0, 256, (config.streams, config.segment), dtype=np.int32)
    counts = CountInputs.of(rng.integers(0, 5, (config.streams, config.segment, config.count_channels, 256), dtype=np.uint16))
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
    window = rng.integers(0, 256, (config.streams, config.window), dtype=np.int32)
    window[:, -config.segment :] = rng.integers(1, 4, (config.streams, config.segment))  # the scored positions' bytes: 1, 2, 3
    targets = rng.integers(0, 256, (config.streams, config.segment), dtype=np.int32)
    counts = CountInputs.of(rng.integers(0, 5, (config.streams, config.segment, config.count_channels, 256), dtype=np.uint16))
    before = np.asarray(learner.tree(state.params)["params"]["mixer"]["select_weight"])
    after, *_ = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
    moved = np.abs(np.asarray(learner.tree(after.params)["params"]["mixer"]["select_weight"]) - before).reshape(config.count_channels, 257)
    assert (moved[:, 1:4] > 0).all()  # every channel's offset for bytes 1, 2 and 3 learned
    assert not np.delete(moved, [1, 2, 3], axis=1).any()  # no other byte's


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


def test_only_exact_steps_compile_without_the_tree_reduction_rewriter():
    # Native floats depend on XLA's passes, so a native step must compile as it always has (or its
    # files stop decoding); integer sums do not, so an exact step drops the pass for speed.
    def disabled(numerics: str) -> str:
        options = Learner.create(TINY.replace(numerics=numerics))._step_options()
        return options.get("compiler_options", {}).get("xla_disable_hlo_passes", "")

    assert disabled("native") == ""
    # Only XLA's CPU compiler was measured faster without it; elsewhere exact steps keep it too.
    assert disabled("exact") == ("tree_reduction_rewriter" if jax.default_backend() == "cpu" else "")
