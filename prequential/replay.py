"""The replay engine: one loop that runs the seeded online training for both coder directions.

The input of n tokens is cut into B streams of `steps = ceil(n / B)` positions (the last streams
may be shorter or empty) and the positions into segments of T. For each segment the engine
scores every position of it, hands the coder the weights of the streams that have a token there,
and then takes one gradient step on the segment. The decoder scores a position of all streams at
a time (the M memory tokens cached first), since it learns each token only by decoding it; with
exact numerics the encoder scores the segment teacher-forced inside the gradient step, which
gives the same integers (with native numerics it steps like the decoder, so that both run the
same compiled functions with the same shapes in the same order). Only one segment and the memory
before it are held at a time, so memory does not grow with the input.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from prequential.coder import Coder
from prequential.config import Config
from prequential.counts import ContextCounts, CountInputs
from prequential.errors import DesyncError
from prequential.learner import Learner, TrainState, params_digest, with_memory
from prequential.store import OffsetStore, TokenStore

# Called after each segment with (tokens done, bits spent so far).
Progress = Callable[[int, float], None]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each of n tokens sits: stream b holds tokens [b*steps, (b+1)*steps)."""

    n_tokens: int
    streams: int
    segment: int

    @property
    def steps(self) -> int:
        return -(-self.n_tokens // self.streams)

    @property
    def segments(self) -> int:
        return -(-self.steps // self.segment)

    @functools.cached_property
    def _lengths(self) -> np.ndarray:
        lengths = np.clip(self.n_tokens - np.arange(self.streams) * self.steps, 0, self.steps)
        lengths.flags.writeable = False
        return lengths

    def lengths(self) -> np.ndarray:
        """(B,) tokens in each stream."""
        return self._lengths

    def valid(self, start: int, stop: int) -> np.ndarray:
        """(B, stop - start) mask of the positions in [start, stop) that hold a token."""
        positions = np.arange(start, stop)[None, :]
        return (positions >= 0) & (positions < self._lengths[:, None])

    def read(self, store: TokenStore, start: int, stop: int) -> np.ndarray:
        """(B, stop - start) int32 tokens at positions [start, stop) of every stream, zero where none."""
        out = np.zeros((self.streams, stop - start), np.int32)
        for b, length in enumerate(self._lengths):
            lo, hi = max(start, 0), min(stop, int(length))
            if hi > lo:
                out[b, lo - start : hi - start] = store.read(b * self.steps + lo, hi - lo)
        return out

    def write(self, store: TokenStore, start: int, grid: np.ndarray) -> None:
        """Store the tokens of `grid` (B, positions from `start`) that exist."""
        for b, length in enumerate(self._lengths):
            hi = min(start + grid.shape[1], int(length))
            if hi > start:
                store.write(b * self.steps + start, grid[b, : hi - start])

    def tokens_before(self, position: int) -> int:
        """Tokens at positions before `position`, over all streams."""
        return int(np.minimum(self._lengths, position).sum())

    def segment_tokens(self) -> np.ndarray:
        """(segments,) tokens in each segment, over all streams."""
        ends = np.minimum(self._lengths[None, :], (np.arange(self.segments)[:, None] + 1) * self.segment)
        return np.diff(ends.sum(axis=1), prepend=0)

    def is_sync_point(self, segment: int, sync_segments: int) -> bool:
        return (segment + 1) % sync_segments == 0 or segment == self.segments - 1

    def blocks(self, config: Config) -> Iterator[BlockPlan]:
        """The coder blocks, each with what a reader must know to parse it."""
        for start in range(0, self.segments, config.block_segments):
            segments = range(start, min(start + config.block_segments, self.segments))
            yield BlockPlan(
                segments=segments,
                n_sync=sum(self.is_sync_point(s, config.sync_segments) for s in segments),
                last=segments.stop == self.segments,
                max_words=len(segments) * config.segment * self.streams + 8,  # < 32 bits a token
            )


class BlockPlan(NamedTuple):
    segments: range
    n_sync: int
    last: bool
    max_words: int


@dataclasses.dataclass
class Carry:
    """What a pass hands on to the next one over more data: the learner's state and its counts;
    within a pass, also the memory states of the next segment (config.memory_cache)."""

    state: TrainState
    counts: ContextCounts | None
    memory: Any = None


@dataclasses.dataclass
class BlockEnd:
    """Where a pass stands at the end of a coder block: enough to go on from there. It holds the
    live state, not a copy (the count tables are large): the pass goes on updating it, so a
    checkpoint saves it before the pass continues."""

    next_segment: int
    carry: Carry
    ideal_bits: float  # bits of the segments before next_segment, summed in the order of the pass
    segment_bits: np.ndarray | None  # the same per segment, when the pass records them


# Called at the end of every coder block (a checkpoint may be written there).
OnBlock = Callable[[BlockEnd], None]


@dataclasses.dataclass
class ReplayResult:
    ideal_bits: float  # sum of -log2 p of every coded token, as the coder was given p
    segment_bits: np.ndarray | None  # (segments,) the same, per segment, if asked for
    carry: Carry


class _Window:
    """The model inputs of one segment: the M inputs before it, its T inputs, and the input after
    it (the last token, which the next segment starts from). An input is the token before its
    position, or the start symbol (at position 0, and past the end of a stream)."""

    def __init__(self, layout: Layout, store: TokenStore, segment: int, memory: int, start_symbol: int) -> None:
        self.memory, self.length, self.start_symbol = memory, layout.segment, start_symbol
        self.inputs = np.full((layout.streams, memory + layout.segment + 1), start_symbol, np.int32)
        first = segment * layout.segment  # the inputs before it are the tokens at [first - M - 1, first)
        known = layout.read(store, first - memory - 1, first)
        self.inputs[:, : memory + 1] = np.where(layout.valid(first - memory - 1, first), known, start_symbol)

    def model_inputs(self) -> np.ndarray:
        """(B, M + T): what the model sees for the segment. A copy: a jitted call may read its
        host arguments after it returns (split over devices, it did), and advance() overwrites
        these inputs in place."""
        return self.inputs[:, :-1].copy()

    def input_at(self, i: int) -> np.ndarray:
        return self.inputs[:, self.memory + i]

    def put(self, rows: np.ndarray, i: int, tokens: np.ndarray) -> None:
        self.inputs[rows, self.memory + i + 1] = tokens

    def advance(self) -> None:
        """Move on to the next segment."""
        self.inputs[:, : self.memory + 1] = self.inputs[:, self.length :]
        self.inputs[:, self.memory + 1 :] = self.start_symbol


def new_counts(config: Config, streams: int) -> ContextCounts | None:
    return ContextCounts(config, streams) if config.count_channels else None


def _begin(learner: Learner, layout: Layout, carry: Carry | None, resume: BlockEnd | None, record: bool) -> BlockEnd:
    """Where a pass starts: from the seed, from the state and counts a pass over other data left
    (`carry`), or from a block_end of this pass (`resume`)."""
    if resume is not None:
        bits = None if resume.segment_bits is None else resume.segment_bits.copy()
        return BlockEnd(resume.next_segment, resume.carry, resume.ideal_bits, bits)
    # A pass starts from memory states of nothing, as its window starts from start symbols.
    if carry is None:
        carry = Carry(learner.init(), new_counts(learner.config, layout.streams), learner.initial_memory())
    else:
        carry = Carry(carry.state, carry.counts, learner.initial_memory())
    return BlockEnd(0, carry, 0.0, np.zeros(layout.segments) if record else None)


def _segment_counts(config: Config, streams: int) -> CountInputs:
    """Zeros for the count inputs of one segment; positions past the end of the data stay zero."""
    shape = (streams, config.segment, config.count_channels)
    return CountInputs(np.zeros((*shape, config.vocab_size), np.uint16), np.zeros((*shape, 3), np.int32))


def replay(
    learner: Learner,
    layout: Layout,
    tokens: TokenStore,
    coder: Coder | None = None,
    progress: Progress | None = None,
    carry: Carry | None = None,
    *,
    on_block: OnBlock | None = None,
    resume: BlockEnd | None = None,
    record_segments: bool = False,
    learn: bool = True,
) -> ReplayResult:
    """Run the seeded online training over the stream: score each segment, code it, train on it.

    An encoding coder codes the tokens read from `tokens`; a decoding one decodes them and they
    are written there; without a coder the pass only scores (measure, or training on given
    data). A segment is scored step by step (`prefill` and `step`, one position of every stream
    at a time) where a decoder must, and otherwise teacher-forced by `train` itself; with exact
    numerics the two give the same integers, so only the decoder steps, and it checks that its
    weights are the ones `train` then computes. With native numerics an encoder steps too, so
    that both sides run the same compiled functions in the same order.
    `carry` continues from a pass over other data; `on_block` sees a block_end after every
    block; `resume` goes on from one; `record_segments` keeps the bits per segment; without
    `learn`, the model only scores (a block-wise code's frozen model).
    """
    config = learner.config
    T = config.segment
    exact = config.numerics == "exact"
    decodes = coder is not None and coder.decodes
    step_wise = coder is not None and (decodes or not exact)
    begin = _begin(learner, layout, carry, resume, record_segments)
    state, counts, memory = begin.carry.state, begin.carry.counts, begin.carry.memory
    ideal_bits, segment_bits = begin.ideal_bits, begin.segment_bits
    window = _Window(layout, tokens, begin.next_segment, config.memory, config.vocab_size)
    buffer = ReplayBuffer(config.replay_buffer) if config.replay_steps else None

    def host_work(s: int, state: TrainState | None, memory: Any) -> _Segment:
        """A segment's work before its training step: read its tokens (or decode them step by
        step from `state` and `memory`) and look up its counts."""
        first = s * T
        valid = layout.valid(first, first + T)
        segment = np.zeros((layout.streams, T), np.int32) if decodes else layout.read(tokens, first, first + T)
        segment_counts = None if counts is None else _segment_counts(config, layout.streams)
        steps = min(T, layout.steps - first)
        used = _step_through(learner, state, window, memory, counts, segment_counts, coder if step_wise else None, segment, valid, steps)
        if decodes:
            layout.write(tokens, first, segment)
        return _Segment(segment, valid, segment_counts, used)

    for block in layout.blocks(config):
        if block.segments.stop <= begin.next_segment:
            continue  # done before the block_end we resume from
        if coder is not None:
            coder.begin_block(block.n_sync, block.last, block.max_words)
        ahead = None
        for s in block.segments:
            segment, valid, segment_counts, used = host_work(s, state, memory) if ahead is None else ahead
            inputs = with_memory(window.model_inputs(), memory)
            if learn:
                state, train_bits, weights, memory = learner.train(state, inputs, segment, valid, segment_counts)
                state = more_updates(learner, state, buffer, s, (inputs, segment, valid, segment_counts))
            else:
                train_bits, weights, memory = learner.score(state, inputs, segment, valid, segment_counts)
            window.advance()
            # Without steps, the next segment's host work needs no model state: it runs while
            # this step computes (on other cores, or a GPU), before its results are read. Not
            # past the block, whose end (a checkpoint) holds the counts as of its last segment.
            ahead = host_work(s + 1, None, None) if not step_wise and s + 1 < block.segments.stop else None
            # The bits of the weights coded: exact, the training step's (multiples of 2**-16, so
            # their float64 sum is exact); native step-wise, those of the step's float weights.
            bits = coded_bits(used, segment, valid) if step_wise and not exact else float(np.asarray(train_bits, np.float64)[valid].sum())
            if exact and step_wise:
                _check_agreement(used, np.asarray(weights), valid, s)
            elif coder is not None and not step_wise:
                order = valid.T  # position by position, as the decoder decodes them
                coder.code(np.asarray(weights).transpose(1, 0, 2)[order], segment.T[order])
            ideal_bits += bits
            if segment_bits is not None:
                segment_bits[s] = bits
            if coder is not None and layout.is_sync_point(s, config.sync_segments):
                coder.sync(params_digest(state.params), s)
            if progress:
                progress(layout.tokens_before((s + 1) * T), ideal_bits)
        if coder is not None:
            coder.end_block(ideal_bits)
        if on_block:
            on_block(BlockEnd(block.segments.stop, Carry(state, counts, memory), ideal_bits, segment_bits))
    return ReplayResult(ideal_bits, segment_bits, Carry(state, counts, memory))


class _Segment(NamedTuple):
    """One segment's inputs to its training step, and the coder weights its steps used (or None)."""

    tokens: np.ndarray  # (B, T)
    valid: np.ndarray  # (B, T)
    counts: CountInputs | None  # counts (B, T, K, V) and their summary
    used: np.ndarray | None  # (B, T, V)


def _step_through(
    learner: Learner, state: TrainState, window: _Window, memory, counts, segment_counts, coder: Coder | None, segment, valid, steps: int
):
    """Go through one segment a position at a time: look up its counts, and with a coder score
    the position step-wise and code it; then enter its tokens in the window and the counts.
    Returns the weights the coder was given (B, T, V), or None without a coder (the tokens are
    known and `train` scores them). Decoded tokens are written into `segment`. `memory` holds the
    memory states (config.memory_cache) that the cache is made from with the memory tokens."""
    config = learner.config
    M = config.memory
    if coder is not None:
        variables = learner.prepare(state)
        cache = learner.prefill(variables, with_memory(window.model_inputs()[:, :M], memory))
        used = np.zeros((segment.shape[0], config.segment, config.vocab_size), np.float32)
    found = None
    for i in range(steps):
        active = valid[:, i]
        if counts is not None:
            found = counts.lookup()
            segment_counts.counts[:, i], segment_counts.summary[:, i] = found.inputs
        if coder is not None:
            weights, cache = learner.step(variables, cache, window.input_at(i), M + i, None if found is None else found.inputs)
            used[:, i] = weights = np.asarray(weights)
            segment[active, i] = coder.code(weights if active.all() else weights[active], segment[active, i])
        coded = segment[active, i]
        window.put(active, i, coded)
        if counts is not None:
            counts.update(found, active, coded)
    return used if coder is not None else None


class ReplayBuffer:
    """The training inputs of the last `size` segments, for steps on earlier data (Bornschein et
    al. 2022's replay buffer). Both sides hold the same segments and draw the same ones."""

    def __init__(self, size: int) -> None:
        self.size, self.entries = size, []

    def add(self, entry: tuple) -> None:
        self.entries = [*self.entries[-(self.size - 1) :], entry] if self.size > 1 else [entry]

    def draw(self, seed: int, segment: int, count: int) -> list[tuple]:
        """`count` segments drawn uniformly from the buffer, from the seed and the segment's
        index: numpy's PCG64 gives the same integers on every platform."""
        picks = np.random.default_rng([seed, segment]).integers(0, len(self.entries), count)
        return [self.entries[i] for i in picks]


def more_updates(learner: Learner, state: TrainState, buffer: ReplayBuffer | None, segment: int, entry: tuple) -> TrainState:
    """After the step that scored the segment: the config's further steps on it, then steps on
    segments replayed from the buffer (which it then joins)."""
    config = learner.config
    for _ in range(config.updates - 1):
        state = learner.train(state, *entry)[0]
    if buffer is not None:
        buffer.add(entry)
        for replayed in buffer.draw(config.seed, segment, config.replay_steps):
            state = learner.train(state, *replayed)[0]
    return state


def coded_bits(weights: np.ndarray, tokens: np.ndarray, valid: np.ndarray) -> float:
    """The sum of -log2 p over the coded positions, p the coder weights normalized (float64)."""
    weights = weights[valid].astype(np.float64)
    chosen = np.maximum(weights[np.arange(len(weights)), tokens[valid]], np.finfo(np.float32).tiny)
    return float(-np.log2(chosen / weights.sum(-1)).sum())


def _check_agreement(used: np.ndarray, weights: np.ndarray, valid: np.ndarray, segment: int) -> None:
    """With exact numerics, the weights a decoder computed step by step are the ones the
    teacher-forced pass computes: anything else is a bug, refused at once."""
    if not np.array_equal(used[valid], weights[valid]):
        raise DesyncError(f"decoding diverged at segment {segment}: step-wise and teacher-forced scores differ (a bug)")


def train_pass(
    learner: Learner, layout: Layout, tokens: TokenStore, progress: Progress | None = None, carry: Carry | None = None, **options
) -> tuple[np.ndarray, Carry]:
    """The online training alone, scored teacher-forced before each update and not coded:
    (bits per segment, the state it hands on). It is `replay` without a coder."""
    result = replay(learner, layout, tokens, None, progress, carry, record_segments=True, **options)
    return result.segment_bits, result.carry


# --- the block-wise code (Voita & Titov 2020; Blier & Ollivier 2018) ----------------------------


@dataclasses.dataclass(frozen=True)
class Pass:
    """Tokens [start, stop) of the input, coded in one go: online (the whole input, learning as
    it goes), uniformly (a block-wise code's first block), or by a frozen model trained on the
    tokens before `start` (its later blocks)."""

    start: int
    stop: int
    kind: str  # "online", "uniform" or "frozen"

    @property
    def size(self) -> int:
        return self.stop - self.start


def block_bounds(config: Config, n_tokens: int) -> list[int]:
    """Where the blocks end: the config's fractions of n_tokens (rounded down) or token counts,
    then n_tokens; blocks that would be empty are dropped."""
    cuts = [math.floor(f * n_tokens) for f in config.blocks] if config.blocks else list(config.block_tokens)
    bounds: list[int] = []
    for cut in [*cuts, n_tokens]:
        cut = min(cut, n_tokens)
        if cut > (bounds[-1] if bounds else 0):
            bounds.append(cut)
    return bounds


def passes(config: Config, n_tokens: int) -> list[Pass]:
    """The passes that code an input of n_tokens: one online pass, or a block-wise code's blocks."""
    if not config.block_wise:
        return [Pass(0, n_tokens, "online")]
    bounds = block_bounds(config, n_tokens)
    return [Pass(a, b, "frozen" if a else "uniform") for a, b in zip([0, *bounds], bounds, strict=False)]


def coder_blocks(config: Config, n_tokens: int) -> Iterator[BlockPlan]:
    """Every coder block of a file, in order: what a reader needs to parse it without decoding.
    Each pass ends with a last block, which records that pass's ideal bits."""
    for p in passes(config, n_tokens):
        if p.kind == "uniform":
            yield BlockPlan(range(0), 0, True, p.size + 8)
        else:
            yield from Layout(p.size, config.streams, config.segment).blocks(config)


_UNIFORM_CHUNK = 4096  # tokens a uniform call codes at once (bounds the weights array)


def code_uniform(coder: Coder | None, tokens: TokenStore, n_tokens: int, vocab_size: int) -> float:
    """Code n_tokens with the uniform distribution; return their bits, n log2 V."""
    if coder is not None:
        coder.begin_block(0, True, n_tokens + 8)
        for start in range(0, n_tokens, _UNIFORM_CHUNK):
            count = min(_UNIFORM_CHUNK, n_tokens - start)
            known = np.zeros(count, np.int32) if coder.decodes else tokens.read(start, count)
            coded = coder.code(np.ones((count, vocab_size), np.float32), known)
            if coder.decodes:
                tokens.write(start, coded)
    bits = n_tokens * math.log2(vocab_size)
    if coder is not None:
        coder.end_block(bits)
    return bits


def _train_on(learner: Learner, tokens: TokenStore, n_tokens: int, state: TrainState) -> Carry:
    """Train on tokens [0, n_tokens) for the config's epochs, each a pass in the online order
    with counts from zero (so the model sees the counts it sees online); stop early when the
    config's rule says so. Returns the state and the counts of the last pass."""
    config = learner.config
    layout = Layout(n_tokens, config.streams, config.segment)
    previous = math.inf
    for _ in range(config.epochs):
        bits, carry = train_pass(learner, layout, tokens, carry=Carry(state, new_counts(config, layout.streams)))
        state, loss = carry.state, float(bits.sum())
        if stops_early(config, previous, loss):
            break
        previous = loss
    return carry


def stops_early(config: Config, previous: float, loss: float) -> bool:
    """The block-wise code's early-stop rule: a pass over the earlier blocks lowered the loss of
    the pass before it by less than the fraction config.early_stop (0: never)."""
    return bool(config.early_stop) and previous - loss < config.early_stop * previous


def _copy_state(state: TrainState) -> TrainState:
    """A copy of a state whose buffers a training step may not consume (`train` donates its own)."""
    return jax.tree_util.tree_map(lambda leaf: leaf.copy(), state)


def code_blocks(
    learner: Learner,
    n_tokens: int,
    tokens: TokenStore,
    coder: Coder | None = None,
    progress: Progress | None = None,
    carry: Carry | None = None,
) -> tuple[np.ndarray, Carry | None]:
    """The block-wise code: the first block uniform, then each block scored (and coded) by a
    model trained on all blocks before it, from the seed (or from `carry`, what training on given
    data left) or, with block_init "continue", from the model of the block before. Returns the
    bits of each block and the last block's state and counts."""
    config = learner.config
    origin = carry.state if carry is not None else None
    bits, state, last = [], None, None
    for p in passes(config, n_tokens):
        store = OffsetStore(tokens, p.start)
        if p.kind == "uniform":
            bits.append(code_uniform(coder, store, p.size, config.vocab_size))
        else:
            if state is None or config.block_init == "seed":
                state = learner.init() if origin is None else _copy_state(origin)
            last = _train_on(learner, tokens, p.start, state)
            state = last.state
            shown = None if progress is None else functools.partial(_offset_progress, progress, p.start, sum(bits))
            bits.append(replay(learner, Layout(p.size, config.streams, config.segment), store, coder, shown, last, learn=False).ideal_bits)
        if progress is not None:
            progress(p.stop, sum(bits))
    return np.array(bits), last


def _offset_progress(progress: Progress, tokens_before: int, bits_before: float, tokens: int, bits: float) -> None:
    progress(tokens_before + tokens, bits_before + bits)


def code(
    learner: Learner,
    n_tokens: int,
    tokens: TokenStore,
    coder: Coder,
    progress: Progress | None = None,
    carry: Carry | None = None,
    **options,
) -> np.ndarray:
    """Code (or decode) a whole input with the config's estimator; return the ideal bits of each
    pass (one online pass, or each block). `options` (on_block, resume) are the online replay's:
    a block-wise code has no checkpoints."""
    config = learner.config
    if config.block_wise:
        return code_blocks(learner, n_tokens, tokens, coder, progress, carry)[0]
    layout = Layout(n_tokens, config.streams, config.segment)
    return np.array([replay(learner, layout, tokens, coder, progress, carry, **options).ideal_bits])
