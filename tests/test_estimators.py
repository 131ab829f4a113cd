"""The MDL estimators (config.ESTIMATORS): each is a real code. What `measure` reports is what
`compress` writes, the file decodes exactly, and each option changes what it says it changes."""

from __future__ import annotations

import io
import math

import jax
import numpy as np
import pytest
from conftest import SAMPLE, TINY, one_line_error, random_segment, run_cli

import prequential
from prequential import api
from prequential.config import ESTIMATORS, NO_COUNTS, estimator
from prequential.errors import ConfigError
from prequential.learner import TEMPERATURES, learner_for
from prequential.measure import measure
from prequential.replay import ReplayBuffer, block_bounds, coder_blocks, passes

DATA = SAMPLE[:1500]
# The tiny model with the estimators' settings scaled to a short input.
SMALL = {
    "online": TINY,
    "blocks": estimator("blocks", TINY),
    "blocks-continue": estimator("blocks-continue", TINY).replace(epochs=2),
    "replay": TINY.replace(replay_buffer=4, replay_steps=2, updates=2),
    "mir": estimator("mir", TINY).replace(replay_buffer=4, ema_decay=0.9),  # replay, EMA and calibration together
    # With cached memory states: a frozen model scores (and hands them on), replayed segments keep theirs.
    "blocks-cached": estimator("blocks", TINY).replace(n_layers=2, memory_cache=1),
    "replay-cached": TINY.replace(replay_buffer=4, replay_steps=2, updates=2, n_layers=2, memory_cache=1),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_measure_is_what_compress_writes_and_the_file_decodes(name):
    config = SMALL[name]
    measured = measure(DATA, config, baselines=False)
    blob = prequential.compress(DATA, config)
    header, report = api.read_info(io.BytesIO(blob))
    assert header.config == config
    assert report.ideal_bits == pytest.approx(measured.data_bits, rel=1e-12)
    if config.block_wise:  # the file records each block's bits, and so does measure
        assert report.block_bits == pytest.approx(list(measured.segment_bits), rel=1e-12)
        assert "block 1" in report.format()
    assert prequential.decompress(blob) == DATA
    # Each coder block costs its ideal up to its last 32-bit word, and the coder's own rounding of
    # the weights, which can make a particular text a fraction of a bit cheaper than the ideal.
    n_coder_blocks = len(list(coder_blocks(config, len(DATA))))
    assert abs(8 * report.coded_bytes - report.ideal_bits) < 32 * n_coder_blocks + 1e-3 * report.ideal_bits


def test_every_named_estimator_is_a_valid_config():
    for name in ESTIMATORS:
        assert estimator(name, TINY).validate()
    with pytest.raises(ConfigError, match="unknown estimator"):
        estimator("variational", TINY)


def test_each_option_changes_the_code():
    """An option that is silently ignored would give the online code's bits. (Native numerics:
    the options do the same there, and compile faster.)"""
    base = TINY.replace(numerics="native")
    online = measure(DATA, base, baselines=False).data_bits
    changed = {"replay_steps": 1, "updates": 2, "ema_decay": 0.9, "calibrate": 1}
    for field, value in changed.items():
        config = base.replace(**{field: value, **({"replay_buffer": 4} if field == "replay_steps" else {})})
        assert measure(DATA, config, baselines=False).data_bits != online, field


# --- the block-wise code ---------------------------------------------------------------------------


def test_block_bounds_follow_the_fractions_and_drop_empty_blocks():
    config = TINY.replace(blocks=(0.001, 0.1, 0.5))
    assert block_bounds(config, 1000) == [1, 100, 500, 1000]
    assert block_bounds(config, 10) == [1, 5, 10]  # 0.001 * 10 rounds to 0: that block is empty
    assert block_bounds(TINY.replace(block_tokens=(100, 300, 5000)), 1000) == [100, 300, 1000]
    kinds = [p.kind for p in passes(config, 1000)]
    assert kinds == ["uniform", "frozen", "frozen", "frozen"]
    assert [p.kind for p in passes(TINY, 1000)] == ["online"]


def test_block_code_arithmetic_first_block_uniform_then_the_sum():
    config = TINY.replace(block_tokens=(200, 600))
    result = measure(DATA, config, baselines=False)
    assert list(result.segment_tokens) == [200, 400, len(DATA) - 600]
    assert result.segment_bits[0] == 200 * math.log2(256)  # the uniform code, exactly
    assert result.data_bits == pytest.approx(result.segment_bits.sum(), rel=1e-15)
    assert all(0 < bits < 8 * n for bits, n in zip(result.segment_bits[1:], result.segment_tokens[1:], strict=True))


def test_a_seeded_block_depends_only_on_the_blocks_before_it():
    """From the seed, block k's code is a model trained on blocks 1..k-1 alone: the same
    bits whatever follows; continued, the same holds, but the bits differ from the seeded ones."""
    seeded = TINY.replace(block_tokens=(300, 700))
    short = measure(DATA[:1000], seeded, baselines=False).segment_bits
    long = measure(DATA, seeded, baselines=False).segment_bits
    assert np.array_equal(short[:2], long[:2])
    continued = measure(DATA, seeded.replace(block_init="continue"), baselines=False).segment_bits
    assert continued[1] == long[1] and continued[2] != long[2]  # block 2's model is the first trained: the same


def test_more_epochs_train_more_and_early_stop_can_end_them():
    config = TINY.replace(block_tokens=(500,))
    one = measure(DATA, config, baselines=False).segment_bits[1]
    three = measure(DATA, config.replace(epochs=3), baselines=False).segment_bits[1]
    assert three != one
    stopped = measure(DATA, config.replace(epochs=3, early_stop=0.99), baselines=False).segment_bits[1]
    assert stopped == measure(DATA, config.replace(epochs=2), baselines=False).segment_bits[1]  # the 2nd pass gains < 99 %


def test_block_file_lists_each_blocks_bits():
    config = TINY.replace(block_tokens=(300,))
    result = measure(DATA, config, baselines=False)
    assert "block 1" in result.format() and "uniform" in result.format() and "block 2" in result.format()


# --- replay, EMA and calibration -------------------------------------------------------------------


def test_replay_draws_are_the_same_on_both_sides_and_follow_the_seed():
    def draws(seed):
        buffer = ReplayBuffer(5)
        for i in range(8):
            buffer.add((i,))
        return [[e[0] for e in buffer.draw(seed, segment, 3)] for segment in range(20)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    assert {x for row in draws(0) for x in row} <= {3, 4, 5, 6, 7}  # only the last 5 segments are kept


def test_teacher_forced_weights_equal_step_wise_ones_with_ema_and_calibration():
    config = SMALL["mir"]
    learner = learner_for(config)  # shares the round trip's compiled functions
    state = learner.init()
    rng = np.random.default_rng(5)
    window, targets, counts = random_segment(config, rng)
    mask = np.ones(targets.shape, bool)
    for _ in range(3):  # the EMA and the temperature move away from their start
        state = learner.train(state, window, targets, mask, counts)[0]
    assert int(np.argmin(np.asarray(state.calibration))) != 0 or np.asarray(state.calibration).any()
    cache = learner.prefill(learner.prepare(state), window[:, : config.memory])
    stepped = []
    for i in range(config.segment):
        weights, cache = learner.step(learner.prepare(state), cache, window[:, config.memory + i], config.memory + i, counts.position(i))
        stepped.append(np.asarray(weights))
    scored = np.asarray(learner.score(state, window, targets, mask, counts)[1])
    _, _, forced, _ = learner.train(state, window, targets, mask, counts)
    assert np.array_equal(np.stack(stepped, 1), np.asarray(forced))
    assert np.array_equal(scored, np.asarray(forced))


def test_calibration_codes_with_the_temperature_that_cost_least():
    learner = learner_for(SMALL["mir"])  # the round trip's compiled functions
    logits = np.random.default_rng(1).normal(size=(TINY.streams, TINY.segment, 256)).astype(np.float32) * 4
    targets = np.zeros((TINY.streams, TINY.segment), np.int32)
    mask = np.ones(targets.shape, bool)
    costs = np.array([50, 40, 10, 90, 90, 90, 90, 90, 90], np.int32)
    bits, _, after = jax.jit(learner._calibrated)(logits, targets, mask, costs)
    expected = jax.jit(lambda z: learner.ops.bits_and_weights(learner.ops.times(z, TEMPERATURES[2]), targets)[0])(logits)
    assert np.array_equal(np.asarray(bits), np.asarray(expected))
    assert np.all(np.asarray(after) >= costs - (costs >> 8))  # every candidate's cost grew by its own bits


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"blocks": (0.5, 0.2)}, "'blocks' must be strictly increasing"),
        ({"blocks": (0.0, 1.0)}, r"'blocks' must hold fractions in \(0, 1\]"),
        ({"blocks": (0.5, 1.5)}, r"'blocks' must hold fractions in \(0, 1\]"),
        ({"block_tokens": (10, 10)}, "'block_tokens' must be strictly increasing"),
        ({"blocks": (0.5,), "block_tokens": (10,)}, "exclude each other"),
        ({"epochs": 0}, "'epochs'"),
        ({"block_init": "random"}, "'block_init'"),
        ({"blocks": (0.5,), "ema_decay": 0.9}, "'ema_decay' applies to the one-pass online code"),
        ({"replay_steps": 1}, "'replay_steps' needs 'replay_buffer'"),
    ],
)
def test_bad_estimator_fields_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        TINY.replace(**changes).validate()


def test_a_block_wise_code_refuses_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="checkpoints are for the one-pass online code"):
        api.encode(DATA, io.BytesIO(), SMALL["blocks"], checkpoint=str(tmp_path / "ckpt"))


def test_estimators_on_the_command_line(tmp_path):
    (tmp_path / "data").write_bytes(DATA)
    done = run_cli("compare", "data", "--presets", "tiny", "--estimators", "online,blocks", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    rows = {line.split()[0] for line in done.stdout.decode().splitlines()[1:] if line.strip()}
    assert {"online", "blocks"} <= rows
    done = run_cli("compress", "data", "--preset", "tiny", "--block-tokens", "300", "--epochs", "2", "-k", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert prequential.decompress((tmp_path / "data.pq").read_bytes()) == DATA
    assert api.read_info(io.BytesIO((tmp_path / "data.pq").read_bytes()))[0].config.epochs == 2
    assert "'blocks' must be strictly increasing" in one_line_error(run_cli("measure", "data", "--blocks", "0.5,0.2", cwd=tmp_path))
    assert "not a comma-separated list" in one_line_error(run_cli("measure", "data", "--blocks", "half", cwd=tmp_path))


def test_a_users_module_and_optimizer_take_the_estimators_too():
    import optax
    from user_models import Bigram

    config = TINY.replace(**NO_COUNTS, block_tokens=(400,), epochs=2)
    options = {"module": Bigram(), "optimizer": optax.adam(1e-1)}
    data = b"abracadabra " * 150  # a bigram model learns it: the file is coded, not stored
    measured = measure(data, config, baselines=False, **options)
    blob = prequential.compress(data, config, **options)
    # Native numerics: the coder's float32 weights step-wise against the teacher-forced bits.
    assert api.read_info(io.BytesIO(blob))[1].ideal_bits == pytest.approx(measured.data_bits, rel=1e-6)
    assert prequential.decompress(blob, **options) == data
    assert measured.segment_bits[0] == 400 * 8
