"""Exact numerics: every primitive against its float counterpart (quality), and the properties
that make files portable (the teacher-forced and step-wise scores are the same integers;
measure equals compress bit for bit)."""

from __future__ import annotations

import decimal
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import CALIBRATED, CHANNELS, SAMPLE, TINY, random_segment

import prequential
from prequential import api
from prequential import intmath as im
from prequential.counts import CountInputs
from prequential.errors import DesyncError
from prequential.learner import Learner, learner_for
from prequential.ops import Exact, Native, normal
from prequential.optimizer import exact_adam, learning_rate

RNG = np.random.default_rng(20261201)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def grads(ops_fn, *args):
    """The gradient of a fixed random projection of ops_fn(*args) with respect to every argument."""
    out_shape = jax.eval_shape(ops_fn, *args).shape
    weights = jnp.asarray(np.random.default_rng(1).normal(size=out_shape), jnp.float32)
    return jax.grad(lambda *a: jnp.sum(ops_fn(*a) * weights), argnums=tuple(range(len(args))))(*args)


def in_float64(fn, *args):
    """fn(*args), and with `grads` its gradients, computed in float64 (JAX's 64-bit mode for this
    call only): the reference each exact primitive is held to."""
    with jax.enable_x64(True):
        wide = [jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a for a in args]
        return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), fn(*wide))


def normal_array(*shape, scale=1.0):
    return jnp.asarray(RNG.normal(size=shape) * scale, jnp.float32)


# --- the integer kernels -----------------------------------------------------------------------


def test_log2_and_exp2_are_within_2_to_the_minus_15_of_float64():
    x = np.concatenate([RNG.integers(1, 2**31 - 1, 20000), 2 ** np.arange(31), np.arange(1, 2000)]).astype(np.int64)
    log2 = np.asarray(im.log2_fixed(jnp.asarray(x, jnp.int32))) / 2**im.LOG_FRAC
    assert np.abs(log2 - np.log2(x)).max() < 2**-15
    t = RNG.integers(-60 * 2**16, 60 * 2**16, 20000)
    got = np.asarray(im.exp2_carrier(jnp.asarray(t, jnp.int32)), np.float64)
    want = 2.0 ** (t / 2**16)
    assert (np.abs(got - want) / want).max() < 2**-15
    a, b = RNG.integers(-30 * 2**16, 30 * 2**16, (2, 20000))
    gauss = np.asarray(im.log2_add(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))) / 2**16
    assert np.abs(gauss - np.logaddexp2(a / 2**16, b / 2**16)).max() < 2**-15


def test_polynomial_coefficients_are_solved_exactly():
    # Exact rational arithmetic: the same integers however often, and on any machine.
    assert im._chebyshev_fit("exp2", 5) == im._chebyshev_fit.__wrapped__("exp2", 5)
    assert im._chebyshev_fit("exp2", 5)[0] == im.fixed(decimal.Decimal(2).ln(), im.POLY_FRAC)  # (2**x - 1) / x at 0 is ln 2, to rounding


@pytest.mark.parametrize(("bits_a", "bits_b", "length"), [(8, 8, 300), (16, 8, 700), (16, 16, 100), (8, 8, 3000)])
def test_integer_dots_are_exact(bits_a, bits_b, length):
    a = RNG.integers(-im.qmax(bits_a), im.qmax(bits_a) + 1, (40, length))
    b = RNG.integers(-im.qmax(bits_b), im.qmax(bits_b) + 1, (length, 30))
    got = im.int_dot(jnp.asarray(a, jnp.int32), bits_a, jnp.asarray(b, jnp.int32), bits_b, (((1,), (0,)), ((), ())), drop_low_low=False)
    want = a @ b
    # Limb products are exact; only their float32 sum rounds (once per limb pair).
    assert np.abs(np.asarray(got, np.float64) - want).max() <= np.abs(want).max() * 2**-22


_LAYOUTS = {"mk,kn": (((1,), (0,)), ((), ())), "mk,nk": (((1,), (1,)), ((), ())), "km,kn": (((0,), (0,)), ((), ()))}


@pytest.mark.parametrize("dims", _LAYOUTS.values(), ids=_LAYOUTS.keys())
@pytest.mark.parametrize("length", [200, 2100])
def test_8_bit_dots_run_as_int8_dots_with_the_float_paths_integers(dims, length):
    (ca, cb), _ = dims
    a = RNG.integers(-127, 128, (length, 24) if ca == (0,) else (24, length))
    b = RNG.integers(-127, 128, (length, 20) if cb == (0,) else (20, length))
    want = np.einsum("ij,jk->ik" if ca == (1,) else "ji,jk->ik", a, b if cb == (0,) else b.T)
    as_int8 = im._exact_dot(jnp.asarray(a, jnp.int8), jnp.asarray(b, jnp.int8), dims)
    as_float = im._exact_dot(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), dims)
    assert np.array_equal(np.asarray(as_int8), np.asarray(as_float))
    assert np.array_equal(np.asarray(as_int8, np.float64), want.astype(np.float32))  # one rounding, past 2**24
    # On x86-64 a layer's product takes the int8 path: an int8 dot with int32 sums, not float limbs.
    if not im.int8_dots():
        return
    jaxpr = jax.make_jaxpr(lambda x, y: im.int_dot(x, 8, y, 8, dims))(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))
    (dot,) = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert [v.aval.dtype for v in dot.invars] == [jnp.int8, jnp.int8] and dot.outvars[0].aval.dtype == jnp.int32


def test_a_distribution_dot_is_one_exact_dot():
    # Attention probabilities (14 bits, summing to about 2**14 per row) times 8-bit values: one
    # float32 dot gives the exact integers, the same as the limb-wise int_dot.
    p = RNG.dirichlet(np.full(64, 0.3), (8, 32)) * 2**14
    a = jnp.asarray(np.floor(p), jnp.int32)
    b = RNG.integers(-im.qmax(8), im.qmax(8) + 1, (8, 64, 32))
    dims = (((2,), (1,)), ((0,), (0,)))
    got = np.asarray(im.distribution_dot(a, 15, jnp.asarray(b, jnp.int32), 8, dims), np.float64)
    want = np.einsum("bqk,bkd->bqd", np.asarray(a, np.int64), b)
    assert np.array_equal(got, want)
    assert np.array_equal(got, np.asarray(im.int_dot(a, 16, jnp.asarray(b, jnp.int32), 8, dims), np.float64))
    with pytest.raises(ValueError, match="overflows"):
        im.distribution_dot(a, 18, jnp.asarray(b, jnp.int32), 8, dims)


def test_materialize_returns_the_same_bits():
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3e-39, 3.4e38, 1.0], np.float32)
    x = np.concatenate([special, RNG.normal(size=1000).astype(np.float32)]).reshape(4, -1)
    got = np.asarray(im.materialize(jnp.asarray(x)))
    assert got.dtype == np.float32 and np.array_equal(got.view(np.int32), x.view(np.int32))
    ints = RNG.integers(-(2**31), 2**31 - 1, (3, 50), dtype=np.int32)
    assert np.array_equal(np.asarray(im.materialize(jnp.asarray(ints))), ints)


def test_quantize_keeps_each_row_to_its_bits():
    x = normal_array(50, 64) * jnp.exp(normal_array(50, 1) * 4)
    for bits in (8, 12, 16):
        q, e = im.quantize(x, bits, -1)
        assert np.abs(np.asarray(q)).max() <= im.qmax(bits)
        back = np.asarray(im.scale(q, e), np.float64)
        row_max = np.abs(np.asarray(x)).max(-1, keepdims=True)
        assert (np.abs(back - np.asarray(x)) / row_max).max() <= 2 ** -(bits - 2)


def test_stochastic_rounding_is_unbiased_even_far_below_the_largest_element():
    # One large element fixes the scale; the others lie 2**-4 to 2**-40 of it, where rounding to
    # nearest gives 0 for most of them. Many copies (different indices, so different dither)
    # must average to the value.
    small = 2.0 ** -np.array([4.3, 9.7, 12.1, 20.5, 33.2, 40.0])
    row = np.concatenate([[1.0], small, -small]).astype(np.float32)
    x = jnp.asarray(np.tile(row, (20000, 1)))
    q, e = im.quantize_stochastic(x, 8, -1)
    assert np.abs(np.asarray(q)).max() <= im.qmax(8)
    mean = np.asarray(im.scale(q, e), np.float64).mean(0)
    spread = 2.0 ** int(e[0, 0]) / np.sqrt(20000)  # the standard error of a 0/1 step
    assert np.all(np.abs(mean - row) <= 4 * spread * np.sqrt(np.minimum(np.abs(row) / 2.0 ** int(e[0, 0]), 1)) + 1e-12)
    assert np.array_equal(np.asarray(im.quantize(x, 8, -1)[0])[0, 3:7], [0, 0, 0, 0])  # nearest loses them
    again = im.quantize_stochastic(x, 8, -1)[0]
    assert np.array_equal(np.asarray(q), np.asarray(again))  # a hash, not a random state


def test_carriers_stay_multiples_of_the_smallest_power():
    q = jnp.asarray([3, -5, 7, 1], jnp.int32)
    assert np.array_equal(np.asarray(im.scale(q, jnp.asarray([-101, -100, 0, 5]))), [0.0, -5 * 2.0**-100, 7.0, 32.0])


# --- the primitives against float64 references ---------------------------------------------------


def test_dense_matches_float():
    x, w, b = normal_array(4, 16, 32), normal_array(32, 48, scale=0.2), normal_array(48, scale=0.1)
    assert rel_err(Exact.dense(x, w, b), in_float64(Native.dense, x, w, b)) < 0.02
    for got, want in zip(grads(Exact.dense, x, w, b), in_float64(lambda *a: grads(Native.dense, *a), x, w, b), strict=True):
        assert rel_err(got, want) < 0.03


def test_layer_norm_matches_float():
    x, g, b = normal_array(4, 16, 32) * 3 + 1, 1 + normal_array(32, scale=0.2), normal_array(32, scale=0.1)
    assert rel_err(Exact.layer_norm(x, g, b), in_float64(Native.layer_norm, x, g, b)) < 1e-3
    for got, want in zip(grads(Exact.layer_norm, x, g, b), in_float64(lambda *a: grads(Native.layer_norm, *a), x, g, b), strict=True):
        assert rel_err(got, want) < 2e-3


def test_attention_matches_float():
    q, k, v = normal_array(2, 2, 12, 16), normal_array(2, 2, 12, 16), normal_array(2, 2, 12, 16)
    mask = jnp.arange(12)[:, None] >= jnp.arange(12)[None, :]
    assert rel_err(Exact.attention(q, k, v, mask), in_float64(Native.attention, q, k, v, mask)) < 0.03
    exact = grads(lambda *a: Exact.attention(*a, mask), q, k, v)
    native = in_float64(lambda *a: grads(lambda *b: Native.attention(*b, mask), *a), q, k, v)
    for got, want in zip(exact, native, strict=True):
        assert rel_err(got, want) < 0.05


def test_cached_attention_is_the_same_integers_as_the_batched_one():
    q, k, v = normal_array(2, 2, 12, 16), normal_array(2, 2, 12, 16), normal_array(2, 2, 12, 16)
    batched = Exact.attention(q, k, v, jnp.arange(12)[:, None] >= jnp.arange(12)[None, :])
    keys, values = Exact.cache_entry(k), Exact.cache_entry(v)
    for i in range(12):
        step = Exact.attention_cached(q[:, :, i : i + 1], keys, values, (jnp.arange(12) <= i)[None, :])
        assert np.array_equal(np.asarray(step[:, :, 0]), np.asarray(batched[:, :, i]))


def test_bits_and_weights_match_the_float_softmax():
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(6, 20, 256)) * 2, jnp.float32)
    p = np.asarray(jax.nn.softmax(logits), np.float64)
    targets = jnp.asarray([[rng.choice(256, p=row / row.sum()) for row in rows] for rows in p], jnp.int32)  # mostly likely ones
    bits, weights = Exact.bits_and_weights(logits, targets)
    log_p = in_float64(jax.nn.log_softmax, logits)
    want_bits = -np.take_along_axis(log_p, np.asarray(targets)[..., None], -1)[..., 0] / np.log(2)
    want_p = np.exp(log_p)
    # The same where the weight is not too small to be rounded to an integer (22 bits for the top one).
    likely = np.asarray(want_bits) < 10
    assert likely.sum() > 60 and np.abs(np.asarray(bits) - np.asarray(want_bits))[likely].max() < 1e-3
    p = np.asarray(weights, np.float64) / np.asarray(weights, np.float64).sum(-1, keepdims=True)
    assert np.abs(p - np.asarray(want_p)).max() < 1e-4
    assert np.asarray(weights).min() >= 1  # every byte stays codable
    got = grads(lambda z: Exact.bits_and_weights(z, targets)[0], logits)[0]
    float_bits = lambda z: -jnp.take_along_axis(jax.nn.log_softmax(z), targets[..., None], -1)[..., 0] / np.log(2)  # noqa: E731
    assert rel_err(got, in_float64(lambda z: grads(float_bits, z), logits)[0]) < 1e-3


def test_mix_and_log_counts_match_float():
    counts = jnp.asarray(RNG.integers(0, 200, (3, 4, 5, 256)), jnp.int32)
    got, want = Exact.count_log(counts, 0.025, 260), np.log1p(np.asarray(counts, np.float64) / 0.025)
    assert np.abs(np.asarray(got) - want).max() <= 2**-11
    w, log_p = normal_array(3, 4, 5), jnp.asarray(want, jnp.float32)
    assert rel_err(Exact.mix(w, log_p), in_float64(Native.mix, w, log_p)) < 3e-4
    reference = in_float64(lambda a, b: grads(lambda c: Native.mix(c, b), a), w, log_p)[0]
    assert rel_err(grads(lambda a: Exact.mix(a, log_p), w)[0], reference) < 3e-4
    seen = jnp.asarray(RNG.integers(0, 60000, (3, 4, 5)), jnp.int32)
    assert np.abs(np.asarray(Exact.log_count(seen)) - np.log1p(np.asarray(seen))).max() < 1e-3


def test_learned_log_counts_match_float_and_are_zero_where_unseen():
    # A log alpha per channel (broadcast over the bytes), from the small alphas a calibration
    # learns (e**-9) to large ones: ln(1 + n / alpha) and its gradient as in float64.
    counts = jnp.asarray(RNG.integers(0, 4, (3, 4, 5, 256)) * RNG.integers(0, 60, (3, 4, 5, 256)), jnp.int32)
    log_alpha = jnp.asarray(RNG.uniform(-9, 3, (3, 4, 5, 1)), jnp.float32)
    got = np.asarray(Exact.count_log_learned(counts, log_alpha))
    want = in_float64(Native.count_log_learned, counts, log_alpha)
    assert np.abs(got - want).max() < 2**-10
    assert np.all(got[np.asarray(counts) == 0] == 0)  # no rounding error times ln(alpha) in the logits
    got_grad = grads(lambda a: Exact.count_log_learned(counts, a), log_alpha)[0]
    assert rel_err(got_grad, in_float64(lambda a: grads(lambda b: Native.count_log_learned(counts, b), a), log_alpha)[0]) < 1e-3


def test_mix_with_offsets_on_the_largest_counts_matches_float():
    counts = RNG.integers(0, 5, (3, 4, 5, 256))
    largest = jnp.asarray((counts == counts.max(-1, keepdims=True)) & (counts > 0))  # ties: several per channel
    log_p, w, offsets = jnp.asarray(np.log1p(counts / 0.025), jnp.float32), normal_array(3, 4, 5), normal_array(3, 4, 5)
    assert rel_err(Exact.mix_offsets(w, log_p, largest, offsets), in_float64(Native.mix_offsets, w, log_p, largest, offsets)) < 3e-4
    got = grads(lambda a, o: Exact.mix_offsets(a, log_p, largest, o), w, offsets)
    want = in_float64(lambda a, o: grads(lambda b, c: Native.mix_offsets(b, log_p, largest, c), a, o), w, offsets)
    assert rel_err(got[0], want[0]) < 3e-4 and rel_err(got[1], want[1]) < 3e-4


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs inside its equations (calls, custom rules)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else [value]:
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


@pytest.mark.parametrize("count_states", [0, 1, 2])
def test_the_exact_training_step_sums_no_floats(count_states):
    """A float sum of more than two terms rounds by its order, which depends on the machine: none
    may reach what the step returns (jax.grad sums the cotangent of a broadcast in float, so a
    parameter broadcast outside an exact primitive would show up here). The exception is a sum of
    integers converted to float just before (intmath.small_sum, the count mixer's sums), which
    their bounds keep exact in any order."""
    from jax._src.interpreters import partial_eval as pe

    config = TINY.replace(numerics="exact", count_states=count_states)
    learner = Learner.create(config)
    c = config
    args = (
        learner.state_shape(),
        jax.ShapeDtypeStruct((c.streams, c.window), jnp.int32),
        jax.ShapeDtypeStruct((c.streams, c.segment), jnp.int32),
        jax.ShapeDtypeStruct((c.streams, c.segment), jnp.bool_),
        CountInputs(
            jax.ShapeDtypeStruct((c.streams, c.segment, c.count_channels, c.vocab_size), jnp.uint16),
            jax.ShapeDtypeStruct((c.streams, c.segment, c.count_channels, 3), jnp.int32),
        ),
    )
    closed = jax.make_jaxpr(learner._train)(*args)
    used = pe.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))[0]  # drops the loss's value, which nothing reads
    equations = list(_equations(used))
    from_integers = {
        id(out)
        for eqn in equations
        if eqn.primitive.name == "convert_element_type" and not jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)
        for out in eqn.outvars
    }
    sums = [
        eqn
        for eqn in equations
        if eqn.primitive.name in ("reduce_sum", "cumsum")
        and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)
        and any(eqn.invars[0].aval.shape[a] > 2 for a in eqn.params.get("axes", ()))
    ]
    float_sums = [
        (eqn.primitive.name, eqn.invars[0].aval.shape, eqn.params.get("axes")) for eqn in sums if id(eqn.invars[0]) not in from_integers
    ]
    assert not float_sums
    assert len(sums) > len(float_sums)  # the integer sums are seen, so the check above is not vacuous


def test_exact_adam_follows_optax_adam():
    config = TINY.replace(learning_rate=1e-3, warmup_segments=3, lr_decay_tokens=100)
    params = {"w": normal_array(200), "b": normal_array(3, 7)}
    ours = exact_adam(config)
    adam = optax.scale_by_adam(b1=0.0, b2=config.adam_b2, eps=config.adam_eps)
    theirs = optax.chain(adam, optax.scale_by_learning_rate(learning_rate(config)))
    s1, s2 = ours.init(params), theirs.init(params)
    for step in range(6):
        g = {"w": normal_array(200, scale=10.0**-step), "b": normal_array(3, 7, scale=0.1)}
        u1, s1 = ours.update(g, s1)
        u2, s2 = theirs.update(g, s2)
        for name in params:
            assert rel_err(u1[name], u2[name]) < 2e-3, (step, name)


def test_initial_values_have_the_asked_spread_and_no_float_randomness():
    values = np.asarray(normal(0.02)(jax.random.PRNGKey(3), (200, 100)))
    assert abs(values.std() - 0.02) < 0.001 and abs(values.mean()) < 0.001
    assert np.array_equal(values, np.asarray(normal(0.02)(jax.random.PRNGKey(3), (200, 100))))


# --- the learner: one set of integers, whichever way it is computed ------------------------------


@pytest.mark.parametrize(
    "config",
    [TINY.replace(count_states=0), TINY, CALIBRATED, CHANNELS],
    ids=["states0", "states1", "states2", "default-channels"],
)
def test_teacher_forced_weights_are_the_decoders_step_wise_weights(config):
    learner = Learner.create(config)
    state = learner.init()
    rng = np.random.default_rng(config.count_states)
    if config.count_select or config.count_stream_rate:  # offsets start at zero: train once, so that they differ
        window, targets, counts = random_segment(config, rng)
        state, *_ = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
    window, targets, counts = random_segment(config, rng)
    cache = learner.prefill(learner.prepare(state), window[:, : config.memory])
    stepped = []
    for i in range(config.segment):
        weights, cache = learner.step(learner.prepare(state), cache, window[:, config.memory + i], config.memory + i, counts.position(i))
        stepped.append(np.asarray(weights))
    _, _, forced, _ = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
    assert np.array_equal(np.stack(stepped, 1), np.asarray(forced))


def test_with_cached_memory_states_teacher_forced_weights_are_the_step_wise_ones():
    config = TINY.replace(n_layers=2, memory_cache=1)
    learner = Learner.create(config)
    state = learner.init()
    rng = np.random.default_rng(7)
    windows = rng.integers(0, 257, (2, config.streams, config.window), dtype=np.int32)
    targets = rng.integers(0, 256, (config.streams, config.segment), dtype=np.int32)
    counts = CountInputs.of(rng.integers(0, 30, (config.streams, config.segment, config.count_channels, 256), dtype=np.uint16))
    mask = np.ones(targets.shape, bool)
    # A first segment leaves memory states (not zeros) for the second, which is then scored both ways.
    state, _, _, memory = learner.train(state, (windows[0], learner.initial_memory()), targets, mask, counts)
    assert np.abs(np.asarray(memory)).max() > 0
    variables = learner.prepare(state)
    cache = learner.prefill(variables, (windows[1][:, : config.memory], memory))
    stepped = []
    for i in range(config.segment):
        weights, cache = learner.step(variables, cache, windows[1][:, config.memory + i], config.memory + i, counts.position(i))
        stepped.append(np.asarray(weights))
    _, _, forced, next_memory = learner.train(state, (windows[1], memory), targets, mask, counts)
    assert np.array_equal(np.stack(stepped, 1), np.asarray(forced))
    assert next_memory.shape == memory.shape and not np.array_equal(np.asarray(next_memory), np.asarray(memory))


@pytest.mark.parametrize("config", [TINY, TINY.replace(n_layers=2, memory_cache=1)], ids=["recomputed", "cached"])
def test_measure_equals_compress_bit_for_bit(config):
    data = SAMPLE[:5000]
    measured = prequential.measure(data, config, baselines=False)
    report = api.encode(data, io.BytesIO(), config)
    assert measured.data_bits == report.ideal_bits
    # The range coder's output is that sum plus its flush (one block), up to its own rounding of
    # the weights, which can make a particular text a fraction of a bit cheaper (test_estimators).
    assert -1e-3 * report.ideal_bits <= report.overhead_bits <= 64


def test_a_decoder_that_scores_other_weights_is_stopped_at_once(monkeypatch):
    data = b"abcabcabd " * 200
    blob = prequential.compress(data, TINY)
    learner = learner_for(TINY)
    step = learner.step

    def skewed(params, cache, tokens, pos, counts):  # off at one position only (not the fingerprint's)
        weights, cache = step(params, cache, tokens, pos, counts)
        return (weights.at[:, 0].add(1.0) if pos == TINY.memory + 3 else weights), cache

    monkeypatch.setitem(learner.compiled, "step", skewed)  # the compiled functions are kept there
    with pytest.raises(DesyncError, match="step-wise and teacher-forced"):
        prequential.decompress(blob)


@pytest.mark.parametrize(("shape", "axis"), [((300, 7), 0), ((5, 3000), -1), ((4, 700, 3), (0, 1)), ((2, 33, 40), (1, 2))])
def test_integer_sums_are_exact_in_float_chunks(shape, axis):
    """small_sum sums chunks of up to 512 values as float32 (exact: below 2**24) and the chunks
    as int32; isum splits values of up to 30 bits into two such sums."""
    small = RNG.integers(1 << 14, 1 << 15, shape) * RNG.choice([1, 1, 1, -1], shape)  # long sums pass 2**24
    assert np.array_equal(np.asarray(im.small_sum(jnp.asarray(small, jnp.int32), axis)), small.sum(axis))
    assert np.array_equal(np.asarray(im.small_sum(jnp.asarray(small, jnp.int32), axis, keepdims=True)), small.sum(axis, keepdims=True))
    wide = RNG.integers(-(1 << 30) + 1, 1 << 30, shape)
    assert np.array_equal(np.asarray(im.isum(jnp.asarray(wide, jnp.int32), axis)), wide.sum(axis).astype(np.float32))


def test_the_largest_exponent_is_that_of_the_largest_magnitude():
    x = (np.asarray(normal_array(40, 30)) * np.exp2(RNG.integers(-30, 30, (40, 1)))).astype(np.float32)
    x[3] = 0.0
    x[5, :] = -x[5, :]
    biased = (x.view(np.int32) >> 23) & 0xFF
    for axis in (0, -1, None):
        assert np.array_equal(np.asarray(im._top_exponent(jnp.asarray(x), axis)), biased.max(axis=axis, keepdims=True))
