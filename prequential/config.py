"""Every hyperparameter the decoder must replay, in one frozen dataclass, and the named presets.

The config is written to the file header (as a preset name plus the fields that differ from it)
and read back, so a decoder needs nothing but the file and the same package version.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from prequential.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Config:
    # Tokens: the alphabet the coder codes; the model also sees one extra start symbol.
    vocab_size: int = 256
    # Model: a pre-norm causal transformer.
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 512
    # Count mixing: adaptive counts of the bytes that followed each context of 1..count_orders
    # bytes (counts.py) are mixed into the model's logits with learned, per-position weights.
    count_orders: int = 6  # byte contexts of 1..count_orders bytes
    count_sparse: int = 1  # 1: also the 2nd last byte, and the 2nd and 3rd last bytes
    count_words: int = 2  # 1: also the current word, and the previous word with it; 2: also the two previous words with it
    count_columns: int = 1  # 1: also the byte above (same column, previous line) with the last byte, and with the column
    # 1: in a font or 16-bit audio (its first 12 bytes say so), the column and word channels key
    # instead on the data's 16- and 32-bit fields (counts.py).
    count_fields16: int = 1
    count_records: int = 1  # 1: also the bytes one and two detected record lengths back, with the last byte and together
    count_indirect: int = 1  # 1: also the last two bytes with the two bytes that followed them the last two times; 2: also the last byte
    count_shape: int = 1  # 1: also the classes (letter, digit, space, ...) of the last 8 bytes with the last byte
    count_order0: int = 1  # 1: also the empty context (how often each byte occurred)
    count_nest: int = 1  # 1: also the innermost two open brackets or quotes, and how many are open, with the last byte
    match_model: int = 1  # 1: also the byte after the last occurrence of the last 8 bytes in the same stream
    match_window_log2: int = 22  # the match model reads back up to 2**this tokens of each stream
    count_rows_log2: int = 19  # rows of each long-context channel: 2**19 rows of 256 one-byte counts
    count_limit: int = 248  # halve a context's counts when one reaches this
    count_decay: int = 12  # in long contexts, pull other bytes' counts above this halfway down; 0: off
    count_decay_from: int = 5  # byte contexts this long or longer (and word contexts) decay
    count_own_order: int = 3  # each stream keeps its own counts for the byte context of this length (0: none)
    count_alpha: float = 0.025  # additive smoothing of each count distribution
    count_weight: float = 0.2  # initial mixing weight of each channel (16 channels: 0.3 starts overconfident)
    count_states: int = 1  # calibration of counts per context state (model.py): 0 none, 1 cheap, 2 full
    count_select: int = 1  # 1: the mixing weights also get a learned offset per last byte
    count_state_rate: float = 10.0  # how many times faster than the rest those small tables learn
    count_stream_rate: float = 5.0  # each stream's mixing weights get an offset learning this many times faster (0: off)
    count_weight_rate: float = 0.5  # how many times as fast as the rest the mixing weights' linear map learns (slower: item 18 of ratio.md)
    # Preprocessing (transform.py): 1 codes executables (ELF, PE, Mach-O) with their x86 call and
    # jump offsets made absolute, which repeats them.
    x86_filter: int = 1
    # Schedule: the input is cut into `streams` equal parallel streams; after every `segment`
    # steps the model takes one gradient step on the tokens just coded. Each token attends to the
    # `memory` tokens before its segment plus the segment so far.
    streams: int = 8
    segment: int = 32
    memory: int = 32
    # 1: the later layers' inputs at the memory positions are the ones the previous segment's
    # training step computed (Transformer-XL's cache, without gradient), not recomputed from the
    # memory tokens every segment (0). A one-layer model recomputes nothing either way.
    memory_cache: int = 1
    # Optimizer: Adam with per-parameter clipping, a linear warm-up of the learning rate, and its
    # decay as 1 / sqrt(1 + tokens / lr_decay_tokens) over the tokens trained on.
    learning_rate: float = 2.5e-4
    warmup_segments: int = 0
    lr_decay_tokens: int = 128000  # 0: no decay
    adam_b1: float = 0.0
    adam_b2: float = 0.9999
    adam_eps: float = 1e-8
    grad_clip: float = 0.0  # clip each gradient element to [-c, c]; 0 turns it off
    seed: int = 0
    # Estimator (docs/estimators.md): how the weights that code each token were trained.
    # Block-wise code (Voita & Titov): the data is cut at these fractions of its length (or, with
    # `block_tokens`, these token counts); the first block is coded uniformly, and each later
    # one by a model trained on all blocks before it, from the seed or from the previous model.
    blocks: tuple[float, ...] = ()  # (): one-pass online code
    block_tokens: tuple[int, ...] = ()
    block_init: str = "seed"  # "seed": every block's model starts from the seed; "continue": from the previous one
    epochs: int = 1  # passes over the earlier blocks before coding the next
    early_stop: float = 0.0  # stop before `epochs` once a pass lowers the training loss by less than this fraction; 0: off
    # One-pass online code, as Bornschein et al. 2022 refine it: several updates on each segment,
    # steps on segments replayed from a buffer (drawn from the seed), scoring with an exponential
    # moving average of the parameters, and forward calibration of a temperature.
    updates: int = 1  # gradient steps on each segment just coded
    replay_buffer: int = 0  # segments kept for replay
    replay_steps: int = 0  # steps per segment on segments drawn from the buffer
    ema_decay: float = 0.0  # score with an EMA of the parameters of this decay per update; 0: off
    calibrate: int = 0  # 1: code with the temperature of a fixed grid that coded the past best
    # Numerics (ops.py): "exact" computes every probability and parameter from integers, so a
    # file decodes bit-exactly on any machine; "native" is XLA's float32 (faster to write a
    # model for, but it decodes only where the encoder's floats are reproduced).
    numerics: str = "exact"
    # Container: a parameter hash every `sync_segments` segments lets the decoder detect a
    # divergence early; the range coder is flushed every `block_segments` segments.
    sync_segments: int = 256
    block_segments: int = 4096

    @property
    def count_channels(self) -> int:
        """Count distributions mixed into each prediction (0: no count models)."""
        pairs = self.count_sparse + self.count_columns + self.count_records  # options that add two channels each
        singles = self.count_indirect + self.count_shape + self.count_order0 + self.count_nest + self.match_model
        return self.count_orders + 2 * pairs + self.word_channels + singles

    @property
    def word_channels(self) -> int:
        """Word contexts: the current word, then one more per previous word it is joined with."""
        return self.count_words + 1 if self.count_words else 0

    @property
    def caches_memory(self) -> bool:
        """Whether segments hand memory states on (memory_cache, with a layer after the first)."""
        return bool(self.memory_cache) and self.n_layers > 1

    @property
    def window(self) -> int:
        """Tokens the model sees in one training example: memory plus segment."""
        return self.memory + self.segment

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        """Raise ConfigError naming the first field out of range; return self when all are fine."""
        for field, (low, high) in _INT_BOUNDS.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"config field {field!r} must be an integer in [{low}, {high}], got {value!r}")
        for field, (low, high) in _FLOAT_BOUNDS.items():
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"config field {field!r} must be a finite number, got {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"config field {field!r} must be in [{low}, {high}], got {value!r}")
        if self.numerics not in NUMERICS:
            raise ConfigError(f"config field 'numerics' must be one of {', '.join(NUMERICS)}, got {self.numerics!r}")
        if self.learning_rate <= 0:
            raise ConfigError(f"config field 'learning_rate' must be positive, got {self.learning_rate!r}")
        if self.count_channels and self.vocab_size > 256:
            raise ConfigError(
                "config fields 'count_orders', 'count_sparse', 'count_words', 'count_columns', 'count_records', 'count_indirect', "
                "'count_shape', 'count_order0', 'count_nest', 'match_model' must be 0 when 'vocab_size' exceeds 256"
            )
        self._validate_estimator()
        if self.d_model % self.n_heads:
            raise ConfigError(f"config field 'd_model' ({self.d_model}) must be a multiple of 'n_heads' ({self.n_heads})")
        return self

    def _validate_estimator(self) -> None:
        if self.blocks and self.block_tokens:
            raise ConfigError("config fields 'blocks' and 'block_tokens' exclude each other: give fractions or token counts")
        for value in self.blocks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"config field 'blocks' must hold fractions in (0, 1], got {value!r}")
        for value in self.block_tokens:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"config field 'block_tokens' must hold token counts of at least 1, got {value!r}")
        for field in ("blocks", "block_tokens"):
            values = getattr(self, field)
            if any(b <= a for a, b in itertools.pairwise(values)):
                raise ConfigError(f"config field {field!r} must be strictly increasing, got {list(values)}")
        if self.block_init not in BLOCK_INITS:
            raise ConfigError(f"config field 'block_init' must be one of {', '.join(BLOCK_INITS)}, got {self.block_init!r}")
        if self.block_wise:
            online_only = [f for f in ("updates", "replay_steps", "ema_decay", "calibrate") if getattr(self, f) != getattr(Config, f)]
            if online_only:
                raise ConfigError(
                    f"config field {online_only[0]!r} applies to the one-pass online code; 'blocks' asks for the block-wise one"
                )
        if self.replay_steps and not self.replay_buffer:
            raise ConfigError("config field 'replay_steps' needs 'replay_buffer' of at least 1 (the segments it draws from)")
        if self.calibrate and self.streams * self.segment > 4096:
            raise ConfigError("config field 'calibrate' needs at most 4096 tokens a segment ('streams' x 'segment')")

    @property
    def block_wise(self) -> bool:
        return bool(self.blocks or self.block_tokens)

    @property
    def resumable(self) -> bool:
        """Whether a pass can resume from a checkpoint: one online pass whose state is the
        learner's and the counts' (a replay buffer is not saved)."""
        return not self.block_wise and not self.replay_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NUMERICS = ("exact", "native")
# The fields that turn every count channel off: a user's module, or a transformer alone.
NO_COUNTS = {
    "count_orders": 0,
    "count_sparse": 0,
    "count_words": 0,
    "count_columns": 0,
    "count_records": 0,
    "count_indirect": 0,
    "count_shape": 0,
    "count_order0": 0,
    "count_nest": 0,
    "match_model": 0,
}
BLOCK_INITS = ("seed", "continue")
# Voita & Titov's split: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25, 50 and 100 % of the data.
VOITA_TITOV_BLOCKS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.0625, 0.125, 0.25, 0.5, 1.0)
# Bounds keep a hostile header from asking for absurd allocations.
_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (2, 65536),
    "n_layers": (1, 64),
    "d_model": (1, 8192),
    "n_heads": (1, 256),
    "d_ff": (1, 65536),
    "streams": (1, 4096),
    "segment": (1, 4096),
    "memory": (1, 16384),
    "count_orders": (0, 7),
    "count_sparse": (0, 1),
    "count_words": (0, 2),
    "count_columns": (0, 1),
    "count_fields16": (0, 1),
    "count_records": (0, 1),
    "count_indirect": (0, 2),
    "count_shape": (0, 1),
    "count_order0": (0, 1),
    "count_nest": (0, 1),
    "x86_filter": (0, 1),
    "match_model": (0, 1),
    "count_rows_log2": (4, 24),
    "match_window_log2": (8, 26),
    "count_states": (0, 2),
    "count_select": (0, 1),
    "count_limit": (2, 60000),
    "count_decay": (0, 60000),
    "count_decay_from": (1, 7),
    "count_own_order": (0, 7),
    "warmup_segments": (0, 2**31 - 1),
    "lr_decay_tokens": (0, 2**31 - 1),
    "seed": (0, 2**31 - 1),
    "sync_segments": (1, 2**31 - 1),
    "block_segments": (1, 2**31 - 1),
    "epochs": (1, 10**6),
    "updates": (1, 10**4),
    "replay_buffer": (0, 10**6),
    "replay_steps": (0, 10**4),
    "calibrate": (0, 1),
    "memory_cache": (0, 1),
}
_FLOAT_BOUNDS: dict[str, tuple[float, float]] = {
    "learning_rate": (0.0, 10.0),
    "adam_b1": (0.0, 0.999999),
    "adam_b2": (0.0, 0.999999999),
    "adam_eps": (0.0, 1.0),
    "grad_clip": (0.0, 1e9),
    "count_alpha": (1e-6, 1e3),
    "count_weight": (-100.0, 100.0),
    "count_state_rate": (1e-3, 1e3),
    "count_weight_rate": (1e-3, 1e3),
    "count_stream_rate": (0.0, 1e3),
    "early_stop": (0.0, 1.0),
    "ema_decay": (0.0, 0.999999),
}

PRESETS: dict[str, Config] = {
    # For tests: compiles in seconds and codes about 10 KB/s on one core.
    "tiny": Config(
        n_layers=1,
        d_model=32,
        n_heads=2,
        d_ff=64,
        streams=4,
        segment=8,
        memory=8,
        learning_rate=3e-3,
        count_orders=3,
        count_rows_log2=12,
        # Its learning rate is 12 times the default's: tables keyed by the last byte, and more
        # channels, learn too fast and too little at that rate (12 KB: 3.10 to 3.47 bits/byte with
        # the indirect contexts and the selection); the tests turn them on where they check them.
        count_indirect=0,
        count_select=0,
        count_stream_rate=0.0,
        count_shape=0,
        count_order0=0,
        count_nest=0,
        sync_segments=4,
    ),
    # A narrower, one-layer transformer: faster, and better on the first few KB.
    "small": Config(n_layers=1, d_model=64, n_heads=2, d_ff=256),
    # Sized for a 2-core CPU (its speed on one core: docs/benchmarks.md).
    "default": Config(),
    # Stronger and slower: one stream, updated every 16 tokens (16 times the updates per byte of
    # the default) at a lower learning rate, and twice the count rows; every count model of the
    # default, exact numerics. Each of those helped on all six kinds of files screened (100 KB
    # each: prose, a word list, a shared library, C, CSV, Chinese; docs/ratio.md, item 19), where
    # the full calibration of counts (count_states = 2) bought 0.1-0.3 % at a third of the speed.
    # A sync hash every 4096 segments: 64 K tokens, as the default's 256 of 8 x 32.
    "strong": Config(streams=1, segment=16, learning_rate=1e-4, count_rows_log2=20, sync_segments=4096, count_stream_rate=0.0),
    # NNCP's default transformer shape (4 layers, d_model 256): much slower, barely stronger here.
    "large": Config(n_layers=4, d_model=256, n_heads=8, d_ff=1024),
    # For a GPU (--backend gpu): 25 M parameters, and 64 streams so that each step codes 64 bytes.
    "xl": Config(n_layers=8, d_model=512, n_heads=8, d_ff=2048, streams=64, learning_rate=1.5e-4),
}


# The estimators of the MDL literature, as the config fields that make them (docs/estimators.md);
# `compare --estimators` sets each on the same model.
ESTIMATORS: dict[str, dict[str, Any]] = {
    "online": {},  # one pass, one update per segment (Rae; Blier & Ollivier's prequential code, online)
    "blocks": {"blocks": VOITA_TITOV_BLOCKS},  # Voita & Titov 2020: each block's model from the seed
    "blocks-continue": {"blocks": VOITA_TITOV_BLOCKS, "block_init": "continue"},
    "replay": {"replay_buffer": 64, "replay_steps": 1},  # Bornschein et al. 2022: a replay buffer
    "ema": {"ema_decay": 0.99},
    "calibrated": {"calibrate": 1},  # forward calibration of a temperature
    "mir": {"replay_buffer": 64, "replay_steps": 1, "ema_decay": 0.99, "calibrate": 1},  # all three, as their MIR
}


def estimator(name: str, config: Config) -> Config:
    """`config` with the named estimator's fields."""
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    return config.replace(**ESTIMATORS[name]).validate()


def preset(name: str) -> Config:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def resolve(config: Config | str, user_module: bool = False) -> Config:
    """The validated config of a run (a preset name or a Config). A user's Flax module runs in
    native numerics (it is written with float operations, not with the exact op set) and
    without cached memory states (this package's transformer computes them)."""
    config = preset(config) if isinstance(config, str) else config.validate()
    return config.replace(numerics="native", memory_cache=0) if user_module else config


def from_dict(values: dict[str, Any], base: Config | None = None) -> Config:
    """Build a validated config from a mapping; an optional "preset" key names the base."""
    values = dict(values)
    name = values.pop("preset", None)
    if name is not None:
        if not isinstance(name, str):
            raise ConfigError(f"config field 'preset' must be a string, got {name!r}")
        base = preset(name)
    base = base or PRESETS["default"]
    known = {f.name: f.type for f in dataclasses.fields(Config)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown config field {key!r}")
        if known[key] == "float" and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif known[key].startswith("tuple"):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"config field {key!r} must be a list, got {value!r}")
            values[key] = tuple(
                float(v) if known[key] == "tuple[float, ...]" and isinstance(v, int) and not isinstance(v, bool) else v for v in value
            )
    return base.replace(**values).validate()


def load(path: str | Path, base: Config | None = None) -> Config:
    """Read a TOML (.toml) or JSON config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err.strerror}") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} does not parse: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of fields")
    return from_dict(values, base)


def to_compact(config: Config) -> tuple[str, str]:
    """(preset name, JSON of the fields that differ from it), choosing the preset with fewest diffs."""
    fields = config.to_dict()
    diffs = {name: {k: v for k, v in fields.items() if getattr(candidate, k) != v} for name, candidate in PRESETS.items()}
    name = min(diffs, key=lambda n: len(diffs[n]))  # the first of the closest presets
    return name, json.dumps(diffs[name], separators=(",", ":"), sort_keys=True) if diffs[name] else ""


def from_compact(name: str, overrides: str) -> Config:
    """Inverse of to_compact; raises ConfigError on anything malformed."""
    try:
        values = json.loads(overrides) if overrides else {}
    except json.JSONDecodeError:
        raise ConfigError("config overrides in the header are not valid JSON") from None
    if not isinstance(values, dict):
        raise ConfigError("config overrides in the header are not a table")
    if "preset" in values:
        raise ConfigError("config overrides in the header name a preset")
    return from_dict(values, preset(name))
