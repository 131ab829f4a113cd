"""The optimizer the decoder replays: Adam with optional per-element clipping, a linear warm-up
of the learning rate and its decay as 1 / sqrt(1 + tokens trained on / lr_decay_tokens).

Native numerics use optax's Adam. Exact numerics use `exact_adam`, the same update computed from
integers (intmath.py): the moment averages are carriers updated by integer products and single
adds; the bias corrections (powers of beta kept as 30-bit integers), the square root, the division
and the learning rate are fixed-point logarithms (22 fractional bits), and the step is the first
moment times a power of two. One difference from optax: the denominator is max(sqrt(nu), eps),
not sqrt(nu) + eps; the two differ only where gradients are as small as eps. Both optimizers are
optax GradientTransformations (init, update).
"""

from __future__ import annotations

import decimal
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from prequential import intmath as im
from prequential.config import Config

FRAC = 22  # fractional bits of the optimizer's fixed-point logarithms


def learning_rate(config: Config) -> optax.Schedule:
    """The rate at each update: a linear warm-up, then a decay as 1 / sqrt(1 + tokens trained on /
    lr_decay_tokens). Late updates refine what was learned; the decay gained 0.2 % on lcet10.txt."""

    def rate(update: jax.Array) -> jax.Array:
        warmup = config.warmup_segments
        warm = optax.linear_schedule(1 / warmup, 1.0, warmup)(update) if warmup else 1.0
        tokens = update * (config.streams * config.segment)
        decay = jnp.sqrt(1.0 + tokens / config.lr_decay_tokens) if config.lr_decay_tokens else 1.0
        return config.learning_rate * warm / decay

    return rate


def optimizer_from_config(config: Config) -> optax.GradientTransformation:
    """Adam (beta1 near 0 and beta2 near 1 suit online learning) with optional clipping."""
    if config.numerics == "exact":
        return exact_adam(config)
    clip = [optax.clip(config.grad_clip)] if config.grad_clip else []
    return optax.chain(
        *clip,
        optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
        optax.scale_by_learning_rate(learning_rate(config)),
    )


def _log2(value: float | int) -> int:
    return im.fixed(im.exact_log2(decimal.Decimal(repr(value))), FRAC)


def _log2_int(x: jax.Array) -> jax.Array:
    """log2 of int32 x >= 1 in FRAC fractional bits."""
    return im.log2_fixed(x) << (FRAC - im.LOG_FRAC)


def _times(x: jax.Array, factor: float) -> jax.Array:
    """x * factor elementwise, for a constant in [0, 1): a 16-bit by 12-bit integer product."""
    m = im.fixed(decimal.Decimal(repr(factor)), 24)
    shift = max(m.bit_length() - 12, 0)
    q, s = im.quantize(x, 16, ())
    return im.scale(q * (m >> shift), s + shift - 24)


def _average(mean: jax.Array, value: jax.Array, beta: float) -> jax.Array:
    """mean + (value - mean) * (1 - beta): an exponential moving average with no product that
    an FMA could round differently (the difference and the sum are single IEEE adds)."""
    return mean + _times(value - mean, 1 - beta)


def moving_average(average: Any, params: Any, decay: float) -> Any:
    """The exponential moving average of parameters, moved one update towards `params`: the
    same exact arithmetic as Adam's moments, array by array."""
    return jax.tree_util.tree_map(lambda mean, value: _average(mean, value, decay), average, params)


def _log_one_minus(power: jax.Array) -> jax.Array:
    """log2(1 - p) for p = power / 2**30 < 1: Adam's bias correction, with p = beta**t."""
    return (im.log2_fixed(jnp.maximum((1 << 30) - power, 1)) - (30 << im.LOG_FRAC)) << (FRAC - im.LOG_FRAC)


def _log_rate(config: Config, count: jax.Array) -> jax.Array:
    """log2 of learning_rate(config)(count) in FRAC fractional bits."""
    log_rate = jnp.int32(_log2(config.learning_rate))
    known = jnp.maximum(count, 1)
    if config.warmup_segments > 1:
        w = config.warmup_segments
        start = -_log2(w)  # the warm-up goes from 1 / w to 1 in w updates
        rising = im.log2_add(start, _log2(w - 1) + _log2_int(jnp.minimum(known, w)) - 2 * _log2(w), FRAC)
        log_rate += jnp.where(count >= w, 0, jnp.where(count > 0, rising, start))
    if config.lr_decay_tokens:
        ratio = _log2_int(known) + _log2(config.streams * config.segment) - _log2(config.lr_decay_tokens)
        log_rate -= jnp.where(count > 0, im.log2_add(0, ratio, FRAC), 0) >> 1
    return log_rate


class ExactAdamState(NamedTuple):
    count: jax.Array  # updates so far
    powers: jax.Array  # beta1**count and beta2**count in 30 fractional bits
    mu: jax.Array | None  # first moments of all parameters, flattened (None with adam_b1 = 0)
    nu: jax.Array  # second moments, likewise


def exact_adam(config: Config) -> optax.GradientTransformation:
    """Adam in exact arithmetic, on all parameters at once (flattened: one copy of the update's
    code, not one per parameter array, which keeps the compiled program small)."""
    b1, b2, eps = config.adam_b1, config.adam_b2, config.adam_eps
    betas = [im.fixed(decimal.Decimal(repr(b)), 30) for b in (b1, b2)]

    def init(params: Any) -> ExactAdamState:
        zeros = jnp.zeros_like(ravel_pytree(params)[0])
        return ExactAdamState(jnp.zeros([], jnp.int32), jnp.full(2, 1 << 30, jnp.int32), zeros if b1 else None, zeros)

    def update(grads: Any, state: ExactAdamState, params: Any = None) -> tuple[Any, ExactAdamState]:
        del params
        g, unravel = ravel_pytree(grads)
        powers = im.mul_q30(state.powers, jnp.array(betas, jnp.int32))
        if config.grad_clip:
            g = jnp.clip(g, -config.grad_clip, config.grad_clip)
        q, s = im.quantize(g, 16, ())  # the square fits int32, and is rounded once to float32
        nu = _average(state.nu, im.scale(q * q, 2 * s), b2)
        mu = _average(state.mu, g, b1) if b1 else g
        log_nu = (im.log2_of_carrier(jnp.where(nu > 0, nu, 1.0)) << (FRAC - im.LOG_FRAC)) - _log_one_minus(powers[1])
        log_denominator = jnp.maximum(log_nu >> 1, _log2(eps) if eps else -(1 << 30))  # sqrt of the corrected nu
        log_step = _log_rate(config, state.count) - (_log_one_minus(powers[0]) if b1 else 0) - log_denominator
        significand, whole = im.exp2_parts(log_step >> (FRAC - im.LOG_FRAC))
        mq, sm = im.quantize(mu, 15, ())
        step = im.scale(-mq * (significand >> 9), sm + whole - 14)
        return unravel(step), ExactAdamState(state.count + 1, powers, mu if b1 else None, nu)

    return optax.GradientTransformation(init, update)
