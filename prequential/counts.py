"""Adaptive count models: how often each byte followed each context, for several kinds of context.

A transformer trained online learns slowly from its first bytes; counts predict well at once.
The model mixes both (model.py, `CountMixer`). The channels are

- byte contexts: the last k bytes, for k = 1..count_orders;
- sparse contexts (count_sparse): the 2nd last byte; the 2nd and 3rd last bytes;
- word contexts (count_words): the current word so far, the previous word with it, and (2) the
  two previous words with it. In CJK text, which has no spaces, the words are its characters,
  but a run of Japanese kana is one word; Indic scripts and Korean, written in 3-byte characters
  too, put spaces between their words.
  In UTF-16 text (its first 2 bytes are a byte-order mark) the words and the shape context (below)
  skip the zero bytes, half of those of a Latin text, so they see what they see in UTF-8;
- column contexts (count_columns): the byte above (at the same column of the previous line, or
  none) with the last byte and with whether the line so far repeats the previous one's start, and
  the byte above with the column. Word lists, tables, logs and indented code repeat by line. In a
  GNU message catalog (.mo, found from its first 4 bytes) a zero byte ends a line too: its
  strings, sorted ones among them, end with one.
  Fonts (TrueType, OpenType) and 16-bit audio (WAV, AIFF) have no lines and no words but 16-bit
  fields: where the first stream's first 12 bytes say the data is one (count_fields16), every
  stream's two column channels key instead on the bytes 2, 4 and 6 back, and on the bytes 1, 3
  and 5 back: the same byte of the last three fields, and the other byte of them with the last
  byte; and its word channels on the bytes 2 and 4 back, 1 and 3 back, and 4 and 8 back (the same
  byte of the last two 32-bit fields). A message catalog's first part is such fields too: tables of
  32-bit lengths and offsets, and a hash table. In a catalog, a stream whose last 8 bytes hold at
  least 3 zero bytes (the high bytes of small 32-bit numbers; the strings have one zero byte each)
  keys its column and word channels on the fields, and on lines and words elsewhere;
- record contexts (count_records): the bytes one and two record lengths back, with the last byte
  and together, for data made of fixed-length records (tables in executables, images). The record
  length is detected as paq8px's record model does: a byte value seen 4 times running at equal
  distances votes for that distance, and a distance that leads the others by 8 votes becomes the
  record length. Until a stream has one, these channels give it no counts. An uncompressed
  image (binary PGM or PPM, BMP) says its row length in its header: once the first stream has
  read a whole such header, every stream takes that length for good, and the two channels key
  instead on the bytes above (N) and to the left (W, one pixel back) together, and on the
  gradient prediction W + N - NW (as in lossless image coders: LOCO-I, paq8px);
- indirect contexts (count_indirect, as paq8px's indirect model): the last two bytes (and, with 2,
  the last byte) with the two bytes that followed them the last two times in the same stream. They
  predict from what came next before: in markup and tables a context is often followed by a few
  continuations in turn;
- a shape context (count_shape): the classes (letter, digit, blank, punctuation, UTF-8 lead or
  continuation byte, ...) of the last 8 bytes with the last byte, which generalizes over the words
  and numbers of code, markup and tables, and over the characters of non-Latin text;
- the empty context (count_order0): how often each byte occurred;
- a nesting context (count_nest): the two innermost open brackets or quotes and how many are open,
  with the last byte (inside a tag, a string, an argument list);
- a match model (match_model): the byte that followed the last occurrence of the current 8-byte
  context in the same stream, weighted by how many of its predictions in a row were right. It
  reads that byte from a ring of each stream's last 2**match_window_log2 tokens, so its memory does
  not grow with the input.

The match model, the indirect contexts and the byte context of count_own_order bytes remember
each stream's own past, not the latest of any stream: the streams are far-apart stretches of the
input, and nearby data predicts best (docs/ratio.md, item 17). The other count tables are shared:
they gather what every stream has seen.

Everything here is integer arithmetic updated in a fixed order (after each coded position, stream
by stream: stream 1 sees what stream 0 just counted), so encoder and decoder hold identical tables;
the float arithmetic on the counts happens inside the jitted model. Contexts are hashed into
2**count_rows_log2 rows per channel (fewer for channels with fewer possible contexts: orders 0 to
2, the sparse ones), with a 32-bit check so that a row taken over by another context starts from
zero instead of mixing two contexts' statistics. A row is halved when one of its counts reaches
`limit`, so they follow changing data. Long contexts (count_decay_from bytes or more, and words)
forget faster: counting a byte there pulls the other bytes' counts above count_decay halfway down
to it, since what follows a long context in text changes more than what follows a short one. All
streams share the tables.

The per-position work (keys, hashes, a gather of every channel's row, the updates) is a loop over
streams and channels, compiled by Numba (`_lookup`, `_update`): as NumPy array operations it was
hundreds of small calls per position, about a quarter of a decoder's time. Numba compiles the same
integer operations to machine code (cached on disk after the first run); an integer result does
not depend on how it is compiled.
"""

from __future__ import annotations

import mmap
import re
from typing import NamedTuple

import numba
import numpy as np

from prequential.config import Config

_ROW_HASH = np.uint64(0x9E3779B97F4A7C15)
_CHECK_HASH = np.uint64(0xC2B2AE3D27D4EB4F)
_WORD_HASH = np.uint64(0x100000001B3)
_MATCH_MAX_RUN = 15
_RECORD_GAPS = 3  # a byte value seen at equal distances this many times running votes for that distance
_RECORD_VOTES = 8  # the lead in votes that makes a distance the record length
_POSITION_BITS = 40  # a pointer into the ring of recent tokens is stream << 40 | position
_POSITIONS = (1 << _POSITION_BITS) - 1
_HEAD_BYTES = 256  # the first stream's first bytes that say what the data is (an image header must end within them)
_IMAGE_KEY = np.uint64(1) << np.uint64(60)  # sets a gradient prediction's key apart from a record context's
_PNM_BLANK = rb"(?:\s|#[^\n]*\n)+"  # whitespace and comments
_PNM_HEADER = re.compile(rb"P([56])" + _PNM_BLANK + rb"(\d+)" + _PNM_BLANK + rb"\d+" + _PNM_BLANK + rb"(\d+)\s")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # little- and big-endian
_NPY_MAGIC = b"\x93NUMPY"
_NPY_ARRAY = re.compile(  # numbers (not records, not objects) in C order, and the shape
    rb"\{'descr': '[<>|][iuf](?P<size>[1248])', 'fortran_order': False, 'shape': \((?P<shape>[\d, ]*)\), \}"
)
_CATALOG_MAGICS = (b"\xde\x12\x04\x95", b"\x95\x04\x12\xde")  # a GNU message catalog (.mo), either byte order
_TABLE_ZEROS = 3  # in a catalog, this many zero bytes among the last 8 mean its tables (2 and 4 did worse)
_FIELDS16_HEAD = 12  # the bytes `has_fields16` reads
_FONT_TAGS = (b"\x00\x01\x00\x00", b"OTTO", b"true")  # TrueType 1.0, OpenType with CFF outlines, Apple TrueType
_AUDIO_HEADER = re.compile(rb"RIFF.{4}WAVE|FORM.{4}AIF[FC]", re.DOTALL)


def _byte_classes() -> np.ndarray:
    """A class of 4 bits for each byte value: control, line end, blank, digit, lower case, upper
    case, punctuation; and of the bytes of 128 and up, UTF-8's continuation bytes and the leads
    of 2-, 3- and 4-byte characters, so that in non-Latin text the shape says where the current
    character is and which scripts came before."""
    classes = np.zeros(256, np.uint64)
    for values, cls in ((b"\n\r", 1), (b" \t", 2), (b"0123456789", 3)):
        classes[list(values)] = cls
    classes[ord("a") : ord("z") + 1], classes[ord("A") : ord("Z") + 1] = 4, 5
    classes[[c for c in range(33, 127) if not chr(c).isalnum()]] = 6
    classes[0x80:0xC0], classes[0xC0:0xE0], classes[0xE0:0xF0], classes[0xF0:] = 7, 8, 9, 10
    return classes


_BYTE_CLASS = _byte_classes()


def _brackets() -> tuple[np.ndarray, np.ndarray]:
    """For each byte value, the code (1-6) of the bracket or quote it opens and of the bracket it
    closes, else 0; quotes (codes _QUOTES and up) close themselves."""
    opens, closes = np.zeros(256, np.uint64), np.zeros(256, np.uint64)
    for code, pair in enumerate((b"()", b"[]", b"{}", b"<>", b'""', b"''"), start=1):
        opens[pair[0]] = code
        if pair[0] != pair[1]:
            closes[pair[1]] = code
    return opens, closes


_OPENS, _CLOSES = _brackets()
_QUOTES = np.uint64(5)


def image_layout(head: bytes) -> tuple[int, int]:
    """(bytes per row, bytes per pixel) of the uncompressed image whose header is exactly `head`
    (binary PGM or PPM of 8-bit samples; BMP of 8, 24 or 32 bits per pixel), else (0, 0). A NumPy
    array file (.npy) of numbers in two or more dimensions, in C order, is an image too: a row is
    its last axis, a pixel one number (a raster of elevations, a matrix, a stack of frames), or
    with a last axis of at most 4 (colour channels) the axis before it, a pixel all channels."""
    if (pnm := _PNM_HEADER.fullmatch(head)) and int(pnm[3]) < 256:
        pixel = 3 if pnm[1] == b"6" else 1
        return int(pnm[2]) * pixel, pixel
    if len(head) == 30 and head.startswith(b"BM"):
        width, bits = int.from_bytes(head[18:22], "little", signed=True), int.from_bytes(head[28:30], "little")
        if bits in (8, 24, 32) and 0 < width < 1 << 16:
            return (width * bits + 31) // 32 * 4, bits // 8
    if head.startswith(_NPY_MAGIC) and len(head) >= 12:
        # The header is a Python dict literal; it is matched, never evaluated.
        size = 2 if head[6] == 1 else 4  # version 1 gives the header's length in 2 bytes, 2 and 3 in 4
        if len(head) == 8 + size + int.from_bytes(head[8 : 8 + size], "little") and (array := _NPY_ARRAY.search(head)):
            shape = [int(n) for n in array["shape"].split(b",") if n.strip()]
            pixel = int(array["size"])
            if len(shape) >= 3 and shape[-1] <= 4:  # height, width and a few channels: a pixel is all of them
                shape, pixel = shape[:-1], pixel * shape[-1]
            if len(shape) >= 2 and 0 < shape[-1] * pixel < 1 << 16:
                return shape[-1] * pixel, pixel
    return 0, 0


def has_fields16(head: bytes) -> bool:
    """Whether data whose first bytes are `head` (exactly _FIELDS16_HEAD of them) is made of 16-bit
    fields: WAV or AIFF audio, or a font whose table directory (or collection header) is
    consistent, so that a text starting with "true" is not taken for one."""
    if len(head) != _FIELDS16_HEAD:
        return False
    if head.startswith(b"ttcf"):
        version, fonts = int.from_bytes(head[4:8], "big"), int.from_bytes(head[8:12], "big")
        return version in (0x10000, 0x20000) and 0 < fonts < 1 << 16
    if head[:4] in _FONT_TAGS:  # the table count, and the binary-search fields derived from it
        tables, search, selector, shift = (int.from_bytes(head[i : i + 2], "big") for i in range(4, 12, 2))
        return 1 << selector <= tables < 2 << selector and search == 16 << selector and shift == 16 * tables - search
    return _AUDIO_HEADER.fullmatch(head) is not None


class CountInputs(NamedTuple):
    """What the model reads of the count models, for any leading shape (..., streams x positions):
    each channel's counts, and their summary: how many bytes the context has seen, how many
    distinct ones, and the largest count. The lookup sums those in its loop; the model would
    otherwise read every count three more times (a third of the default's training step)."""

    counts: np.ndarray  # (..., channels, vocab)
    summary: np.ndarray  # (..., channels, 3) int32: seen, distinct, largest

    @classmethod
    def of(cls, counts: np.ndarray) -> CountInputs:
        """Counts with their summary, computed here (for counts not from a lookup)."""
        summary = np.stack([counts.sum(-1, dtype=np.int64), (counts > 0).sum(-1), counts.max(-1)], -1)
        return cls(counts, summary.astype(np.int32))

    def position(self, i: int) -> CountInputs:
        """The inputs at position i of every stream, from those of a segment (streams, positions, ...)."""
        return CountInputs(self.counts[:, i], self.summary[:, i])


class Found(NamedTuple):
    """What a lookup found: the counts the model reads, and the rows (with their context checks)
    that `update` then counts the coded tokens into."""

    inputs: CountInputs  # counts (streams, channels, vocab) and their summary
    rows: np.ndarray  # (streams, hashed channels) flat row indices
    check: np.ndarray  # (streams, hashed channels) the contexts' 32-bit checks
    above: np.ndarray  # (streams,) the byte above each position (count_columns), for update

    @property
    def counts(self) -> np.ndarray:
        return self.inputs.counts


class Tables(NamedTuple):
    """The state the kernels read and write, by name (Numba compiles attribute access on it)."""

    counts: np.ndarray
    checks: np.ndarray
    context: np.ndarray
    word: np.ndarray
    previous_words: np.ndarray
    recent: np.ndarray
    match_table: np.ndarray
    match_at: np.ndarray
    match_run: np.ndarray
    line_start: np.ndarray
    above_start: np.ndarray
    same_line: np.ndarray
    last_seen: np.ndarray
    last_gaps: np.ndarray
    record_guess: np.ndarray
    record_votes: np.ndarray
    record: np.ndarray
    followed: np.ndarray
    followed_one: np.ndarray
    shape: np.ndarray
    nest: np.ndarray
    depth: np.ndarray
    pixel: np.ndarray
    fields16: np.ndarray
    utf16: np.ndarray
    nul_lines: np.ndarray


class Options(NamedTuple):
    """The config's count settings the kernels read, by name."""

    orders: int
    sparse: int
    words: int
    columns: int
    records: int
    indirect: int
    shape: int
    order0: int
    nest: int
    match: int
    decay: int
    limit: int
    record_first: int  # the first record channel among the hashed channels
    match_shift: int  # 64 - count_rows_log2: a hash's top bits are the match table's slot
    own_order: int  # the byte order whose counts each stream keeps for itself, or 0


def _zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Zeros in shared anonymous memory, mapped lazily: untouched pages cost nothing. Linux backs
    it with 2 MB pages only where shared memory may have them (transparent_hugepage/shmem_enabled,
    `never` on most systems); then the first touch of a region zeroes 2 MB. NumPy's own zeros get
    2 MB pages wherever transparent huge pages are on request, which made the default's tables
    resident at once (peak RSS 2.4 against 0.9 GB) and a 10 KB compress 1.3-3.3 s slower, though
    they make the lookups and updates faster (fewer TLB misses: 30 % in a loop over 24 KB of text)."""
    items = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(items * np.dtype(dtype).itemsize, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux only
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, dtype, items).reshape(shape)


class ContextCounts:
    def __init__(self, config: Config, streams: int) -> None:
        self.config = config
        # Per hashed channel, in the order _keys makes them: the bits of its keys, and whether it decays.
        # The stream's own order is keyed by the stream too: it gets the rows of a long context.
        channels = [(64 if k == config.count_own_order else 8 * k, k >= config.count_decay_from) for k in range(1, config.count_orders + 1)]
        channels += [(8, False), (16, False)] * config.count_sparse + [(64, True)] * config.word_channels
        channels += [(18, False), (17, False)] * config.count_columns
        self._record_channels = slice(len(channels), len(channels) + 2 * config.count_records)
        channels += [(64, False), (64, False)] * config.count_records
        channels += [(32, False), (24, False)][: config.count_indirect] + [(32, False)] * config.count_shape
        channels += [(0, False)] * config.count_order0 + [(18, False)] * config.count_nest
        self.hashed_channels = len(channels)
        key_bits = np.array([bits for bits, _ in channels], np.int64)
        self._decays = np.array([decays for _, decays in channels], np.bool_)
        # A channel whose keys have fewer bits than count_rows_log2 (orders 1 and 2, the sparse
        # contexts) gets a few times as many rows as it has contexts; the others get 2**count_rows_log2.
        rows_log2 = np.minimum(key_bits + 2, config.count_rows_log2)  # + 2: fewer collisions
        self._shifts = (64 - rows_log2).astype(np.uint64)
        self._row_base = np.concatenate([[0], np.cumsum(1 << rows_log2)[:-1]]).astype(np.int64)
        rows = int(np.sum(1 << rows_log2))
        # A count is halved (with its row) before it passes count_limit, so the limit bounds them:
        # bytes when it fits, which halves the memory.
        dtype = np.uint8 if config.count_limit <= 255 else np.uint16
        # Pages are mapped lazily (_zeros): small inputs only pay for the rows they use.
        self.counts = _zeros((rows, config.vocab_size), dtype)
        self.checks = _zeros((rows,), np.uint32)
        self.context = np.zeros(streams, np.uint64)  # each stream's last 8 bytes, newest lowest
        self.word = np.zeros(streams, np.uint64)  # hash of the word being read, 0 between words
        self.previous_words = np.zeros((streams, 2), np.uint64)  # the last word, and the one before it
        self.recent = np.zeros((streams, 1 << config.match_window_log2), np.uint8)  # ring: position p at p % size
        self.match_table = np.full(1 << config.count_rows_log2, -1, np.int64)  # (stream, 8-byte context) -> the position after it
        self.match_at = np.full(streams, -1, np.int64)  # where each stream's match points, or -1
        self.match_run = np.zeros(streams, np.int64)
        self.line_start = np.zeros(streams, np.int64)  # the position of the current line's first byte
        self.above_start = np.full(streams, -1, np.int64)  # the previous line's, or -1
        self.same_line = np.ones(streams, np.bool_)  # whether the line so far equals the previous line's start
        self.last_seen = np.full((streams, config.vocab_size), -1, np.int64)  # where each byte value was last seen
        self.last_gaps = np.zeros((streams, config.vocab_size, _RECORD_GAPS), np.int64)  # the distances between its last occurrences
        self.record_guess = np.zeros(streams, np.int64)  # the distance that leads the vote, and by how much
        self.record_votes = np.zeros(streams, np.int64)
        self.record = np.zeros(streams, np.int64)  # the detected record length, 0 until one is
        # Indirect contexts (count_indirect): the two bytes that last followed each 2-byte and
        # each 1-byte context in each stream, newest lowest.
        self.followed = np.zeros((streams, 1 << 16), np.uint16)
        self.followed_one = np.zeros((streams, 1 << 8), np.uint16)
        self.shape = np.zeros(streams, np.uint64)  # the classes of each stream's last 8 bytes, 4 bits each, newest lowest (count_shape)
        self.nest = np.zeros(streams, np.uint64)  # open brackets and quotes (count_nest), 3 bits each, innermost lowest
        self.depth = np.zeros(streams, np.int64)  # how many are open
        self.pixel = np.zeros(streams, np.int64)  # bytes per pixel of an image whose header gave the record length, else 0
        self.fields16 = np.zeros(streams, np.bool_)  # whether the column and word channels key on fields (has_fields16)
        self.utf16 = np.zeros(streams, np.bool_)  # whether the data is UTF-16 text, by its byte-order mark
        self.nul_lines = np.zeros(streams, np.bool_)  # whether a zero byte ends a line (a message catalog)
        # The position whose counts the next lookup gives. A pass over more data (given data first)
        # goes on counting from here, so its matches may point back into the earlier data.
        self.time = 0
        c = config
        self._options = Options(
            c.count_orders, c.count_sparse, c.count_words, c.count_columns, c.count_records, c.count_indirect, c.count_shape,
            c.count_order0, c.count_nest, c.match_model, c.count_decay, c.count_limit, self._record_channels.start,
            64 - c.count_rows_log2, c.count_own_order,
        )  # fmt: skip

    def lookup(self) -> Found:
        """The counts for every stream's contexts at the current position."""
        streams = len(self.context)
        found = np.empty((streams, self.config.count_channels, self.config.vocab_size), np.uint16)
        summary = np.empty((streams, self.config.count_channels, 3), np.int32)
        rows = np.empty((streams, self.hashed_channels), np.int64)
        check = np.empty((streams, self.hashed_channels), np.uint32)
        above = np.empty(streams, np.int64)
        _lookup(self._options, self.time, self._tables(), self._row_base, self._shifts, found, summary, rows, check, above)
        return Found(CountInputs(found, summary), rows, check, above)

    def update(self, found: Found, active: np.ndarray, tokens: np.ndarray) -> None:
        """Count `tokens` (one per active stream) in the contexts `found` at this position, and move on."""
        streams = np.flatnonzero(active).astype(np.int64)
        tokens = np.asarray(tokens, np.int64)
        _update(self._options, self.time, self._tables(), self._decays, found.rows, found.check, found.above, streams, tokens)
        if self.time < _HEAD_BYTES:
            self._read_head(self.recent[0, : self.time + 1].tobytes())
        self.time += 1

    def _read_head(self, head: bytes) -> None:
        """What the first stream's first bytes say about the data, for every stream, as each of
        them becomes known: an image's rows, a font's or audio's fields, UTF-16's byte-order mark,
        a message catalog's magic."""
        if self.config.count_records and not self.pixel[0]:
            row, pixel = image_layout(head)
            if row:
                self.record[:], self.pixel[:] = row, pixel
        if self.config.count_fields16 and len(head) == _FIELDS16_HEAD:
            self.fields16[:] = has_fields16(head)
        if len(head) == 2:
            self.utf16[:] = head in _UTF16_BOMS
        if len(head) == 4:
            self.nul_lines[:] = head in _CATALOG_MAGICS

    def _tables(self) -> Tables:
        return Tables(*(getattr(self, name) for name in Tables._fields))

    def _above(self) -> np.ndarray:
        """Each stream's byte above the current position (256 where there is none)."""
        return np.array([_above(self._tables(), self.time, b) for b in range(len(self.context))])

    def _back(self, distance: np.ndarray) -> np.ndarray:
        """Each stream's byte `distance` positions back (distance >= 1), or 0 where there is none."""
        return np.array([_back(self.recent, self.time, b, int(d)) for b, d in enumerate(distance)])


# --- the kernels: compiled by Numba, one call per position for all streams ----------------------
# Every value is an explicit int64 or uint64 (Numba would turn a mix of the two into a float).

_U8, _U16, _U24, _U32 = np.uint64(8), np.uint64(16), np.uint64(24), np.uint64(32)
_BYTE, _PAIR = np.uint64(0xFF), np.uint64(0xFFFF)
_BYTES_246, _BYTES_135 = np.uint64(0xFF00FF00FF00), np.uint64(0xFF00FF00FF)  # of a context, newest byte lowest
_FIELD_WORDS = np.array([0xFF00FF00, 0xFF00FF, 0xFF000000FF000000], np.uint64)  # bytes 2 and 4, 1 and 3, 4 and 8 back


@numba.njit(cache=True)
def _recall(recent: np.ndarray, pointer: int, newest: int) -> tuple[bool, int]:
    """(readable, token) at a pointer (stream << 40 | position): readable if it points at one of
    the positions up to `newest` that the ring still holds."""
    position = pointer & _POSITIONS
    if pointer < 0 or position > newest or position <= newest - recent.shape[1]:
        return False, 0
    return True, np.int64(recent[pointer >> _POSITION_BITS, position % recent.shape[1]])


@numba.njit(cache=True)
def _back(recent: np.ndarray, time: int, stream: int, distance: int) -> int:
    """The stream's byte `distance` positions back (distance >= 1), or 0 where there is none."""
    position = time - distance
    if distance <= 0 or position < 0:
        return 0
    return _recall(recent, (stream << _POSITION_BITS) | position, time - 1)[1]


@numba.njit(cache=True)
def _above(tables: tuple, time: int, stream: int) -> int:
    """The stream's byte above the current position (same column of the previous line), or 256
    where the previous line is shorter (or gone from the ring, or there is none)."""
    above = tables.above_start[stream] + (time - tables.line_start[stream])
    if tables.above_start[stream] < 0 or above >= tables.line_start[stream]:
        return 256
    readable, token = _recall(tables.recent, (stream << _POSITION_BITS) | above, time - 1)
    return token if readable else 256


@numba.njit(cache=True)
def _zero_bytes(context: np.uint64) -> int:
    """How many of the 8 bytes of a context are zero."""
    zeros = 0
    for i in range(8):
        zeros += (context >> np.uint64(8 * i)) & _BYTE == 0
    return zeros


@numba.njit(cache=True)
def _lookup(options, time, tables, row_base, shifts, found, summary, rows, check, above):
    orders, sparse, n_words, columns, records = options.orders, options.sparse, options.words, options.columns, options.records
    indirect, shape_on, order0, nesting, match = options.indirect, options.shape, options.order0, options.nest, options.match
    record_first = options.record_first
    counts, checks, context, recent = tables.counts, tables.checks, tables.context, tables.recent
    record, pixel = tables.record, tables.pixel
    hashed = rows.shape[1]
    keys = np.empty(hashed, np.uint64)
    for b in range(len(context)):
        ctx = context[b]
        left = ctx & _BYTE
        fields = tables.fields16[b] or (tables.nul_lines[b] and _zero_bytes(ctx) >= _TABLE_ZEROS)
        h = 0
        for k in range(1, orders + 1):
            keys[h] = ctx & ((np.uint64(1) << np.uint64(8 * k)) - np.uint64(1))
            if k == options.own_order:  # this stream's own counts: the key names the stream
                keys[h] ^= np.uint64(b + 1) * _ROW_HASH
            h += 1
        if sparse:  # skip the last byte: the 2nd last; the 2nd and 3rd last
            keys[h], keys[h + 1] = (ctx >> _U8) & _BYTE, (ctx >> _U8) & _PAIR
            h += 2
        if n_words and fields:  # fields, not words: see the column contexts
            for i in range(n_words + 1):
                keys[h + i] = ctx & _FIELD_WORDS[i]
            h += n_words + 1
        elif n_words:
            w = tables.word[b]
            keys[h] = w
            for i in range(n_words):
                w = w * _WORD_HASH + tables.previous_words[b, i]
                keys[h + 1 + i] = w
            h += n_words + 1
        above[b] = 256
        if columns and fields:  # the same byte, and the other one, of the last 3 fields
            keys[h], keys[h + 1] = ctx & _BYTES_246, ctx & _BYTES_135
            h += 2
        elif columns:
            above[b] = _above(tables, time, b)
            column = np.uint64(min(time - tables.line_start[b], 255))
            keys[h] = np.uint64(above[b]) | (left << np.uint64(9)) | (np.uint64(tables.same_line[b]) << np.uint64(17))
            keys[h + 1] = np.uint64(above[b]) | (column << np.uint64(9))
            h += 2
        if records:
            back = np.uint64(_back(recent, time, b, record[b]))
            length = np.uint64(min(record[b], 1 << 20)) << _U24
            if pixel[0]:  # an image (all streams at once): N with W, and W + N - NW
                west = _back(recent, time, b, pixel[b])
                north_west = _back(recent, time, b, record[b] + pixel[b])
                predicted = np.uint64(min(max(west + np.int64(back) - north_west, 0), 255))
                keys[h], keys[h + 1] = back | (np.uint64(west) << _U8) | length, predicted | _IMAGE_KEY
            else:
                back2 = np.uint64(_back(recent, time, b, 2 * record[b]))
                keys[h], keys[h + 1] = back | (left << _U8) | length, back | (back2 << _U8) | length
            h += 2
        if indirect:
            at = ctx & _PAIR
            keys[h] = at | (np.uint64(tables.followed[b, at]) << _U16)
            h += 1
        if indirect > 1:
            keys[h] = left | (np.uint64(tables.followed_one[b, left]) << _U8)
            h += 1
        if shape_on:
            keys[h] = tables.shape[b] | (left << _U32)
            h += 1
        if order0:
            keys[h] = np.uint64(0)
            h += 1
        if nesting:
            depth = np.uint64(min(tables.depth[b], 15))
            keys[h] = (tables.nest[b] & np.uint64(0x3F)) | (depth << np.uint64(6)) | (left << np.uint64(10))
        for h in range(hashed):
            key = keys[h] + np.uint64(h + 1)  # equal keys of different channels differ
            row = row_base[h] + np.int64((key * _ROW_HASH) >> shifts[h])
            rows[b, h], check[b, h] = row, np.uint32((key * _CHECK_HASH) >> np.uint64(32))
            # No record length yet: nothing to predict from, rather than a second order 1.
            silent = records and record_first <= h < record_first + 2 and record[b] == 0
            seen, distinct, largest = 0, 0, 0
            if checks[row] == check[b, h] and not silent:
                for v in range(counts.shape[1]):
                    n = counts[row, v]
                    found[b, h, v] = n
                    seen += n
                    distinct += n > 0
                    largest = max(largest, n)
            else:
                found[b, h, :] = 0
            summary[b, h, 0], summary[b, h, 1], summary[b, h, 2] = seen, distinct, largest
        if match:
            found[b, hashed, :] = 0
            summary[b, hashed, :] = 0
            readable, predicted = _recall(recent, tables.match_at[b], time - 1)
            if readable:
                n = 1 + tables.match_run[b]
                found[b, hashed, predicted] = n
                summary[b, hashed, 0], summary[b, hashed, 1], summary[b, hashed, 2] = n, 1, n


@numba.njit(cache=True)
def _update(options, time, tables, decays, rows, check, above, streams, tokens):
    n_words, columns, records, indirect, shape_on = options.words, options.columns, options.records, options.indirect, options.shape
    nesting, match, decay, limit = options.nest, options.match, options.decay, options.limit
    record_first, match_shift = options.record_first, options.match_shift
    counts, checks, context, recent = tables.counts, tables.checks, tables.context, tables.recent
    word, previous_words = tables.word, tables.previous_words
    line_start, above_start, same_line = tables.line_start, tables.above_start, tables.same_line
    for i in range(len(streams)):
        b, token = streams[i], tokens[i]
        for h in range(rows.shape[1]):
            if records and record_first <= h < record_first + 2 and tables.record[b] == 0:
                continue  # silent: see _lookup
            row = rows[b, h]
            if checks[row] != check[b, h]:  # a row taken over by another context starts from zero
                counts[row, :] = 0
                checks[row] = check[b, h]
            if decay and decays[h]:  # pull the other counts above `decay` halfway down to it
                for v in range(counts.shape[1]):
                    if v != token and counts[row, v] > decay:
                        counts[row, v] = (counts[row, v] + decay) >> 1
            if counts[row, token] >= limit:
                for v in range(counts.shape[1]):
                    counts[row, v] >>= 1
            counts[row, token] += 1
        symbol = np.uint64(token)
        skip_zero = token == 0 and tables.utf16[b]  # UTF-16's zero bytes: words and shapes read past them
        if n_words and not skip_zero:
            last = context[b] & _BYTE
            in_word = (ord("a") <= (token | 0x20) <= ord("z")) or token >= 128
            # A UTF-8 character of 3 or 4 bytes starting after another multi-byte one also ends
            # the word: CJK text has no spaces, so its words would run to the next punctuation;
            # so they are its characters (a Latin-1 letter after an ASCII one is not such a start).
            # Not where the word goes on (_word_goes_on): spaced scripts, runs of Japanese kana.
            starts = token >= 0xE0 and np.uint64(0x80) <= last < np.uint64(0xC0) and not _word_goes_on(context[b], token)
            if (not in_word or starts) and word[b] != 0:
                previous_words[b, 1], previous_words[b, 0] = previous_words[b, 0], word[b]
            w = np.uint64(0) if starts else word[b]
            word[b] = w * _WORD_HASH + (symbol | np.uint64(0x20)) if in_word else np.uint64(0)
        if columns:
            same_line[b] = same_line[b] and above[b] == token
            if token == ord("\n") or (token == 0 and tables.nul_lines[b]):
                above_start[b], line_start[b], same_line[b] = line_start[b], time + 1, True
        if records:
            _follow_records(tables, time, b, token)
        if indirect:
            at = context[b] & _PAIR
            tables.followed[b, at] = (tables.followed[b, at] << np.uint16(8)) | np.uint16(token)
        if indirect > 1:
            one = context[b] & _BYTE
            tables.followed_one[b, one] = (tables.followed_one[b, one] << np.uint16(8)) | np.uint16(token)
        if nesting:
            _follow_nesting(tables, b, token)
        context[b] = (context[b] << _U8) | symbol
        if shape_on and not skip_zero:
            tables.shape[b] = ((tables.shape[b] << np.uint64(4)) | _BYTE_CLASS[token]) & np.uint64(0xFFFFFFFF)
        recent[b, time % recent.shape[1]] = token
    if match:  # after every stream's ring holds this position
        match_table, match_at, match_run = tables.match_table, tables.match_at, tables.match_run
        for i in range(len(streams)):
            b, token = streams[i], tokens[i]
            at = match_at[b]
            readable, predicted = _recall(recent, at, time)
            right = readable and predicted == token
            match_run[b] = min(match_run[b] + 1, _MATCH_MAX_RUN) if right else 0
            # A right prediction moves on; otherwise look for an earlier occurrence of the new
            # context in this stream (the stream is in the key, so the streams share one table).
            own = context[b] ^ (np.uint64(b) << np.uint64(56)) ^ np.uint64(b)
            slot = np.int64((own * _ROW_HASH) >> np.uint64(match_shift))
            match_at[b] = at + 1 if right else match_table[slot]
            match_table[slot] = (b << _POSITION_BITS) | (time + 1)


@numba.njit(cache=True)
def _word_goes_on(context, token):
    """Whether a character of 3 or 4 bytes that starts with `token`, after the one that ends
    `context`, goes on its word: after a character of a script that puts spaces between its words,
    an Indic one (U+0900-U+0DFF) or a Hangul syllable (U+AC00-U+D7A3); and in Japanese, a kana
    (U+3040-U+30FF) or CJK punctuation after a kana, so that a run of kana (an inflection, a
    particle) is one word."""
    lead, second = (context >> _U16) & _BYTE, (context >> _U8) & _BYTE
    if lead == 0xE3 and 0x81 <= second <= 0x83:
        return token == 0xE3
    if lead == 0xE0:
        return 0xA4 <= second <= 0xB7
    return (lead == 0xEA and second >= 0xB0) or lead == 0xEB or lead == 0xEC or (lead == 0xED and second < 0x9F)


@numba.njit(cache=True)
def _follow_records(tables, time, b, token):
    """paq8px's record detection: a byte value seen at equal distances _RECORD_GAPS times running
    votes for that distance; one that leads by _RECORD_VOTES becomes the record length."""
    last_seen, last_gaps, guess, votes, record, pixel = (
        tables.last_seen,
        tables.last_gaps,
        tables.record_guess,
        tables.record_votes,
        tables.record,
        tables.pixel,
    )
    seen = last_seen[b, token]
    gap = time - seen if seen >= 0 else 0
    repeats = gap > 1
    for j in range(_RECORD_GAPS):
        repeats = repeats and last_gaps[b, token, j] == gap
    for j in range(_RECORD_GAPS - 1, 0, -1):
        last_gaps[b, token, j] = last_gaps[b, token, j - 1]
    last_gaps[b, token, 0] = gap
    last_seen[b, token] = time
    if repeats:
        lead = votes[b] + (1 if gap == guess[b] else -1)
        if lead < 0:
            guess[b] = gap
        votes[b] = max(lead, 0)
        if votes[b] >= _RECORD_VOTES and pixel[b] == 0:
            record[b] = guess[b]


@numba.njit(cache=True)
def _follow_nesting(tables, b, token):
    """Open and close brackets ((, [, {, <) and quotes (", '): inside a quote only its own quote
    counts, so brackets in strings do not unbalance the code around them."""
    nest, depth = tables.nest, tables.depth
    top = nest[b] & np.uint64(7)
    opens, closes = _OPENS[token], _CLOSES[token]
    if top >= _QUOTES:  # inside a string
        pop, push = opens == top, False
    else:
        pop, push = closes != 0 and closes == top, opens != 0
    if pop and depth[b] > 0:
        nest[b], depth[b] = nest[b] >> np.uint64(3), depth[b] - 1
    elif push:
        nest[b], depth[b] = (nest[b] << np.uint64(3)) | opens, depth[b] + 1
