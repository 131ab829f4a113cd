"""The online learner: pure, jitted functions of (params, optimizer state) and token arrays.

`train` scores a segment with the parameters *before* it updates on it, so the bits it returns
are the prequential code length of that segment (teacher-forced). `prefill` and `step` score
one position per stream at a time, which is what a decoder can do; the replay engine runs those
on both sides of the coder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from prequential.config import Config
from prequential.errors import ConfigError
from prequential.model import Transformer


class TrainState(NamedTuple):
    params: Any
    opt_state: Any


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
    clip = [optax.clip(config.grad_clip)] if config.grad_clip else []
    return optax.chain(
        *clip,
        optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
        optax.scale_by_learning_rate(learning_rate(config)),
    )


def _has_cache_methods(module: nn.Module) -> bool:
    return callable(getattr(module, "prefill", None)) and callable(getattr(module, "step", None))


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """The jitted functions for one config, module and optimizer; each takes state and returns state."""

    config: Config
    module: nn.Module
    optimizer: optax.GradientTransformation
    devices: int = 1  # the B streams are split over this many local devices

    @classmethod
    def create(
        cls, config: Config, module: nn.Module | None = None, optimizer: optax.GradientTransformation | None = None, devices: int = 1
    ) -> Learner:
        return cls(config, module or Transformer(config), optimizer or optimizer_from_config(config), devices)

    def _jit(self, fn, in_specs: str, out_specs: str, **options):
        """jit `fn`; over several devices, with every argument and result sharded along the streams
        ("B") or replicated ("R"), one letter per argument and result. XLA's SPMD partitioner then
        splits each computation by streams and combines the gradients with an all-reduce, whose
        order is fixed for a given layout. Results the host reads are replicated, so every process
        holds all of them; over several processes, host arrays are made global arrays first."""
        if self.devices == 1:
            return jax.jit(fn, **options)
        mesh = jax.make_mesh((self.devices,), ("streams",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[: self.devices])
        named = {"B": NamedSharding(mesh, PartitionSpec("streams")), "R": NamedSharding(mesh, PartitionSpec())}
        inputs, outputs = (tuple(named[letter] for letter in specs) for specs in (in_specs, out_specs))
        jitted = jax.jit(fn, in_shardings=inputs, out_shardings=outputs if len(outputs) > 1 else outputs[0], **options)
        if jax.process_count() == 1:
            return jitted
        return lambda *args: jitted(*(_global(arg, sharding) for arg, sharding in zip(args, inputs, strict=True)))

    @functools.cached_property
    def train(self):
        """(state, window (B,M+T), targets (B,T), mask (B,T), counts) -> (new state, bits (B,T) before it)."""
        return self._jit(self._train, "RBBBB", "RR", donate_argnums=0)

    @functools.cached_property
    def prefill(self):
        """(params, memory (B,M)) -> cache for the segment that follows the memory."""
        return self._jit(self._prefill_cached if _has_cache_methods(self.module) else self._prefill_window, "RB", "B")

    @functools.cached_property
    def step(self):
        """(params, cache, tokens (B,), window position, counts) -> (probabilities (B,V) float32, cache)."""
        step = self._step_cached if _has_cache_methods(self.module) else self._step_window
        return self._jit(step, "RBBRB", "RB", donate_argnums=1)

    @functools.cached_property
    def init(self):
        """() -> the initial TrainState, from the config's seed."""
        return self._jit(self._init, "", "R")

    def _init(self) -> TrainState:
        c = self.config
        tokens = jnp.full((c.streams, c.window), c.vocab_size, jnp.int32)
        counts = jnp.zeros((c.streams, c.segment, c.count_channels, c.vocab_size), jnp.uint16) if c.count_channels else None
        params = self.module.init(jax.random.PRNGKey(c.seed), *((tokens,) if counts is None else (tokens, counts)))
        return TrainState(params, self.optimizer.init(params))

    def _apply(self, params: Any, window: jax.Array, counts: jax.Array | None) -> jax.Array:
        args = (window,) if counts is None else (window, counts)  # a user's module takes tokens only
        return self.module.apply(params, *args)

    def segment_bits(self, params: Any, window: jax.Array, targets: jax.Array, counts: jax.Array | None = None) -> jax.Array:
        """-log2 p of each target (B, T) given the window (B, M+T) of inputs before it and,
        with count models, their counts (B, T, K, V)."""
        logits = self._apply(params, window, counts)[:, -self.config.segment :].astype(jnp.float32)
        nats = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
        return nats / math.log(2)

    def _train(self, state: TrainState, window: jax.Array, targets: jax.Array, mask: jax.Array, counts: jax.Array | None = None):
        def loss(params):
            bits = self.segment_bits(params, window, targets, counts)
            return jnp.sum(bits * mask) / jnp.maximum(jnp.sum(mask), 1), bits

        (_, bits), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), bits

    def _prefill_cached(self, params: Any, memory: jax.Array) -> Any:
        return self.module.apply(params, memory, method="prefill")

    def _step_cached(self, params: Any, cache: Any, tokens: jax.Array, pos: jax.Array, counts: jax.Array | None = None):
        logits, cache = self.module.apply(params, tokens, pos, cache, counts, method="step")
        return jax.nn.softmax(logits.astype(jnp.float32)), cache

    # A module without a cache is run on the whole window each step; positions not yet coded hold
    # the start symbol on both sides, so encoder and decoder still see identical inputs.
    def _prefill_window(self, params: Any, memory: jax.Array) -> jax.Array:
        pad = jnp.full((memory.shape[0], self.config.segment), self.config.vocab_size, jnp.int32)
        return jnp.concatenate([memory, pad], axis=1)

    def _step_window(self, params: Any, window: jax.Array, tokens: jax.Array, pos: jax.Array, counts: None = None):
        window = jax.lax.dynamic_update_slice_in_dim(window, tokens[:, None], pos, axis=1)
        logits = jax.lax.dynamic_index_in_dim(self.module.apply(params, window), pos, axis=1, keepdims=False)
        return jax.nn.softmax(logits.astype(jnp.float32)), window


def _global(tree: Any, sharding: NamedSharding) -> Any:
    """Host values (the same on every process) as global arrays of `sharding`; arrays stay."""

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array):
            return leaf
        # A private copy: on CPU the array may alias it while the caller reuses its own buffer.
        value = np.array(leaf, np.int32) if isinstance(leaf, int) else np.array(leaf)  # a position: int32, as jit makes it
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(place, tree)


def learner_for(
    config: Config, module: nn.Module | None = None, optimizer: optax.GradientTransformation | None = None, devices: int = 1
) -> Learner:
    """One compiled learner per (config, module, optimizer, devices), shared by every run in a process."""
    if module is not None and config.count_channels:
        raise ConfigError("a user's module takes tokens only: set count_orders, count_words and match_model to 0")
    if config.streams % devices:
        raise ConfigError(f"{config.streams} streams cannot be split evenly over {devices} devices: choose a divisor of {config.streams}")
    return _cached_learner(config, module, optimizer, devices)  # positional, so every call shares one cache key


@functools.lru_cache(maxsize=16)
def _cached_learner(config: Config, module: nn.Module | None, optimizer: optax.GradientTransformation | None, devices: int) -> Learner:
    return Learner.create(config, module, optimizer, devices)


def params_digest(params: Any) -> bytes:
    """4-byte hash of every parameter's bits: the sync check between encoder and decoder."""
    h = hashlib.blake2b(digest_size=4)
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.asarray(leaf).tobytes())
    return h.digest()


def fingerprint(learner: Learner) -> bytes:
    """8-byte hash of what the compiled functions compute on a fixed probe: init, step, train,
    step again. A decoder whose hash differs would decode garbage, so it refuses up front."""
    c = learner.config
    rng = np.random.default_rng(0x5EED)
    window = rng.integers(0, c.vocab_size + 1, (c.streams, c.window), dtype=np.int32)
    targets = rng.integers(0, c.vocab_size, (c.streams, c.segment), dtype=np.int32)
    shape = (c.streams, c.segment, c.count_channels, c.vocab_size)
    counts = rng.integers(0, 4, shape, dtype=np.uint16) if c.count_channels else None
    h = hashlib.blake2b(digest_size=8)
    state = learner.init()
    for _ in range(2):
        cache = learner.prefill(state.params, window[:, : c.memory])
        probs, _ = learner.step(state.params, cache, window[:, c.memory], c.memory, None if counts is None else counts[:, 0])
        h.update(np.asarray(probs).tobytes())
        state, bits = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
        h.update(np.asarray(bits).tobytes() + params_digest(state.params))
    return h.digest()
