"""The replay engine: one loop that runs the seeded online training for both coder directions.

The input of n tokens is cut into B streams of `steps = ceil(n / B)` positions (the last streams
may be shorter or empty) and the positions into segments of T. For each segment the engine
caches the M memory tokens before it, scores one position of all B streams at a time, hands the
probabilities of the streams that have a token there to the coder, and then takes one gradient
step on the segment. Encoder and decoder call the same compiled functions with the same shapes in
the same order; the only difference is whether the coder reads or writes the tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from prequential.coder import Coder
from prequential.config import Config
from prequential.counts import ContextCounts
from prequential.learner import Learner, TrainState, params_digest

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

    def lengths(self) -> np.ndarray:
        """(B,) tokens in each stream."""
        return np.clip(self.n_tokens - np.arange(self.streams) * self.steps, 0, self.steps)

    def valid(self) -> np.ndarray:
        """(B, segments*T) mask of the positions that hold a token."""
        return np.arange(self.segments * self.segment)[None, :] < self.lengths()[:, None]

    def tokens_before(self, position: int) -> int:
        """Tokens at positions before `position`, over all streams."""
        return int(np.minimum(self.lengths(), position).sum())

    def split(self, tokens: np.ndarray) -> np.ndarray:
        """(n,) tokens -> (B, segments*T) int32, zero where there is no token."""
        grid = np.zeros((self.streams, self.segments * self.segment), np.int32)
        grid[self.valid()] = tokens
        return grid

    def join(self, grid: np.ndarray) -> np.ndarray:
        return grid[self.valid()]

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
class Snapshot:
    """Where a pass stands at the end of a coder block: enough to go on from there."""

    next_segment: int
    carry: Carry
    segment_bits: np.ndarray  # bits of the segments before next_segment

    @property
    def ideal_bits(self) -> float:
        total = 0.0
        for bits in self.segment_bits[: self.next_segment]:  # the order replay() adds them in
            total += float(bits)
        return total


# Called at the end of every coder block (a checkpoint may be written there).
OnBlock = Callable[[Snapshot], None]


@dataclasses.dataclass
class ReplayResult:
    tokens: np.ndarray  # (n,) int32
    ideal_bits: float  # sum of -log2 p of every coded token, as the coder was given p
    segment_bits: np.ndarray  # (segments,) the same, per segment
    carry: Carry


class _History:
    """The token grid and the model inputs (tokens shifted right behind a start symbol)."""

    def __init__(self, layout: Layout, memory: int, start_symbol: int) -> None:
        self.memory = memory
        self.tokens = np.zeros((layout.streams, layout.segments * layout.segment), np.int32)
        # inputs[:, memory + t] is the input at position t: the token at t-1, or the start symbol.
        self.inputs = np.full((layout.streams, memory + self.tokens.shape[1] + 1), start_symbol, np.int32)

    def fill_before(self, grid: np.ndarray, valid: np.ndarray, position: int) -> None:
        """Set the tokens of all positions before `position` (all of them, when all are known)."""
        self.tokens[:, :position] = grid[:, :position]
        before = self.inputs[:, self.memory + 1 : self.memory + 1 + position]
        before[:] = np.where(valid[:, :position], grid[:, :position], before)

    def put(self, rows: np.ndarray, position: int, tokens: np.ndarray) -> None:
        self.tokens[rows, position] = tokens
        self.inputs[rows, self.memory + position + 1] = tokens

    def window(self, segment: int, length: int) -> np.ndarray:
        start = segment * length
        return self.inputs[:, start : start + self.memory + length]


def new_counts(config: Config, grid: np.ndarray) -> ContextCounts | None:
    return ContextCounts(config, grid) if config.count_channels else None


# Resuming: the snapshot to go on from, and the (streams, positions) token grid of the data.
Resume = tuple[Snapshot, np.ndarray]


def _begin(learner: Learner, layout: Layout, history: _History, carry: Carry | None, resume: Resume | None) -> Snapshot:
    """Where a pass starts: from the seed, from the state and counts a pass over other data left
    (`carry`), or from a snapshot of this pass (`resume`), whose earlier tokens are filled in."""
    if resume is not None:
        snapshot, grid = resume
        history.fill_before(grid, layout.valid(), snapshot.next_segment * learner.config.segment)
        if snapshot.carry.counts is not None:
            snapshot.carry.counts.grid = history.tokens
        return Snapshot(snapshot.next_segment, snapshot.carry, snapshot.segment_bits.copy())
    if carry is None:
        carry = Carry(learner.init(), new_counts(learner.config, history.tokens))
    elif carry.counts is not None:
        carry.counts.continue_on(history.tokens)
    return Snapshot(0, carry, np.zeros(layout.segments))


def _segment_counts(config: Config, streams: int) -> np.ndarray:
    """Zeros for the counts of one segment; positions past the end of the data stay zero."""
    return np.zeros((streams, config.segment, config.count_channels, config.vocab_size), np.uint16)


def replay(
    learner: Learner,
    layout: Layout,
    coder: Coder,
    progress: Progress | None = None,
    carry: Carry | None = None,
    *,
    on_block: OnBlock | None = None,
    resume: Resume | None = None,
) -> ReplayResult:
    """Score every position step by step, code it, train on each segment. `carry` continues from
    a pass over other data; `on_block` sees a snapshot after every block; `resume` goes on from one."""
    config = learner.config
    T, M = config.segment, config.memory
    valid = layout.valid()
    history = _History(layout, M, config.vocab_size)
    begin = _begin(learner, layout, history, carry, resume)
    state, counts, segment_bits, ideal_bits = begin.carry.state, begin.carry.counts, begin.segment_bits, begin.ideal_bits
    segment_counts = step_counts = None
    for block in layout.blocks(config):
        if block.segments.stop <= begin.next_segment:
            continue  # coded before the snapshot we resume from
        coder.begin_block(block.n_sync, block.last, block.max_words)
        for s in block.segments:
            cache = learner.prefill(state.params, history.window(s, T)[:, :M])
            if counts is not None:
                segment_counts = _segment_counts(config, layout.streams)
            for i in range(min(T, layout.steps - s * T)):
                t = s * T + i
                if counts is not None:
                    segment_counts[:, i] = step_counts = counts.lookup()
                probs, cache = learner.step(state.params, cache, history.inputs[:, M + t], M + i, step_counts)
                active = valid[:, t]
                probs = np.asarray(probs)
                if not active.all():
                    probs = probs[active]
                tokens = coder.code(probs, t, active)
                history.put(active, t, tokens)
                if counts is not None:
                    counts.update(active, tokens)
                p = probs[np.arange(len(tokens)), tokens].astype(np.float64)
                segment_bits[s] -= np.log2(np.maximum(p, np.finfo(np.float32).tiny)).sum()
            ideal_bits += float(segment_bits[s])
            targets, mask = history.tokens[:, s * T : (s + 1) * T], valid[:, s * T : (s + 1) * T]
            state, _ = learner.train(state, history.window(s, T), targets, mask, segment_counts)
            if layout.is_sync_point(s, config.sync_segments):
                coder.sync(params_digest(state.params), s)
            if progress:
                progress(layout.tokens_before((s + 1) * T), ideal_bits)
        coder.end_block(ideal_bits)
        if on_block:
            on_block(Snapshot(block.segments.stop, Carry(state, counts), segment_bits))
    return ReplayResult(layout.join(history.tokens), ideal_bits, segment_bits, Carry(state, counts))


def train_pass(
    learner: Learner,
    layout: Layout,
    tokens: np.ndarray,
    progress: Progress | None = None,
    carry: Carry | None = None,
    *,
    on_block: OnBlock | None = None,
    resume: Snapshot | None = None,
) -> tuple[np.ndarray, Carry]:
    """The online training alone, scored teacher-forced before each update: bits per segment.

    No coder and no step-wise scoring, so it is as fast as the training itself. It calls `train`
    exactly as `replay` does, so the state it hands on is the one `replay` would reach; its bits
    agree with `replay`'s up to float rounding (the same model, scored by a batched computation).
    `on_block` and `resume` work as in `replay`, at the same block ends.
    """
    config = learner.config
    T = config.segment
    valid = layout.valid()
    grid = layout.split(tokens)
    history = _History(layout, config.memory, config.vocab_size)
    begin = _begin(learner, layout, history, carry, None if resume is None else (resume, grid))
    history.fill_before(grid, valid, grid.shape[1])
    state, counts, segment_bits = begin.carry.state, begin.carry.counts, begin.segment_bits
    segment_counts = None
    done_bits = begin.ideal_bits
    for block in layout.blocks(config):
        if block.segments.stop <= begin.next_segment:
            continue
        for s in block.segments:
            targets, mask = history.tokens[:, s * T : (s + 1) * T], valid[:, s * T : (s + 1) * T]
            if counts is not None:  # the same lookups and updates, in the same order, as replay()
                segment_counts = _segment_counts(config, layout.streams)
                for i in range(min(T, layout.steps - s * T)):
                    segment_counts[:, i] = counts.lookup()
                    counts.update(mask[:, i], targets[mask[:, i], i])
            state, bits = learner.train(state, history.window(s, T), targets, mask, segment_counts)
            segment_bits[s] = float(np.asarray(bits, np.float64)[mask].sum())
            done_bits += segment_bits[s]
            if progress:
                progress(layout.tokens_before((s + 1) * T), done_bits)
        if on_block:
            on_block(Snapshot(block.segments.stop, Carry(state, counts), segment_bits))
    return segment_bits, Carry(state, counts)
