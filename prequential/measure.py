"""Measure the description length of a training run, without the coder, at the speed of training.

    result = measure(tokens, config)                       # our model, a preset or a Config
    result = measure(tokens, config, module=m, optimizer=o)  # any causal Flax module, any optax optimizer

The learner scores every segment before it trains on it (the prequential order is the learner's,
not the caller's: nothing here hands out parameters between steps). A module is first probed for
causality: if its output at a position changes when later tokens change, teacher-forced scoring
would let it see the token it is scored on, so it is scored step by step instead, with later
positions hidden, and pays the full price.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from typing import Any

import flax.linen as nn
import numpy as np
import optax

from prequential import accounting, container, numerics, transform
from prequential import checkpoint as checkpoints
from prequential.coder import Scorer
from prequential.config import Config, resolve
from prequential.errors import ConfigError
from prequential.learner import Learner, learner_for
from prequential.numerics import Numerics
from prequential.replay import Carry, Layout, Progress, code_blocks, coder_blocks, passes, replay, train_pass
from prequential.store import ArrayStore, as_tokens

SCHEMA = "prequential.measure/1"


@dataclasses.dataclass
class MeasureResult:
    """Bits per segment of one online training run, and the itemized description length."""

    n_tokens: int
    vocab_size: int
    segment_bits: np.ndarray  # bits spent on each segment's tokens (all streams), or each block's (a block-wise code)
    segment_tokens: np.ndarray  # tokens in each segment, or block
    code_bytes: int  # L(code): the replay code and model source, LZMA-compressed
    container_bytes: int  # what a compressed file adds: header and block framing
    scoring: str  # "teacher-forced", or "step-wise" for a module that is not causal
    seconds: float
    config: dict[str, Any]
    baselines: dict[str, float] = dataclasses.field(default_factory=dict)  # name -> bits
    given: dict[str, Any] | None = None

    @property
    def data_bits(self) -> float:
        return float(self.segment_bits.sum())

    @property
    def total_bits(self) -> float:
        """The description length: code, container and the sum of per-token losses."""
        return self.data_bits + 8 * (self.code_bytes + self.container_bytes)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens seen, cumulative data bits) after each segment."""
        return np.cumsum(self.segment_tokens), np.cumsum(self.segment_bits)

    def to_dict(self) -> dict[str, Any]:
        tokens, bits = self.curve()
        n = max(self.n_tokens, 1)
        return {
            "schema": SCHEMA,
            "n_tokens": self.n_tokens,
            "vocab_size": self.vocab_size,
            "scoring": self.scoring,
            "data_bits": self.data_bits,
            "code_bytes": self.code_bytes,
            "container_bytes": self.container_bytes,
            "total_bits": self.total_bits,
            "data_bits_per_token": self.data_bits / n,
            "total_bits_per_token": self.total_bits / n,
            "seconds": self.seconds,
            "tokens_per_second": self.n_tokens / self.seconds if self.seconds else 0.0,
            "config": self.config,
            "baselines_bits": self.baselines,
            "curve": {"tokens": tokens.tolist(), "cumulative_bits": bits.tolist()},
            "given": self.given,
        }

    def format(self) -> str:
        n = max(self.n_tokens, 1)
        unit = "byte" if self.vocab_size == 256 else "token"
        rows = [
            ("tokens", f"{self.n_tokens:,}", "", f"vocabulary {self.vocab_size}, {self.scoring} scoring"),
            ("model code", f"{8 * self.code_bytes:,}", "bits", "LZMA of the replay code and model"),
            ("container", f"{8 * self.container_bytes:,}", "bits", "header and framing of a compressed file"),
            ("sum of losses", f"{self.data_bits:,.1f}", "bits", f"{self.data_bits / n:.4f} bits/{unit}"),
            ("total", f"{self.total_bits:,.1f}", "bits", f"{self.total_bits / n:.4f} bits/{unit}"),
        ]
        if self.config.get("blocks") or self.config.get("block_tokens"):
            rows += [
                (
                    f"block {i + 1}",
                    f"{bits:,.1f}",
                    "bits",
                    f"{tokens:,} tokens, {bits / max(tokens, 1):.4f} bits/{unit}" + (", uniform" if not i else ""),
                )
                for i, (bits, tokens) in enumerate(zip(self.segment_bits, self.segment_tokens, strict=True))
            ]
        rows += [(name, f"{bits:,.1f}", "bits", f"{bits / n:.4f} bits/{unit}") for name, bits in self.baselines.items()]
        if self.given:
            g = self.given
            rows += [
                ("L(Y|X)", f"{g['conditional_bits']:,.1f}", "bits", f"after training on X: {g['given_tokens']:,} tokens"),
                ("L(Y)", f"{g['alone_bits']:,.1f}", "bits", "from scratch"),
                ("saving", f"{g['saving_bits']:,.1f}", "bits", f"{g['saving_percent']:.2f} %"),
            ]
        if self.seconds:
            rows.append(("time", f"{self.seconds:.2f}", "s", f"{self.n_tokens / self.seconds / 1000:.2f} K tokens/s"))
        return accounting.itemized(rows)


def check_module(learner: Learner) -> bool:
    """Check a user's module's output shape (ConfigError if wrong); return whether it is causal."""
    c = learner.config
    rng = np.random.default_rng(7)
    window = rng.integers(0, c.vocab_size + 1, (c.streams, c.window), dtype=np.int32)
    params = learner.init().params
    try:
        logits = np.asarray(learner.module.apply(params, window))
    except Exception as err:  # a user's module may fail in any way; say so in one line
        raise ConfigError(f"the module failed on a (streams, window) = {window.shape} int32 batch: {err}") from None
    if logits.shape != (c.streams, c.window, c.vocab_size):
        raise ConfigError(f"the module must return logits of shape {(c.streams, c.window, c.vocab_size)}, it returned {logits.shape}")
    changed = window.copy()
    changed[:, c.memory + 1 :] = rng.integers(0, c.vocab_size + 1, changed[:, c.memory + 1 :].shape)
    moved = np.asarray(learner.module.apply(params, changed))
    return bool(np.array_equal(logits[:, : c.memory + 1], moved[:, : c.memory + 1]))


def container_bytes(config: Config, n_tokens: int) -> int:
    """Header and block framing of a compressed file of this config and length (the coder's own
    output is what the losses estimate)."""
    numerics = Numerics("cpu", "cpu", 1, bytes(4))
    dummy = container.Header(0, n_tokens, bytes(32), accounting.package_version(), bytes(4), bytes(4), numerics, bytes(8), config)
    framing = 0
    for plan in coder_blocks(config, n_tokens):
        # The word count's varint is sized for the most words a block can hold: an upper bound.
        framing += container.block_framing_bytes(plan.max_words, plan.n_sync, plan.last)
    return len(container.encode_header(dummy)) + framing


def _score(
    learner: Learner,
    tokens: np.ndarray,
    causal: bool,
    progress: Progress | None,
    carry: Carry | None,
    saver: checkpoints.Checkpointer | None = None,
    online: bool = False,
):
    """(bits, tokens) per segment, or per block of a block-wise code (unless `online`: training
    on given data is one online pass, as in compress), and the state it leaves."""
    store = ArrayStore(tokens)
    if learner.config.block_wise and not online:
        bits, carry = code_blocks(learner, len(tokens), store, None if causal else Scorer(), progress, carry)
        return bits, np.array([p.size for p in passes(learner.config, len(tokens))]), carry
    layout = Layout(len(tokens), learner.config.streams, learner.config.segment)
    resume = checkpoints.load(saver.path, saver.identity, learner)[1] if saver and saver.path.exists() else None
    hook = (lambda block_end: saver.maybe_save(block_end, {})) if saver else None
    if causal:
        bits, carry = train_pass(learner, layout, store, progress, carry, on_block=hook, resume=resume)
    else:
        result = replay(learner, layout, store, Scorer(), progress, carry, on_block=hook, resume=resume, record_segments=True)
        bits, carry = result.segment_bits, result.carry
    per_segment = layout.segment_tokens()
    return bits, per_segment, carry


def measure(
    data: bytes | np.ndarray,
    config: Config,
    *,
    module: nn.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
    given: bytes | np.ndarray | None = None,
    baselines: bool = True,
    progress: Progress | None = None,
    checkpoint: str | None = None,
    checkpoint_interval: float = 60.0,
) -> MeasureResult:
    """The description length of training `config`'s model (or `module` with `optimizer`) online
    on `data`; with `given`, after first training on that data (L(Y|X), with L(Y) alongside).
    With `checkpoint`, the pass over `data` saves its progress there and resumes from it."""
    started = time.perf_counter()
    config = resolve(config, module is not None)
    original = as_tokens(data, config.vocab_size)
    tokens = transform.encode_tokens(config, original)
    learner = learner_for(config, module, optimizer)
    causal = check_module(learner) if module is not None else True
    prior = as_tokens(given, config.vocab_size) if given is not None else None
    saver = None
    if checkpoint is not None and not config.resumable:
        raise ConfigError("checkpoints are for the one-pass online code without a replay buffer: drop the checkpoint")
    if checkpoint is not None:
        given_hex = None if prior is None else hashlib.sha256(prior.tobytes()).hexdigest()
        sha256 = hashlib.sha256(original.tobytes()).hexdigest()
        identity = checkpoints.identity(config, accounting.module_source(module), sha256, given_hex, numerics.current(), scoring=causal)
        saver = checkpoints.Checkpointer(checkpoint, identity, checkpoint_interval)
    carry, given_info = None, None
    if prior is not None and not (saver and saver.path.exists()):  # a checkpoint already holds what X taught
        carry = _score(learner, prior, causal, None, None, online=True)[2]
    bits, per_segment, _ = _score(learner, tokens, causal, progress, carry, saver)
    if saver is not None:
        saver.remove()
    if prior is not None:
        alone = _score(learner, tokens, causal, None, None)[0]
        saving = float(alone.sum() - bits.sum())
        given_info = {
            "given_tokens": len(prior),
            "conditional_bits": float(bits.sum()),
            "alone_bits": float(alone.sum()),
            "saving_bits": saving,
            "saving_percent": 100 * saving / float(alone.sum()) if alone.sum() else 0.0,
        }
    return MeasureResult(
        n_tokens=len(tokens),
        vocab_size=config.vocab_size,
        segment_bits=bits,
        segment_tokens=per_segment,
        code_bytes=accounting.model_code_bytes(accounting.module_source(module)),
        container_bytes=container_bytes(config, len(tokens)),
        scoring="teacher-forced" if causal else "step-wise",
        seconds=time.perf_counter() - started,
        config=config.to_dict(),
        baselines=baseline_bits(original, config.vocab_size) if baselines else {},
        given=given_info,
    )


def _adaptive_bits(tokens: np.ndarray, vocab_size: int, order: int) -> float:
    """Code length of an adaptive Laplace count model of the given order: p = (c + 1) / (n + V)."""
    if not len(tokens):
        return 0.0
    context = np.zeros(len(tokens), np.int64)
    for k in range(1, order + 1):
        context = context * (vocab_size + 1) + np.concatenate([np.full(k, vocab_size), tokens[:-k]])[: len(tokens)]
    pair = context * vocab_size + tokens
    return float(np.sum(np.log2(_seen_before(context) + vocab_size) - np.log2(_seen_before(pair) + 1)))


def _seen_before(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same key."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    rank = np.arange(len(keys)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(keys)]])))
    out = np.empty(len(keys), np.int64)
    out[order] = rank
    return out


def baseline_bits(tokens: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Reference code lengths of the same data: uniform, adaptive counts, and (bytes) the
    classical compressors of accounting.baselines."""
    out = {
        "uniform": len(tokens) * math.log2(vocab_size),
        "adaptive order-0": _adaptive_bits(tokens, vocab_size, 0),
        "adaptive order-2": _adaptive_bits(tokens, vocab_size, 2),
    }
    if vocab_size == 256:
        out |= {name: 8.0 * size for name, size in accounting.baselines(tokens.astype(np.uint8).tobytes()).items()}
    return out


def crossings(a: MeasureResult, b: MeasureResult) -> list[int]:
    """Tokens seen at which the cumulative description lengths (code included) of a and b cross,
    on a's segment grid (b's curve interpolated there)."""
    tokens, bits_a = a.curve()
    b_tokens, bits_b = b.curve()
    diff = (bits_a + 8 * a.code_bytes) - (np.interp(tokens, b_tokens, bits_b) + 8 * b.code_bytes)
    flips = np.flatnonzero(np.sign(diff[1:]) * np.sign(diff[:-1]) < 0) + 1
    return [int(tokens[i]) for i in flips]
