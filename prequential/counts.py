"""Adaptive count models: how often each byte followed each context, for several kinds of context.

A transformer trained online learns slowly from its first bytes; counts predict well at once.
The model mixes both (model.py, `CountMixer`). The channels are

- byte contexts: the last k bytes, for k = 1..count_orders;
- sparse contexts (count_sparse): the 2nd last byte; the 2nd and 3rd last bytes;
- word contexts (count_words): the current word so far, the previous word with it, and (2) the
  two previous words with it. In CJK text, which has no spaces, the words are its characters;
- column contexts (count_columns): the byte above (at the same column of the previous line, or
  none) with the last byte and with whether the line so far repeats the previous one's start, and
  the byte above with the column. Word lists, tables, logs and indented code repeat by line;
- record contexts (count_records): the bytes one and two record lengths back, with the last byte
  and together, for data made of fixed-length records (tables in executables, images). The record
  length is detected as paq8px's record model does: a byte value seen 4 times running at equal
  distances votes for that distance, and a distance that leads the others by 8 votes becomes the
  record length. Until a stream has one, these channels give it no counts. An uncompressed
  image (binary PGM or PPM, BMP) says its row length in its header: once the first stream has
  read a whole such header, every stream takes that length for good, and the two channels key
  instead on the bytes above (N) and to the left (W, one pixel back) together, and on the
  gradient prediction W + N - NW (as in lossless image coders: LOCO-I, paq8px);
- indirect contexts (count_indirect, as paq8px's indirect model): the last byte, and the last two
  bytes, each with the two bytes that followed it the last two times. They predict from what came
  next before: in code and markup a context is often followed by a few continuations in turn;
- a match model (match_model): the byte that followed the last occurrence of the current 8-byte
  context, weighted by how many of its predictions in a row were right. It reads that byte from a
  ring of each stream's last 2**match_window_log2 tokens, so its memory does not grow with the input.

Everything here is integer arithmetic updated in a fixed order (stream by stream, after each coded
position), so encoder and decoder hold identical tables; the float arithmetic on the counts
happens inside the jitted model. Contexts are hashed into 2**count_rows_log2 rows per channel
(fewer for channels with fewer possible contexts: orders 1 and 2, the sparse ones), with a
32-bit check so that a row taken over by another context starts from zero instead of mixing two
contexts' statistics. Counts are halved when one reaches `limit`, so they follow changing data.
Long contexts (count_decay_from bytes or more, and words) forget faster: counting a byte there
pulls the other bytes' counts above count_decay halfway down to it, since what follows a long
context in text changes more than what follows a short one. All streams share the tables.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from prequential.config import Config

_ROW_HASH = np.uint64(0x9E3779B97F4A7C15)
_CHECK_HASH = np.uint64(0xC2B2AE3D27D4EB4F)
_WORD_HASH = np.uint64(0x100000001B3)
_MATCH_MAX_RUN = 15
_RECORD_GAPS = 3  # a byte value seen at equal distances this many times running votes for that distance
_RECORD_VOTES = 8  # the lead in votes that makes a distance the record length
_POSITION_BITS = np.int64(40)  # a match pointer is stream << 40 | position
_IMAGE_HEADER_BYTES = 64  # an image header must end within the first stream's first bytes
_IMAGE_KEY = np.uint64(1) << np.uint64(60)  # sets a gradient prediction's key apart from a record context's
_PNM_BLANK = rb"(?:\s|#[^\n]*\n)+"  # whitespace and comments
_PNM_HEADER = re.compile(rb"P([56])" + _PNM_BLANK + rb"(\d+)" + _PNM_BLANK + rb"\d+" + _PNM_BLANK + rb"(\d+)\s")


def image_layout(head: bytes) -> tuple[int, int]:
    """(bytes per row, bytes per pixel) of the uncompressed image whose header is exactly `head`
    (binary PGM or PPM of 8-bit samples; BMP of 8, 24 or 32 bits per pixel), else (0, 0)."""
    if (pnm := _PNM_HEADER.fullmatch(head)) and int(pnm[3]) < 256:
        pixel = 3 if pnm[1] == b"6" else 1
        return int(pnm[2]) * pixel, pixel
    if len(head) == 30 and head.startswith(b"BM"):
        width, bits = int.from_bytes(head[18:22], "little", signed=True), int.from_bytes(head[28:30], "little")
        if bits in (8, 24, 32) and 0 < width < 1 << 16:
            return (width * bits + 31) // 32 * 4, bits // 8
    return 0, 0


def _is_word_byte(tokens: np.ndarray) -> np.ndarray:
    lower = tokens | 0x20
    return ((lower >= ord("a")) & (lower <= ord("z"))) | (tokens >= 128)


class Found(NamedTuple):
    """What a lookup found: the counts the model reads, and the rows (with their context checks)
    that `update` then counts the coded tokens into."""

    counts: np.ndarray  # (streams, channels, vocab)
    rows: np.ndarray  # (streams, hashed channels) flat row indices
    check: np.ndarray  # (streams, hashed channels) the contexts' 32-bit checks
    above: np.ndarray | None  # (streams,) the byte above each position (count_columns), for update


class ContextCounts:
    def __init__(self, config: Config, streams: int) -> None:
        self.config = config
        self.orders = np.arange(1, config.count_orders + 1, dtype=np.uint64)
        self.masks = (np.uint64(1) << (np.uint64(8) * self.orders)) - np.uint64(1)
        # Per hashed channel, in the order of _keys: the bits of its keys, and whether it decays.
        channels = [(8 * k, k >= config.count_decay_from) for k in range(1, config.count_orders + 1)]
        channels += [(8, False), (16, False)] * config.count_sparse + [(64, True)] * config.word_channels
        channels += [(18, False), (17, False)] * config.count_columns + [(64, False), (64, False)] * config.count_records
        channels += [(24, False), (32, False)] * config.count_indirect
        self.hashed_channels = len(channels)
        self._record_channels = slice(self.hashed_channels - 2 * config.count_records, self.hashed_channels)
        key_bits = np.array([bits for bits, _ in channels], np.int64)
        self._decays = np.array([decays for _, decays in channels], bool)
        # A channel whose keys have fewer bits than count_rows_log2 (orders 1 and 2, the sparse
        # contexts) gets a few times as many rows as it has contexts; the others get 2**count_rows_log2.
        rows_log2 = np.minimum(key_bits + 2, config.count_rows_log2)  # + 2: fewer collisions
        self.shifts = (64 - rows_log2).astype(np.uint64)[None, :]
        self._row_base = np.concatenate([[0], np.cumsum(1 << rows_log2)[:-1]])[None, :]
        rows = int(np.sum(1 << rows_log2))
        # Counts are halved before one passes count_limit - 1, and a step adds at most one per
        # stream, so limit - 1 + streams bounds them: bytes when that fits, which halves the memory.
        dtype = np.uint8 if config.count_limit - 1 + streams <= 255 else np.uint16
        # np.zeros maps untouched pages lazily: small inputs only pay for the rows they use.
        self.counts = np.zeros((rows, config.vocab_size), dtype)
        self.checks = np.zeros(rows, np.uint32)
        self.context = np.zeros(streams, np.uint64)  # each stream's last 8 bytes, newest lowest
        self.word = np.zeros(streams, np.uint64)  # hash of the word being read, 0 between words
        self.previous_words = np.zeros((streams, 2), np.uint64)  # the last word, and the one before it
        self.recent = np.zeros((streams, 1 << config.match_window_log2), np.uint8)  # ring: position p at p % size
        self.match_shift = np.uint64(64 - config.count_rows_log2)
        self.match_table = np.full(1 << config.count_rows_log2, -1, np.int64)  # 8-byte context -> pointer to the position after it
        self.match_at = np.full(streams, -1, np.int64)  # where each stream's match points, or -1
        self.match_run = np.zeros(streams, np.int64)
        self.line_start = np.zeros(streams, np.int64)  # the position of the current line's first byte
        self.above_start = np.full(streams, -1, np.int64)  # the previous line's, or -1
        self.same_line = np.ones(streams, bool)  # whether the line so far equals the previous line's start
        self.last_seen = np.full((streams, config.vocab_size), -1, np.int64)  # where each byte value was last seen
        self.last_gaps = np.zeros((streams, config.vocab_size, _RECORD_GAPS), np.int64)  # the distances between its last occurrences
        self.record_guess = np.zeros(streams, np.int64)  # the distance that leads the vote, and by how much
        self.record_votes = np.zeros(streams, np.int64)
        self.record = np.zeros(streams, np.int64)  # the detected record length, 0 until one is
        # Indirect contexts (count_indirect): the two bytes that last followed each 1-byte and
        # each 2-byte context, newest lowest, in any stream.
        self.followed_one = np.zeros(1 << 8, np.uint16)
        self.followed_two = np.zeros(1 << 16, np.uint16)
        self.pixel = np.zeros(streams, np.int64)  # bytes per pixel of an image whose header gave the record length, else 0
        # The position whose counts the next lookup gives. A pass over more data (given data first)
        # goes on counting from here, so its matches may point back into the earlier data.
        self.time = 0
        self._flat_counts = self.counts.reshape(-1)  # one fancy index per access, not two

    def _keys(self, above: np.ndarray | None) -> np.ndarray:
        """(streams, hashed channels) keys; the channel index is added so equal keys differ."""
        keys = [self.context[:, None] & self.masks[None, :]]
        left = self.context & np.uint64(0xFF)
        if self.config.count_sparse:  # skip the last byte: the 2nd last; the 2nd and 3rd last
            keys.append(
                np.stack([(self.context >> np.uint64(8)) & np.uint64(0xFF), (self.context >> np.uint64(8)) & np.uint64(0xFFFF)], axis=1)
            )
        if self.config.count_words:
            words = [self.word]
            for previous in self.previous_words.T[: self.config.count_words]:
                words.append(words[-1] * _WORD_HASH + previous)
            keys.append(np.stack(words, axis=1))
        if above is not None:
            above = above.astype(np.uint64)
            column = np.minimum(self.time - self.line_start, 255).astype(np.uint64)
            with_left = above | (left << np.uint64(9)) | (self.same_line.astype(np.uint64) << np.uint64(17))
            keys.append(np.stack([with_left, above | (column << np.uint64(9))], axis=1))
        if self.config.count_records:
            back = self._back(self.record).astype(np.uint64)
            record = np.minimum(self.record, 1 << 20).astype(np.uint64) << np.uint64(24)
            if self.pixel[0]:  # an image (all streams at once): N with W, and W + N - NW
                west, north_west = (self._back(d).astype(np.int64) for d in (self.pixel, self.record + self.pixel))
                predicted = np.clip(west + back.astype(np.int64) - north_west, 0, 255).astype(np.uint64)
                keys.append(np.stack([back | (west.astype(np.uint64) << np.uint64(8)) | record, predicted | _IMAGE_KEY], axis=1))
            else:
                back2 = self._back(2 * self.record).astype(np.uint64)
                keys.append(np.stack([back | (left << np.uint64(8)) | record, back | (back2 << np.uint64(8)) | record], axis=1))
        if self.config.count_indirect:
            keys.append(np.stack([at | (table[at].astype(np.uint64) << bits) for table, at, bits in self._indirect(self.context)], axis=1))
        return np.concatenate(keys, axis=1) + np.arange(1, self.hashed_channels + 1, dtype=np.uint64)

    def _indirect(self, context: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.uint64], ...]:
        """Per indirect channel: its table, the last bytes of `context` (its slot in the table),
        and their bit count; a key is those bytes with the two that followed them above."""
        one, two = context & np.uint64(0xFF), context & np.uint64(0xFFFF)
        return (self.followed_one, one, np.uint64(8)), (self.followed_two, two, np.uint64(16))

    def _recall(self, pointers: np.ndarray, newest: int) -> tuple[np.ndarray, np.ndarray]:
        """(readable, token) for each pointer: readable if it points at one of the positions up
        to `newest` that the ring still holds."""
        stream, position = pointers >> _POSITION_BITS, pointers & ((np.int64(1) << _POSITION_BITS) - 1)
        size = self.recent.shape[1]
        readable = (pointers >= 0) & (position <= newest) & (position > newest - size)
        return readable, self.recent[np.where(readable, stream, 0), np.where(readable, position % size, 0)]

    def _above(self) -> np.ndarray:
        """Each stream's byte above the current position, or 256 where the previous line is
        shorter (or gone from the ring, or there is none)."""
        above = self.above_start + (self.time - self.line_start)
        streams = np.arange(len(above), dtype=np.int64) << _POSITION_BITS
        pointers = np.where((self.above_start >= 0) & (above < self.line_start), streams | above, -1)
        readable, token = self._recall(pointers, self.time - 1)
        return np.where(readable, token.astype(np.int64), 256)

    def _back(self, distance: np.ndarray) -> np.ndarray:
        """Each stream's byte `distance` positions back (distance >= 1), or 0 where there is none."""
        streams = np.arange(len(distance), dtype=np.int64) << _POSITION_BITS
        position = self.time - distance
        readable, token = self._recall(np.where((distance > 0) & (position >= 0), streams | position, -1), self.time - 1)
        return np.where(readable, token, 0)

    def _match_counts(self) -> np.ndarray:
        found = np.zeros((len(self.match_at), self.config.vocab_size), np.uint16)
        readable, predicted = self._recall(self.match_at, self.time - 1)
        streams = np.flatnonzero(readable)
        found[streams, predicted[readable]] = 1 + self.match_run[readable]
        return found[:, None]

    def lookup(self) -> Found:
        """The counts for every stream's contexts at the current position."""
        above = self._above() if self.config.count_columns else None
        keys = self._keys(above)
        rows = self._row_base + ((keys * _ROW_HASH) >> self.shifts).astype(np.int64)
        check = ((keys * _CHECK_HASH) >> np.uint64(32)).astype(np.uint32)
        found = self.counts[rows].astype(np.uint16, copy=False)  # the model takes uint16
        found[self.checks[rows] != check] = 0
        if self.config.count_records:  # no record length yet: nothing to predict from, rather than a second order 1
            found[self.record == 0, self._record_channels] = 0
        if self.config.match_model:
            found = np.concatenate([found, self._match_counts()], axis=1)
        return Found(found, rows, check, above)

    def update(self, found: Found, active: np.ndarray, tokens: np.ndarray) -> None:
        """Count `tokens` (one per active stream) in the contexts `found` at this position, and move on."""
        self._count(found.rows[active], found.check[active], tokens)
        symbols = tokens.astype(np.uint64)
        if self.config.count_words:
            in_word = _is_word_byte(tokens)
            # A UTF-8 character of 3 or 4 bytes starting after another multi-byte one also ends
            # the word: CJK text has no spaces, so its words would run to the next punctuation;
            # so they are its characters (a Latin-1 letter after an ASCII one is not such a start).
            last = self.context[active] & np.uint64(0xFF)
            starts = (tokens >= 0xE0) & (last >= 0x80) & (last < 0xC0)
            ended = (~in_word | starts) & (self.word[active] != 0)
            shifted = np.stack([self.word[active], self.previous_words[active, 0]], axis=1)
            self.previous_words[active] = np.where(ended[:, None], shifted, self.previous_words[active])
            word = np.where(starts, np.uint64(0), self.word[active])
            self.word[active] = np.where(in_word, word * _WORD_HASH + (symbols | np.uint64(0x20)), 0)
        if found.above is not None:
            self._follow_lines(active, tokens, found.above)
        if self.config.count_records:
            self._follow_records(active, tokens)
        if self.config.count_indirect:
            for table, at, _ in self._indirect(self.context[active]):
                table[at] = (table[at] << np.uint16(8)) | tokens.astype(np.uint16)  # two streams in one context: the last wins
        self.context[active] = (self.context[active] << np.uint64(8)) | symbols
        if self.config.match_model or self.config.count_columns or self.config.count_records:  # they read the ring
            self.recent[np.flatnonzero(active), self.time % self.recent.shape[1]] = tokens
        if self.config.match_model:
            self._follow_matches(active, tokens)
        if self.config.count_records and self.time < _IMAGE_HEADER_BYTES and not self.pixel[0]:
            row, pixel = image_layout(self.recent[0, : self.time + 1].tobytes())
            if row:
                self.record[:], self.pixel[:] = row, pixel
        self.time += 1

    def _follow_lines(self, active: np.ndarray, tokens: np.ndarray, above: np.ndarray) -> None:
        streams = np.flatnonzero(active)
        self.same_line[streams] &= above[streams] == tokens
        ended = streams[tokens == ord("\n")]
        self.above_start[ended] = self.line_start[ended]
        self.line_start[ended] = self.time + 1
        self.same_line[ended] = True

    def _count(self, rows: np.ndarray, check: np.ndarray, tokens: np.ndarray) -> None:
        """rows, check: (active streams, channels) flat row indices and their context checks."""
        vocab = self.config.vocab_size
        tokens = np.broadcast_to(tokens[:, None], rows.shape)
        decays = np.broadcast_to(self._decays, rows.shape)
        stale = self.checks[rows] != check
        if stale.any():  # a row taken over by another context starts from zero
            self.counts[rows[stale]] = 0
            self.checks[rows[stale]] = check[stale]
            mine = self.checks[rows] == check  # two streams may claim one row in a step: the last wins
        else:
            mine = np.ones(rows.shape, bool)
        rows, tokens, decays = rows[mine], tokens[mine], decays[mine]
        if self.config.count_decay:
            self._decay(rows[decays], tokens[decays])
        cells = rows * vocab + tokens
        full = self._flat_counts[cells] >= self.config.count_limit
        if full.any():
            self.counts[rows[full]] >>= 1
        np.add.at(self._flat_counts, cells, 1)

    def _decay(self, rows: np.ndarray, tokens: np.ndarray) -> None:
        """Pull every count above count_decay in `rows`, except the token's, halfway down to it."""
        found = self.counts[rows].astype(np.uint32)  # room for count + count_decay
        keep = found <= self.config.count_decay
        keep[np.arange(len(rows)), tokens] = True
        self.counts[rows] = np.where(keep, found, (found + self.config.count_decay) >> 1)

    def _follow_records(self, active: np.ndarray, tokens: np.ndarray) -> None:
        streams = np.flatnonzero(active)
        seen = self.last_seen[streams, tokens]
        gap = np.where(seen >= 0, self.time - seen, 0)
        gaps = self.last_gaps[streams, tokens]
        repeats = (gap > 1) & np.all(gaps == gap[:, None], axis=1)
        self.last_gaps[streams, tokens] = np.concatenate([gap[:, None], gaps[:, :-1]], axis=1)
        self.last_seen[streams, tokens] = self.time
        voters, gap = streams[repeats], gap[repeats]
        agrees = gap == self.record_guess[voters]
        votes = self.record_votes[voters] + np.where(agrees, 1, -1)
        self.record_guess[voters] = np.where(votes < 0, gap, self.record_guess[voters])
        self.record_votes[voters] = np.maximum(votes, 0)
        won = voters[(self.record_votes[voters] >= _RECORD_VOTES) & (self.pixel[voters] == 0)]
        self.record[won] = self.record_guess[won]

    def _follow_matches(self, active: np.ndarray, tokens: np.ndarray) -> None:
        streams = np.flatnonzero(active)
        at = self.match_at[streams]
        readable, predicted = self._recall(at, self.time)
        right = readable & (predicted == tokens)
        self.match_run[streams] = np.where(right, np.minimum(self.match_run[streams] + 1, _MATCH_MAX_RUN), 0)
        slots = ((self.context[streams] * _ROW_HASH) >> self.match_shift).astype(np.int64)
        # A right prediction moves on; otherwise look for an earlier occurrence of the new context.
        self.match_at[streams] = np.where(right, at + 1, self.match_table[slots])
        self.match_table[slots] = (streams.astype(np.int64) << _POSITION_BITS) | (self.time + 1)
