"""L(Y | X): the description length of labels given inputs, for a user's Flax classifier.

Both sides hold the inputs X (like `--given`); only the labels Y are coded. In ten lines:

    from prequential import supervised
    config = supervised.labels_config(classes=10, batch=32, blocks=VOITA_TITOV_BLOCKS)
    result = supervised.measure(x, y, MyClassifier(), optax.adam(1e-3), config)   # bits, per block
    blob = supervised.compress(x, y, MyClassifier(), optax.adam(1e-3), config)
    assert (supervised.decompress(blob, x, MyClassifier(), optax.adam(1e-3)) == y).all()

The classifier maps a batch of inputs (batch, *x.shape[1:]) to logits (batch, classes). The
estimators are the token streams' (replay.py): online (score a batch of `batch` examples, code
its labels, then train on them; with further updates, a replay buffer, an EMA and calibration)
or block-wise (the first block uniform, each later one by a model trained on all before it for
`epochs` passes in an order drawn from the seed). A user's module runs in native numerics, so a
file decodes where the encoder's floats are reproduced: its header records the settings, and
its fingerprint is checked before decoding. Probabilities come from the same compiled `score`
on both sides, before the labels are known, so encoder and decoder agree by construction.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prequential import accounting, api, container, numerics
from prequential.coder import Coder, Decoder, Encoder
from prequential.config import NO_COUNTS, Config
from prequential.errors import ConfigError, FormatError, PrequentialError
from prequential.learner import Learner, TrainState, params_digest
from prequential.replay import Layout, ReplayBuffer, code_uniform, coded_bits, more_updates, passes, stops_early
from prequential.store import ArrayStore

SCHEMA = "prequential.labels/1"


def labels_config(classes: int, batch: int = 32, seed: int = 0, **estimator: Any) -> Config:
    """The config of a labels code: `classes` symbols, `batch` examples per online update (and
    per minibatch of block-wise training), and the estimator's fields (blocks, block_init,
    epochs, early_stop, updates, replay_buffer, replay_steps, ema_decay, calibrate)."""
    fields = {"vocab_size": classes, "streams": 1, "segment": batch, "memory": 1, "memory_cache": 0, "seed": seed, "numerics": "native"}
    try:
        return Config(**fields, **NO_COUNTS, **estimator).validate()
    except TypeError as err:
        raise ConfigError(f"not an estimator field: {err}") from None


class MLP(nn.Module):
    """A plain classifier for the command line: inputs flattened, `hidden` ReLU units per layer."""

    classes: int
    hidden: tuple[int, ...] = (64,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(jnp.float32)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.classes)(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier(Learner):
    """The learner for labels: the token learner's training step, scoring, EMA and calibration,
    on a classifier's logits as a segment of one position per example."""

    example: jax.ShapeDtypeStruct = None  # one input's shape and dtype

    def _module_params(self) -> Any:
        x = jnp.zeros((self.config.segment, *self.example.shape), self.example.dtype)
        return self.module.init(jax.random.key(self.config.seed, impl="threefry2x32"), x)

    def _logits(self, params: Any, x: jax.Array, counts: None) -> jax.Array:
        return self.module.apply(params, x)[:, None, :]


@functools.lru_cache(maxsize=8)
def _classifier(config: Config, module: nn.Module, optimizer: optax.GradientTransformation, shape: tuple, dtype: str) -> Classifier:
    return Classifier(config, module, optimizer, example=jax.ShapeDtypeStruct(shape, np.dtype(dtype)))


def _check(x: np.ndarray, y: np.ndarray | None, config: Config, module: nn.Module, optimizer) -> Classifier:
    """The learner, after checking the arrays and the classifier's output (ConfigError naming what is wrong)."""
    x = np.asarray(x)
    if x.ndim < 1 or not len(x):
        raise ConfigError(f"inputs X must be an array of at least one example, got shape {x.shape}")
    if y is not None:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(f"labels Y must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
        if len(x) != len(y):
            raise ConfigError(f"X and Y must hold as many examples: X has {len(x):,}, Y {len(y):,}")
        if len(y) and (y.min() < 0 or y.max() >= config.vocab_size):
            raise ConfigError(
                f"labels must be in [0, {config.vocab_size}) for a classifier of {config.vocab_size} classes, "
                f"Y holds {int(y.min())}..{int(y.max())}"
            )
    if module is None or optimizer is None:
        raise ConfigError("a labels code needs the classifier (module=) and the optimizer (optimizer=)")
    learner = _classifier(config, module, optimizer, x.shape[1:], x.dtype.str)
    try:
        shape = jax.eval_shape(
            lambda: learner.module.apply(learner._module_params(), jnp.zeros((config.segment, *x.shape[1:]), x.dtype))
        ).shape
    except Exception as err:  # a user's module may fail in any way; say so in one line
        raise ConfigError(f"the classifier failed on a batch of shape {(config.segment, *x.shape[1:])}: {err}") from None
    if shape != (config.segment, config.vocab_size):
        raise ConfigError(
            f"the classifier must return logits of shape (batch, classes) = {(config.segment, config.vocab_size)}, it returned {shape}"
        )
    return learner


def _source(module: nn.Module) -> bytes:
    """What a receiver runs besides the replay code: this module and the classifier's source."""
    return Path(__file__).read_bytes() + accounting.module_source(module)


def _batch(x: np.ndarray, rows: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs at `rows`, padded to `batch` examples (one compiled shape), and the (batch, 1) mask."""
    out = np.zeros((batch, *x.shape[1:]), x.dtype)
    out[: len(rows)] = x[rows]
    return out, (np.arange(batch) < len(rows))[:, None]


def _targets(labels: np.ndarray, batch: int) -> np.ndarray:
    out = np.zeros((batch, 1), np.int32)
    out[: len(labels), 0] = labels
    return out


def _code_pass(
    learner: Classifier, x: np.ndarray, labels: ArrayStore, start: int, stop: int, state: TrainState, coder: Coder | None, learn: bool
):
    """Score (and code) the labels [start, stop) batch by batch, training after each batch when
    `learn`: the token replay's loop with a classifier's batches as its segments. Returns (bits, state)."""
    config = learner.config
    B = config.segment
    layout = Layout(stop - start, 1, B)
    buffer = ReplayBuffer(config.replay_buffer) if learn and config.replay_steps else None
    bits = 0.0
    for block in layout.blocks(config):
        if coder is not None:
            coder.begin_block(block.n_sync, block.last, block.max_words)
        for s in block.segments:
            lo, hi = start + s * B, min(start + (s + 1) * B, stop)
            inputs, mask = _batch(x, np.arange(lo, hi), B)
            weights = np.asarray(learner.score(state, inputs, np.zeros((B, 1), np.int32), mask, None)[1])[: hi - lo, 0]
            known = np.zeros(hi - lo, np.int32) if coder is not None and coder.decodes else labels.read(lo, hi - lo)
            coded = coder.code(weights, known) if coder is not None else known
            if coder is not None and coder.decodes:
                labels.write(lo, coded)
            bits += coded_bits(weights[None], coded[None], np.ones((1, hi - lo), bool))
            if learn:
                entry = (inputs, _targets(coded, B), mask, None)
                state = more_updates(learner, learner.train(state, *entry)[0], buffer, s, entry)
            if coder is not None and layout.is_sync_point(s, config.sync_segments):
                coder.sync(params_digest(state.params), s)
        if coder is not None:
            coder.end_block(bits)
    return bits, state


def _fit(learner: Classifier, x: np.ndarray, labels: ArrayStore, stop: int, state: TrainState, block: int) -> TrainState:
    """Train on examples [0, stop) for the config's epochs of minibatches, in an order drawn
    from the seed (numpy's PCG64: the same on every platform); stop early by the config's rule."""
    config = learner.config
    B = config.segment
    y = labels.read(0, stop)
    previous = math.inf
    for epoch in range(config.epochs):
        order = np.random.default_rng([config.seed, block, epoch]).permutation(stop)
        loss = 0.0
        for lo in range(0, stop, B):
            rows = order[lo : lo + B]
            inputs, mask = _batch(x, rows, B)
            state, bits, *_ = learner.train(state, inputs, _targets(y[rows], B), mask, None)
            loss += float(np.asarray(bits, np.float64)[mask].sum())
        if stops_early(config, previous, loss):
            break
        previous = loss
    return state


def _run(learner: Classifier, x: np.ndarray, labels: ArrayStore, n: int, coder: Coder | None) -> np.ndarray:
    """The estimator's passes over the labels; returns the bits of each pass (one, online)."""
    config = learner.config
    bits, state = [], None
    for index, p in enumerate(passes(config, n)):
        if p.kind == "uniform":
            bits.append(code_uniform(coder, labels, p.size, config.vocab_size))
            continue
        if state is None or config.block_init == "seed":
            state = learner.init()
        if p.kind == "frozen":
            state = _fit(learner, x, labels, p.start, state, index)
        pass_bits, state = _code_pass(learner, x, labels, p.start, p.stop, state, coder, learn=p.kind == "online")
        bits.append(pass_bits)
    return np.array(bits)


@dataclasses.dataclass
class LabelsResult:
    """The description length of labels given inputs, itemized."""

    n_examples: int
    classes: int
    pass_bits: np.ndarray  # one online pass, or each block of a block-wise code
    pass_examples: np.ndarray
    code_bytes: int  # L(code): the replay code and the classifier's source, LZMA-compressed
    seconds: float
    config: dict[str, Any]

    @property
    def data_bits(self) -> float:
        return float(self.pass_bits.sum())

    @property
    def uniform_bits(self) -> float:
        return self.n_examples * math.log2(self.classes)

    @property
    def total_bits(self) -> float:
        return self.data_bits + 8 * self.code_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "n_examples": self.n_examples,
            "classes": self.classes,
            "data_bits": self.data_bits,
            "uniform_bits": self.uniform_bits,
            "code_bytes": self.code_bytes,
            "total_bits": self.total_bits,
            "blocks": [{"examples": int(n), "bits": float(b)} for n, b in zip(self.pass_examples, self.pass_bits, strict=True)],
            "seconds": self.seconds,
            "config": self.config,
        }

    def format(self) -> str:
        rows = [
            ("examples", f"{self.n_examples:,}", "", f"{self.classes} classes"),
            ("uniform", f"{self.uniform_bits:,.1f}", "bits", "log2(classes) a label"),
            ("model code", f"{8 * self.code_bytes:,}", "bits", "LZMA of the replay code and classifier"),
            ("L(Y | X)", f"{self.data_bits:,.1f}", "bits", f"{self.data_bits / max(self.n_examples, 1):.4f} bits a label"),
            ("total", f"{self.total_bits:,.1f}", "bits", "with the code"),
        ]
        if len(self.pass_bits) > 1:
            rows += [
                (f"block {i + 1}", f"{b:,.1f}", "bits", f"{int(n):,} examples" + (", uniform" if not i else ""))
                for i, (b, n) in enumerate(zip(self.pass_bits, self.pass_examples, strict=True))
            ]
        rows.append(("time", f"{self.seconds:.2f}", "s", ""))
        return accounting.itemized(rows)


def measure(x: np.ndarray, y: np.ndarray, module: nn.Module, optimizer: optax.GradientTransformation, config: Config) -> LabelsResult:
    """The description length L(Y | X) of the labels under the config's estimator, without coding."""
    started = time.perf_counter()
    x, y = np.asarray(x), np.asarray(y)
    learner = _check(x, y, config, module, optimizer)
    bits = _run(learner, x, ArrayStore(y.astype(np.int32)), len(y), None)
    return LabelsResult(
        n_examples=len(y),
        classes=config.vocab_size,
        pass_bits=bits,
        pass_examples=np.array([p.size for p in passes(config, len(y))]),
        code_bytes=accounting.model_code_bytes(_source(module)),
        seconds=time.perf_counter() - started,
        config=config.to_dict(),
    )


def _inputs_digest(x: np.ndarray) -> bytes:
    """SHA-256 of the inputs with their dtype and shape: decoding needs the very same X."""
    return hashlib.sha256(f"{x.dtype.str}{x.shape}".encode() + np.ascontiguousarray(x).tobytes()).digest()


def _labels_digest(y: np.ndarray) -> bytes:
    return hashlib.sha256(y.astype("<i4").tobytes()).digest()


def _fingerprint(learner: Classifier, x: np.ndarray) -> bytes:
    """8-byte hash of the classifier's scores and parameters after init and one step on the
    first batch of X: a decoder that computes other floats refuses before decoding."""
    B = learner.config.segment
    inputs, mask = _batch(x, np.arange(min(B, len(x))), B)
    targets = np.zeros((B, 1), np.int32)
    state = learner.init()
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(learner.score(state, inputs, targets, mask, None)[1]).tobytes())
    state = learner.train(state, inputs, targets, mask, None)[0]
    h.update(np.asarray(learner.score(state, inputs, targets, mask, None)[1]).tobytes() + params_digest(state.params))
    return h.digest()


def compress(x: np.ndarray, y: np.ndarray, module: nn.Module, optimizer: optax.GradientTransformation, config: Config) -> bytes:
    """The labels coded given the inputs: a .pq file that `decompress` (with the same X, module
    and optimizer) turns back into Y."""
    x, y = np.asarray(x), np.asarray(y)
    learner = _check(x, y, config, module, optimizer)
    payload = io.BytesIO()
    _run(learner, x, ArrayStore(y.astype(np.int32)), len(y), Encoder(payload))
    header = container.Header(
        flags=container.FLAG_USER_MODEL | container.FLAG_GIVEN | container.FLAG_LABELS,
        n_bytes=len(y),
        sha256=_labels_digest(y),
        package_version=accounting.package_version(),
        library_digest=accounting.library_digest(),
        code_digest=accounting.code_digest(_source(module)),
        numerics=numerics.current(),
        fingerprint=_fingerprint(learner, x),
        config=config,
        given_sha256=_inputs_digest(x),
    )
    return container.encode_header(header) + payload.getvalue()


def decompress(blob: bytes, x: np.ndarray, module: nn.Module, optimizer: optax.GradientTransformation) -> np.ndarray:
    """The labels of a labels file, decoded given the same inputs X, module and optimizer."""
    source = io.BytesIO(blob)
    header = container.read_header(source)
    if not header.labels:
        raise FormatError("not a labels file: decompress it with 'prequential decompress'")
    x = np.asarray(x)
    if _inputs_digest(x) != header.given_sha256:
        raise PrequentialError(f"the inputs X differ from the file's (SHA-256 {header.given_sha256.hex()}): decoding needs the same X")
    if len(x) != header.n_bytes:
        raise FormatError(f"file is corrupt (it declares {header.n_bytes:,} labels for {len(x):,} inputs)")
    api.check_versions(header, api.LearnerSpec(header.config, module, optimizer), None, _source(module))
    here = api.decoding_numerics(header, None)
    learner = _check(x, None, header.config, module, optimizer)
    api.check_fingerprint(header, here, _fingerprint(learner, x))
    y = np.zeros(header.n_bytes, np.int32)
    _run(learner, x, ArrayStore(y), len(y), Decoder(source))
    container.expect_end(source)
    if _labels_digest(y) != header.sha256:
        raise FormatError("decoded labels fail their SHA-256 check: the file is corrupt")
    return y
