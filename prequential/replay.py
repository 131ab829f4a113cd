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
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from prequential.coder import Coder
from prequential.config import Config
from prequential.counts import ContextCounts
from prequential.errors import DesyncError
from prequential.learner import Learner, TrainState, params_digest
from prequential.store import TokenStore

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
    """What a pass hands on to the next one over more data: the learner's state and its counts."""

    state: TrainState
    counts: ContextCounts | None


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
    if carry is None:
        carry = Carry(learner.init(), new_counts(learner.config, layout.streams))
    return BlockEnd(0, carry, 0.0, np.zeros(layout.segments) if record else None)


def _segment_counts(config: Config, streams: int) -> np.ndarray:
    """Zeros for the counts of one segment; positions past the end of the data stay zero."""
    return np.zeros((streams, config.segment, config.count_channels, config.vocab_size), np.uint16)


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
    block; `resume` goes on from one; `record_segments` keeps the bits per segment.
    """
    config = learner.config
    T = config.segment
    exact = config.numerics == "exact"
    decodes = coder is not None and coder.decodes
    step_wise = coder is not None and (decodes or not exact)
    begin = _begin(learner, layout, carry, resume, record_segments)
    state, counts, ideal_bits, segment_bits = begin.carry.state, begin.carry.counts, begin.ideal_bits, begin.segment_bits
    window = _Window(layout, tokens, begin.next_segment, config.memory, config.vocab_size)
    segment_counts = None
    for block in layout.blocks(config):
        if block.segments.stop <= begin.next_segment:
            continue  # done before the block_end we resume from
        if coder is not None:
            coder.begin_block(block.n_sync, block.last, block.max_words)
        for s in block.segments:
            first = s * T
            valid = layout.valid(first, first + T)
            steps = min(T, layout.steps - first)
            segment = np.zeros((layout.streams, T), np.int32) if decodes else layout.read(tokens, first, first + T)
            if counts is not None:
                segment_counts = _segment_counts(config, layout.streams)
            used = _step_through(learner, state.params, window, counts, segment_counts, coder if step_wise else None, segment, valid, steps)
            if decodes:
                layout.write(tokens, first, segment)
            state, train_bits, weights = learner.train(state, window.model_inputs(), segment, valid, segment_counts)
            # The bits of the weights coded: exact, the training step's (multiples of 2**-16, so
            # their float64 sum is exact); native step-wise, those of the step's float weights.
            bits = _coded_bits(used, segment, valid) if step_wise and not exact else float(np.asarray(train_bits, np.float64)[valid].sum())
            if exact and step_wise:
                _check_agreement(used, np.asarray(weights), valid, s)
            elif coder is not None and not step_wise:
                order = valid.T  # position by position, as the decoder decodes them
                coder.code(np.asarray(weights).transpose(1, 0, 2)[order], segment.T[order])
            window.advance()
            ideal_bits += bits
            if segment_bits is not None:
                segment_bits[s] = bits
            if coder is not None and layout.is_sync_point(s, config.sync_segments):
                coder.sync(params_digest(state.params), s)
            if progress:
                progress(layout.tokens_before(first + T), ideal_bits)
        if coder is not None:
            coder.end_block(ideal_bits)
        if on_block:
            on_block(BlockEnd(block.segments.stop, Carry(state, counts), ideal_bits, segment_bits))
    return ReplayResult(ideal_bits, segment_bits, Carry(state, counts))


def _step_through(learner: Learner, params, window: _Window, counts, segment_counts, coder: Coder | None, segment, valid, steps: int):
    """Go through one segment a position at a time: look up its counts, and with a coder score
    the position step-wise and code it; then enter its tokens in the window and the counts.
    Returns the weights the coder was given (B, T, V), or None without a coder (the tokens are
    known and `train` scores them). Decoded tokens are written into `segment`."""
    config = learner.config
    M = config.memory
    if coder is not None:
        cache = learner.prefill(params, window.model_inputs()[:, :M])
        variables = learner.prepare(params)
        used = np.zeros((segment.shape[0], config.segment, config.vocab_size), np.float32)
    found = None
    for i in range(steps):
        active = valid[:, i]
        if counts is not None:
            found = counts.lookup()
            segment_counts[:, i] = found.counts
        if coder is not None:
            weights, cache = learner.step(variables, cache, window.input_at(i), M + i, None if found is None else found.counts)
            used[:, i] = weights = np.asarray(weights)
            segment[active, i] = coder.code(weights if active.all() else weights[active], segment[active, i])
        coded = segment[active, i]
        window.put(active, i, coded)
        if counts is not None:
            counts.update(found, active, coded)
    return used if coder is not None else None


def _coded_bits(weights: np.ndarray, tokens: np.ndarray, valid: np.ndarray) -> float:
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
