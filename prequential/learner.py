"""The online learner: pure, jitted functions of (params, optimizer state) and token arrays.

`train` scores a segment with the parameters *before* it updates on it, so the bits it returns
are the prequential code length of that segment (teacher-forced), and the coder weights with
them. `prefill` and `step` score one position per stream at a time, which is what a decoder can
do. With exact numerics both give the same integers, so an encoder codes with `train`'s weights;
with native numerics the replay engine runs `step` on both sides of the coder.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import threading
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec

from prequential import intmath, programs
from prequential.config import NO_COUNTS, Config
from prequential.counts import CountInputs
from prequential.errors import ConfigError
from prequential.model import Transformer
from prequential.ops import OPS, PreparedKernel
from prequential.optimizer import ExactAdamState, moving_average, optimizer_from_config


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    ema: Any = None  # the moving average of the parameters that scores (config.ema_decay)
    calibration: jax.Array | None = None  # (K,) recent cost of each temperature of TEMPERATURES (config.calibrate)


programs.serializable(TrainState, ExactAdamState, CountInputs, PreparedKernel)

# Forward calibration's grid: factors on the logits (inverse temperatures) 2**(j/8), j = 0, -1,
# 1, ..., 4; the first is 1, so a tie keeps the model's own distribution.
TEMPERATURES = tuple(2.0 ** (j / 8) for j in (0, -1, 1, -2, 2, -3, 3, -4, 4))
# Each segment the costs so far decay by 2**-CALIBRATION_DECAY before its own are added: the
# temperature follows the last few hundred segments. Costs are integers (1/16 bit): exact.
CALIBRATION_DECAY = 8


def _has_cache_methods(module: nn.Module) -> bool:
    return callable(getattr(module, "prefill", None)) and callable(getattr(module, "step", None))


def _shared(method):
    """A cached property kept in the learner's `compiled` dict, which the learner's copies for
    other estimator settings (`with_estimator`) share: one set of compiled functions per model."""
    name = method.__name__

    @functools.wraps(method)
    def get(self):
        value = self.compiled.get(name)  # read once: learner_for may clear the dict of an evicted learner
        if value is None:
            value = self.compiled[name] = method(self)
        return value

    return property(get)


# Fields that decide only which segments a pass trains on and codes, and how often, not what
# the compiled functions compute.
ESTIMATOR_FIELDS = ("blocks", "block_tokens", "block_init", "epochs", "early_stop", "updates", "replay_buffer", "replay_steps")


def model_config(config: Config) -> Config:
    """The config with its ESTIMATOR_FIELDS at their defaults: what the compiled functions depend on."""
    return config.replace(**{name: getattr(Config, name) for name in ESTIMATOR_FIELDS})


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """The jitted functions for one config, module and optimizer; each takes state and returns state."""

    config: Config
    module: nn.Module
    optimizer: optax.GradientTransformation
    devices: int = 1  # the B streams are split over this many local devices
    stores_programs: bool = False  # keep traced programs on disk (programs.py): exact numerics, this package's model and optimizer
    compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    def with_estimator(self, config: Config) -> Learner:
        """This learner, sharing its compiled functions, for a config that differs from its own
        in ESTIMATOR_FIELDS only."""
        return dataclasses.replace(self, config=config)

    @classmethod
    def create(
        cls, config: Config, module: nn.Module | None = None, optimizer: optax.GradientTransformation | None = None, devices: int = 1
    ) -> Learner:
        own = module is None and optimizer is None  # code that the stored programs' key hashes
        stores = own and config.numerics == "exact"  # results that do not depend on how XLA compiles them
        return cls(config, module or Transformer(config), optimizer or optimizer_from_config(config), devices, stores)

    def _jit(self, fn, in_specs: str, out_specs: str, **options):
        """jit `fn`; over several devices, with every argument and result sharded along the streams
        ("B") or replicated ("R"), one letter per argument and result. XLA's SPMD partitioner then
        splits each computation by streams and combines the gradients with an all-reduce, whose
        order is fixed for a given layout. Results the host reads are replicated, so every process
        holds all of them; over several processes, host arrays are made global arrays first."""
        if self.devices == 1:
            stored = programs.stored(fn, fn.__name__, programs.salt(repr(model_config(self.config)))) if self.stores_programs else fn
            return jax.jit(stored, **options)
        mesh = jax.make_mesh((self.devices,), ("streams",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[: self.devices])
        named = {"B": NamedSharding(mesh, PartitionSpec("streams")), "R": NamedSharding(mesh, PartitionSpec())}
        inputs, outputs = (tuple(named[letter] for letter in specs) for specs in (in_specs, out_specs))
        jitted = jax.jit(fn, in_shardings=inputs, out_shardings=outputs if len(outputs) > 1 else outputs[0], **options)
        if jax.process_count() == 1:
            return jitted
        return lambda *args: jitted(*(_global(arg, sharding) for arg, sharding in zip(args, inputs, strict=True)))

    @_shared
    def train(self):
        """(state, window, targets (B,T), mask (B,T), counts) -> (new state, bits (B,T) before it,
        coder weights (B,T,V) before it, memory states for the next segment). The window is the
        inputs (B,M+T) or, with config.memory_cache, (inputs, memory states); states are None
        without it."""
        return self._jit(self._train, "RBBBB", "RRRB", donate_argnums=0, **self._compiler_options())

    @_shared
    def score(self):
        """(state, window, targets, mask, counts) -> (bits (B,T), coder weights (B,T,V), memory
        states) of the state's scoring parameters, with no update: a block-wise code's frozen model."""
        return self._jit(self._score, "RBBBB", "RRB", **self._compiler_options())

    @_shared
    def prefill(self):
        """(prepared variables, memory (B,M), or with memory_cache (memory, states)) -> cache
        for the segment that follows the memory."""
        prefill = self._prefill_cached if _has_cache_methods(self.module) else self._prefill_window
        return self._jit(prefill, "RB", "B", **self._compiler_options())

    @_shared
    def prepare(self):
        """state -> the variables `step` reads, made once per segment: the scoring parameters,
        for this package's model every kernel in the form its products read (ops.prepare_kernel),
        and with calibration the temperature."""
        return self._jit(self._prepare, "R", "R")

    @_shared
    def step(self):
        """(prepared variables, cache, tokens (B,), window position, counts) -> (coder weights (B,V) float32, cache)."""
        step = self._step_cached if _has_cache_methods(self.module) else self._step_window
        return self._jit(step, "RBBRB", "RB", donate_argnums=1, **self._compiler_options(step=True))

    def _compiler_options(self, step: bool = False) -> dict:
        """XLA options for exact numerics on CPU, whose integers do not depend on how XLA compiles
        them (native numerics keep XLA's defaults: their floats, and so their files, depend on them):
        - 8-bit dots run as YNNPACK int8 kernels (intmath.int8_dots), which XLA leaves off by
          default and numerics.activate turns off for float fusions; XLA's own int8 dot widens
          both operands to int32 first, and with it the training step ran 1.5 times slower
          than with float dots;
        - a step does not split each reduction into a partial reduction over windows of 32
          elements and a reduction of those (for float sums' accuracy): on a step's rows of one
          position per stream that doubles the programs XLA runs one after the other, and the
          step runs about 25 % faster without it."""
        if self.ops.name != "exact" or jax.default_backend() != "cpu":
            return {}
        options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"} if intmath.int8_dots() else {}
        if step:
            options["xla_disable_hlo_passes"] = "tree_reduction_rewriter"
        return {"compiler_options": options} if options else {}

    @_shared
    def init(self):
        """() -> the initial TrainState, from the config's seed."""
        return self._jit(self._init, "", "R")

    @property
    def ops(self):
        return OPS[self.config.numerics]

    def _module_params(self) -> Any:
        c = self.config
        tokens = jnp.full((c.streams, c.window), c.vocab_size, jnp.int32)
        counts = CountInputs.of(np.zeros((c.streams, c.segment, c.count_channels, c.vocab_size), np.uint16)) if c.count_channels else None
        key = jax.random.key(c.seed, impl="threefry2x32")  # named: the default implementation is a user setting
        return self.module.init(key, *((tokens,) if counts is None else (tokens, counts)))

    @_shared
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
        return jax.eval_shape(self.init)  # through the jitted init, which may find its program stored

    def _init(self) -> TrainState:
        params = self._module_params()
        if self.config.numerics == "exact":
            params = ravel_pytree(params)[0]
        ema = params if self.config.ema_decay else None
        calibration = jnp.zeros(len(TEMPERATURES), jnp.int32) if self.config.calibrate else None
        return TrainState(params, self.optimizer.init(params), ema, calibration)

    def scoring_params(self, state: TrainState) -> Any:
        """The parameters that score: their moving average, or the trained ones."""
        return state.ema if self.config.ema_decay else state.params

    def _apply(self, params: Any, window: jax.Array, counts: jax.Array | None) -> jax.Array:
        args = (window,) if counts is None else (window, counts)  # a user's module takes tokens only
        return self.module.apply(self.tree(params), *args)

    def _logits(self, params: Any, window: jax.Array, counts: jax.Array | None) -> jax.Array:
        return self._apply(params, window, counts)[:, -self.config.segment :]

    def initial_memory(self) -> Any:
        """The memory states before the first segment of a pass (config.memory_cache), else None."""
        return self._initial_memory() if self.config.caches_memory else None

    @_shared
    def _initial_memory(self):
        """() -> zero memory states, placed as `train` places the states it returns: jit would
        compile `train` and `prefill` again for arguments placed otherwise."""
        return self._jit(self._zero_memory, "", "B")

    def _zero_memory(self) -> jax.Array:
        c = self.config
        return jnp.zeros((c.streams, c.n_layers - 1, c.memory, c.d_model), jnp.float32)

    def _forward(self, params: Any, window: Any, counts: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        """(logits of the segment, memory states for the next one, or None)."""
        if not self.config.caches_memory:
            return self._logits(params, window, counts), None
        tokens, states = window
        return self.module.apply(self.tree(params), tokens, counts, states, method="with_memory")

    def segment_scores(self, params: Any, window: jax.Array, targets: jax.Array, counts: jax.Array | None = None):
        """(-log2 p of each target (B, T), the coder weights (B, T, V)) given the window (B, M+T)
        of inputs before the targets and, with count models, their counts (B, T, K, V)."""
        bits, weights = self.ops.bits_and_weights(self._logits(params, window, counts), targets)
        return bits, weights.astype(jnp.float32)  # what the coder takes (exact: integers below 2**23)

    def _calibrated(self, logits: jax.Array, targets: jax.Array, mask: jax.Array, calibration: jax.Array):
        """The bits and coder weights at the temperature that cost least so far, and the costs
        with this segment's added: every temperature of the grid is scored on it."""
        scored = [self.ops.bits_and_weights(self.ops.times(logits, factor), targets) for factor in TEMPERATURES]
        bits = jnp.stack([b for b, _ in scored])
        chosen = jnp.argmin(calibration)  # the first of equal costs
        cost = jnp.sum(jnp.where(mask, jnp.round(bits * 16), 0.0).astype(jnp.int32), axis=(1, 2))  # bits: multiples of 2**-16
        weights = jnp.stack([w for _, w in scored])[chosen].astype(jnp.float32)
        return bits[chosen], weights, calibration - (calibration >> CALIBRATION_DECAY) + cost

    def _scores(self, logits: jax.Array, targets: jax.Array, mask: jax.Array, calibration: jax.Array | None):
        """The bits and coder weights of scoring logits (at the calibrated temperature, when the
        config calibrates) and the calibration's costs with this segment's added."""
        if self.config.calibrate:
            return self._calibrated(logits, targets, mask, calibration)
        bits, weights = self.ops.bits_and_weights(logits, targets)
        return bits, weights.astype(jnp.float32), calibration

    def _score(self, state: TrainState, window: Any, targets: jax.Array, mask: jax.Array, counts: jax.Array | None = None):
        logits, memory = self._forward(self.scoring_params(state), window, counts)
        return *self._scores(logits, targets, mask, state.calibration)[:2], memory

    def _train(self, state: TrainState, window: Any, targets: jax.Array, mask: jax.Array, counts: jax.Array | None = None):
        def loss(params):
            logits, memory = self._forward(params, window, counts)
            bits, weights = self.ops.bits_and_weights(logits, targets)
            if self.ops.name == "exact":  # a sum scaled by a power of two near 1 / tokens: exact
                total = jnp.sum(jnp.where(mask, bits, 0.0)) * 2.0 ** -max((self.config.streams * self.config.segment).bit_length() - 1, 0)
            else:
                total = jnp.sum(bits * mask) / jnp.maximum(jnp.sum(mask), 1)
            return total, (bits, weights.astype(jnp.float32), logits, memory)

        (_, (bits, weights, logits, memory)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        c = self.config
        calibration = state.calibration
        if c.ema_decay:  # the average scores, before it moves towards the new parameters
            logits = self._forward(state.ema, window, counts)[0]
        if c.ema_decay or c.calibrate:  # else the loss's own bits and weights are the scores
            bits, weights, calibration = self._scores(logits, targets, mask, calibration)
        ema = moving_average(state.ema, params, c.ema_decay) if c.ema_decay else None
        return TrainState(params, opt_state, ema, calibration), bits, weights, memory

    def _prepare(self, state: TrainState) -> Any:
        variables = self.tree(self.scoring_params(state))
        if _has_cache_methods(self.module):
            variables = {**variables, "prepared": _kernels(variables["params"], self.ops.prepare_kernel)}
        if self.config.calibrate:
            variables = {**variables, "temperature": jnp.argmin(state.calibration)}
        return variables

    def _coder_weights(self, variables: Any, logits: jax.Array) -> jax.Array:
        """The step's coder weights, at the calibrated temperature when there is one."""
        if "temperature" in variables:
            branches = [lambda x, factor=factor: self.ops.times(x, factor) for factor in TEMPERATURES]
            logits = jax.lax.switch(variables["temperature"], branches, logits)
        return self.ops.coder_weights(logits)

    def _prefill_cached(self, variables: Any, memory: Any) -> Any:
        args = memory if self.config.caches_memory else (memory,)
        return self.module.apply(_module_variables(variables), *args, method="prefill")

    def _step_cached(self, variables: Any, cache: Any, tokens: jax.Array, pos: jax.Array, counts: jax.Array | None = None):
        logits, cache = self.module.apply(_module_variables(variables), tokens, pos, cache, counts, method="step")
        return self._coder_weights(variables, logits), cache

    # A module without a cache is run on the whole window each step; positions not yet coded hold
    # the start symbol on both sides, so encoder and decoder still see identical inputs.
    def _prefill_window(self, variables: Any, memory: jax.Array) -> jax.Array:
        pad = jnp.full((memory.shape[0], self.config.segment), self.config.vocab_size, jnp.int32)
        return jnp.concatenate([memory, pad], axis=1)

    def _step_window(self, variables: Any, window: jax.Array, tokens: jax.Array, pos: jax.Array, counts: None = None):
        window = jax.lax.dynamic_update_slice_in_dim(window, tokens[:, None], pos, axis=1)
        logits = jax.lax.dynamic_index_in_dim(self.module.apply(_module_variables(variables), window), pos, axis=1, keepdims=False)
        return self._coder_weights(variables, logits), window


def with_memory(tokens: np.ndarray, memory: Any) -> Any:
    """The window argument of train, score and prefill: the tokens, with the memory states
    when the config caches them (memory not None)."""
    return tokens if memory is None else (tokens, memory)


def _module_variables(variables: dict) -> dict:
    """The Flax collections of prepared variables: all but the calibrated temperature."""
    return {k: v for k, v in variables.items() if k != "temperature"}


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
        raise ConfigError("a user's module takes tokens only: turn the count models off (" + ", ".join(f"{f} = 0" for f in NO_COUNTS) + ")")
    if module is not None and config.caches_memory:
        raise ConfigError("config field 'memory_cache' needs this package's transformer (a user's module has no memory states)")
    if config.streams % devices:
        raise ConfigError(f"{config.streams} streams cannot be split evenly over {devices} devices: choose a divisor of {config.streams}")
    model = model_config(config)
    key = (model, module, optimizer, devices)
    with _LEARNERS_LOCK:
        learner = _LEARNERS.pop(key, None) or Learner.create(model, module, optimizer, devices)
        _LEARNERS[key] = learner  # the most recently used last
        evicted = _LEARNERS.popitem(last=False)[1] if len(_LEARNERS) > _MAX_LEARNERS else None
    if evicted is not None:
        # Each learner's compiled programs hold about a thousand memory mappings (Linux allows
        # 65,530 by default), and the learner and its jitted methods form a reference cycle that
        # only the cyclic garbage collector would free: a long sweep over configs ran out of
        # mappings first. Dropping the evicted learner's programs frees them at once; a caller
        # that still holds it compiles them again on its next call.
        evicted.compiled.clear()
    return learner if model == config else learner.with_estimator(config)


# The learners learner_for made, least recently used first.
_LEARNERS: collections.OrderedDict[tuple, Learner] = collections.OrderedDict()
_MAX_LEARNERS = 16
_LEARNERS_LOCK = threading.Lock()


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
    counts = CountInputs.of(rng.integers(0, 4, shape, dtype=np.uint16)) if c.count_channels else None
    h = hashlib.blake2b(digest_size=8)
    state = learner.init()
    memory = learner.initial_memory()
    for _ in range(2):
        variables = learner.prepare(state)
        cache = learner.prefill(variables, with_memory(window[:, : c.memory], memory))
        first_counts = None if counts is None else counts.position(0)
        probs, _ = learner.step(variables, cache, window[:, c.memory], c.memory, first_counts)
        h.update(np.asarray(probs).tobytes())
        state, bits, weights, memory = learner.train(state, with_memory(window, memory), targets, np.ones(targets.shape, bool), counts)
        h.update(np.asarray(bits).tobytes() + np.asarray(weights).tobytes() + params_digest(state.params))
    return h.digest()
