"""The online learner: pure, jitted functions of (params, optimizer state) and token arrays.

`train` scores a segment with the parameters *before* it updates on it, so the bits it returns
are the prequential code length of that segment (teacher-forced), and the coder weights with
them. `prefill` and `step` score one position per stream at a time, which is what a decoder can
do. With exact numerics both give the same integers, so an encoder codes with `train`'s weights;
with native numerics the replay engine runs `step` on both sides of the coder.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

from prequential.config import Config
from prequential.errors import ConfigError
from prequential.model import Transformer
from prequential.ops import OPS
from prequential.optimizer import optimizer_from_config


class TrainState(NamedTuple):
    params: Any
    opt_state: Any


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
        """(state, window (B,M+T), targets (B,T), mask (B,T), counts) -> (new state, bits (B,T)
        before it, coder weights (B,T,V) before it)."""
        return self._jit(self._train, "RBBBB", "RRR", donate_argnums=0)

    @functools.cached_property
    def prefill(self):
        """(params, memory (B,M)) -> cache for the segment that follows the memory."""
        return self._jit(self._prefill_cached if _has_cache_methods(self.module) else self._prefill_window, "RB", "B")

    @functools.cached_property
    def prepare(self):
        """params -> the variables `step` reads, made once per segment: the module's parameters
        and, for this package's model, every kernel in the form its products read (ops.prepare_kernel)."""
        return self._jit(self._prepare, "R", "R")

    @functools.cached_property
    def step(self):
        """(prepared variables, cache, tokens (B,), window position, counts) -> (coder weights (B,V) float32, cache)."""
        step = self._step_cached if _has_cache_methods(self.module) else self._step_window
        return self._jit(step, "RBBRB", "RB", donate_argnums=1)

    @functools.cached_property
    def init(self):
        """() -> the initial TrainState, from the config's seed."""
        return self._jit(self._init, "", "R")

    @property
    def ops(self):
        return OPS[self.config.numerics]

    def _module_params(self) -> Any:
        c = self.config
        tokens = jnp.full((c.streams, c.window), c.vocab_size, jnp.int32)
        counts = jnp.zeros((c.streams, c.segment, c.count_channels, c.vocab_size), jnp.uint16) if c.count_channels else None
        key = jax.random.key(c.seed, impl="threefry2x32")  # named: the default implementation is a user setting
        return self.module.init(key, *((tokens,) if counts is None else (tokens, counts)))

    @functools.cached_property
    def _unravel(self):
        """With exact numerics the state holds the parameters as one flat vector: the update is
        then one elementwise computation, where per array XLA would compile a copy of it for each."""
        shapes = jax.eval_shape(self._module_params)
        return ravel_pytree(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes))[1]

    def tree(self, params: Any) -> Any:
        """The parameters as the module's pytree (exact numerics keep them flat in the state)."""
        return self._unravel(params) if self.config.numerics == "exact" else params

    def state_shape(self) -> TrainState:
        """The state's tree of shapes and dtypes, without computing it."""
        return jax.eval_shape(self._init)

    def _init(self) -> TrainState:
        params = self._module_params()
        if self.config.numerics == "exact":
            params = ravel_pytree(params)[0]
        return TrainState(params, self.optimizer.init(params))

    def _apply(self, params: Any, window: jax.Array, counts: jax.Array | None) -> jax.Array:
        args = (window,) if counts is None else (window, counts)  # a user's module takes tokens only
        return self.module.apply(self.tree(params), *args)

    def segment_scores(self, params: Any, window: jax.Array, targets: jax.Array, counts: jax.Array | None = None):
        """(-log2 p of each target (B, T), the coder weights (B, T, V)) given the window (B, M+T)
        of inputs before the targets and, with count models, their counts (B, T, K, V)."""
        logits = self._apply(params, window, counts)[:, -self.config.segment :]
        bits, weights = self.ops.bits_and_weights(logits, targets)
        return bits, weights.astype(jnp.float32)  # what the coder takes (exact: integers below 2**23)

    def _train(self, state: TrainState, window: jax.Array, targets: jax.Array, mask: jax.Array, counts: jax.Array | None = None):
        def loss(params):
            bits, weights = self.segment_scores(params, window, targets, counts)
            if self.ops.name == "exact":  # a sum scaled by a power of two near 1 / tokens: exact
                total = jnp.sum(jnp.where(mask, bits, 0.0)) * 2.0 ** -max((self.config.streams * self.config.segment).bit_length() - 1, 0)
            else:
                total = jnp.sum(bits * mask) / jnp.maximum(jnp.sum(mask), 1)
            return total, (bits, weights)

        (_, (bits, weights)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), bits, weights

    def _prepare(self, params: Any) -> Any:
        variables = self.tree(params)
        if not _has_cache_methods(self.module):
            return variables
        return {**variables, "prepared": _kernels(variables["params"], self.ops.prepare_kernel)}

    def _prefill_cached(self, params: Any, memory: jax.Array) -> Any:
        return self.module.apply(self.tree(params), memory, method="prefill")

    def _step_cached(self, variables: Any, cache: Any, tokens: jax.Array, pos: jax.Array, counts: jax.Array | None = None):
        logits, cache = self.module.apply(variables, tokens, pos, cache, counts, method="step")
        return self.ops.coder_weights(logits), cache

    # A module without a cache is run on the whole window each step; positions not yet coded hold
    # the start symbol on both sides, so encoder and decoder still see identical inputs.
    def _prefill_window(self, params: Any, memory: jax.Array) -> jax.Array:
        pad = jnp.full((memory.shape[0], self.config.segment), self.config.vocab_size, jnp.int32)
        return jnp.concatenate([memory, pad], axis=1)

    def _step_window(self, variables: Any, window: jax.Array, tokens: jax.Array, pos: jax.Array, counts: None = None):
        window = jax.lax.dynamic_update_slice_in_dim(window, tokens[:, None], pos, axis=1)
        logits = jax.lax.dynamic_index_in_dim(self.module.apply(variables, window), pos, axis=1, keepdims=False)
        return self.ops.coder_weights(logits), window


def _kernels(params: dict, prepare) -> dict:
    """Every "kernel" in a nested parameter dict, prepared, under the same path (a Flax collection)."""
    out = {}
    for name, value in params.items():
        if isinstance(value, dict):
            if inner := _kernels(value, prepare):
                out[name] = inner
        elif name == "kernel":
            out[name] = prepare(value)
    return out


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
    """8-byte hash of what the learner computes on a fixed probe: init, then twice prefill, a
    step and a training step (its bits, coder weights and new parameters). The header holds the
    encoder's; a decoder that computes another refuses before decoding. With exact numerics that
    can only be a bug or an altered header; with native ones, a machine with other floats."""
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
        first_counts = None if counts is None else counts[:, 0]
        probs, _ = learner.step(learner.prepare(state.params), cache, window[:, c.memory], c.memory, first_counts)
        h.update(np.asarray(probs).tobytes())
        state, bits, weights = learner.train(state, window, targets, np.ones(targets.shape, bool), counts)
        h.update(np.asarray(bits).tobytes() + np.asarray(weights).tobytes() + params_digest(state.params))
    return h.digest()
