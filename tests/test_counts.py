"""The count models' storage and update rules (counts.py), checked against hand-computed values."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import CHANNELS, TINY

import prequential
from prequential.config import NO_COUNTS
from prequential.counts import _BYTE_CLASS, ContextCounts, CountInputs, has_fields16, image_layout
from prequential.measure import measure


def feed(counts: ContextCounts, text: bytes, streams: int = 1) -> np.ndarray:
    """Count `text` in every stream; return the counts looked up after it."""
    for token in text:
        counts.update(counts.lookup(), np.ones(streams, bool), np.full(streams, token))
    return counts.lookup().counts


@pytest.mark.parametrize(("streams", "limit", "dtype"), [(4, 248, np.uint8), (64, 255, np.uint8), (64, 256, np.uint16)])
def test_counts_use_bytes_when_they_fit_and_never_wrap(streams, limit, dtype):
    config = TINY.replace(count_limit=limit)
    counts = ContextCounts(config, streams)
    assert counts.counts.dtype == dtype
    # Every stream counts "a" after "a" in the same row each step, one stream after the other.
    found = feed(counts, b"a" * 300, streams)
    expected = 0
    for _ in range(299 * streams):  # the first "a" has no "a" before it
        expected = (expected >> 1 if expected >= config.count_limit else expected) + 1
    assert found[0, 0, ord("a")] == expected <= limit


def test_long_contexts_decay_and_short_ones_do_not():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=6, count_decay=12, count_decay_from=5)
    found = feed(ContextCounts(config, 1), b"abcdefx" * 30 + b"abcdefy" + b"abcdef")
    order3, order6 = found[0, 2], found[0, 5]
    assert (order3[ord("x")], order3[ord("y")]) == (30, 1)  # "def": counted, not decayed
    assert (order6[ord("x")], order6[ord("y")]) == ((30 + 12) // 2, 1)  # "abcdef": pulled halfway to 12
    undecayed = feed(ContextCounts(config.replace(count_decay=0), 1), b"abcdefx" * 30 + b"abcdefy" + b"abcdef")
    assert undecayed[0, 5, ord("x")] == 30


def test_a_third_word_context_keys_on_the_two_previous_words():
    config = TINY.replace(**NO_COUNTS).replace(count_words=2, count_orders=1)
    assert config.count_channels == 1 + 3
    found = feed(ContextCounts(config, 1), b"one two three. two three four. one two three")
    # Before the end, "three" after "one two" was followed by "." (once), and "three" after "two"
    # by "." and by " " (in "two three four").
    assert found[0, 3].sum() == 1 and found[0, 3, ord(".")] == 1
    assert found[0, 2].sum() == 2


def test_match_model_forgets_what_left_its_ring():
    text = b"abcdefghij" + bytes(300) + b"abcdefghi"
    # The context "bcdefghi" occurred 310 positions ago, more than a 256-token ring holds: no prediction.
    assert not feed(ContextCounts(TINY.replace(match_window_log2=8), 1), text)[0, -1].any()
    near = feed(ContextCounts(TINY.replace(match_window_log2=9), 1), text)
    assert near[0, -1, ord("j")] > 0  # within a 512-token ring it predicts the "j"


def test_match_model_follows_its_own_streams_last_occurrence():
    counts = ContextCounts(TINY.replace(**NO_COUNTS).replace(match_model=1), 2)
    # Both streams read "abcdefgh", stream 0 then "x" and stream 1 "y" (stream 1 updates last),
    # then both read "abcdefgh" again: each predicts what followed it in its own stream.
    for pair in zip(b"abcdefghx--abcdefgh", b"abcdefghy--abcdefgh", strict=True):
        counts.update(counts.lookup(), np.ones(2, bool), np.array(pair))
    found = counts.lookup().counts
    assert found[0, -1, ord("x")] > 0 and found[0, -1].sum() == found[0, -1, ord("x")]
    assert found[1, -1, ord("y")] > 0 and found[1, -1].sum() == found[1, -1, ord("y")]


def test_each_stream_counts_its_own_order_alone_and_shares_the_others():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=3, count_own_order=3)
    counts = ContextCounts(config, 2)
    for pair in zip(b"abcx.abc", b"abcy.abc", strict=True):
        counts.update(counts.lookup(), np.ones(2, bool), np.array(pair))
    found = counts.lookup().counts
    assert found[0, 2, ord("x")] == 1 and found[0, 2].sum() == 1  # "abc": only stream 0's "x"
    assert found[1, 2, ord("y")] == 1 and found[1, 2].sum() == 1
    assert found[0, 1, ord("x")] == found[0, 1, ord("y")] == 1  # "bc", shared: both streams'
    shared = feed(ContextCounts(config.replace(count_own_order=0), 2), b"abcx.abc", 2)
    assert shared[0, 2, ord("x")] == 2  # both streams counted "x" after "abc"


def test_the_lookups_summary_is_that_of_its_counts():
    """The model reads each channel's total, distinct bytes and largest count from the lookup's
    summary, not from the counts: a wrong summary would code both sides alike, and pass a round trip."""
    counts = ContextCounts(CHANNELS.replace(count_orders=6, count_sparse=1, count_words=2, count_columns=1, match_model=1), 3)
    text = b"the cat sat on the mat; the cat sat on the hat.\n" * 4
    summaries = []
    for token in text:
        found = counts.lookup()
        summaries.append((found.inputs.summary, CountInputs.of(found.counts).summary))
        counts.update(found, np.ones(3, bool), np.full(3, token))
    assert all(np.array_equal(mine, reference) for mine, reference in summaries)
    assert max(int(mine[..., 1].max()) for mine, _ in summaries) > 1  # some context saw several bytes


def test_three_word_contexts_round_trip():
    config = TINY.replace(count_words=2, count_sparse=1)
    data = b"the cat sat on the mat, the cat sat on the hat. " * 40
    assert prequential.decompress(prequential.compress(data, config)) == data


def test_column_contexts_read_the_byte_above_and_whether_the_line_repeats():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_columns=1)
    counts = ContextCounts(config, 1)
    feed(counts, b"abcd\nabxy\nab")
    assert counts._above()[0] == ord("x")  # the previous line's third byte
    assert counts.same_line[0]  # "ab" repeats that line's start
    found = feed(counts, b"y")
    assert not counts.same_line[0]  # "aby" is not "abx"
    assert counts._above()[0] == ord("y")
    assert found[0, 1].sum() == 0  # above "y", after "y", off the repeated start: never seen
    repeated = feed(ContextCounts(config, 1), b"ab\nab\na")
    # Line 2's "b" followed an "a" with "b" above it on a repeated start: the same context now.
    assert repeated[0, 1, ord("b")] == 1 and repeated[0, 2, ord("b")] == 1
    shorter = ContextCounts(config, 1)
    feed(shorter, b"ab\nabcd")
    assert shorter._above()[0] == 256  # the previous line has no fifth byte


@pytest.mark.parametrize("magic", [b"\xde\x12\x04\x95", b"\x95\x04\x12\xde"])
def test_in_a_message_catalog_a_zero_byte_ends_a_line(magic):
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_columns=1)
    catalog = ContextCounts(config, 1)
    feed(catalog, magic + b"abcd\0abxy\0ab")
    assert catalog._above()[0] == ord("x")  # the previous string's third byte
    other = ContextCounts(config, 1)
    feed(other, b"\x00\x01\x02\x03abcd\0abxy\0ab")
    assert other._above()[0] == 256  # elsewhere a zero byte is no line end


def test_record_length_is_detected_from_repeating_distances():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_records=1)
    rng = np.random.default_rng(0)
    records = b"".join(bytes([7, 0xAA, i % 256]) + rng.integers(0, 256, 21, dtype=np.uint8).tobytes() for i in range(40))
    counts = ContextCounts(config, 1)
    found = feed(counts, records)
    assert counts.record[0] == 24
    assert found[0, 2, 7] > 0  # a record starts: one and two records back were 7, and a 7 followed
    assert counts._back(counts.record)[0] == records[-24]  # the byte one record back
    unrelated = ContextCounts(config, 1)
    feed(unrelated, rng.integers(0, 256, 960, dtype=np.uint8).tobytes())
    assert unrelated.record[0] != 24


def test_the_indirect_context_keys_on_the_two_bytes_that_last_followed_the_last_two():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=2, count_indirect=1)
    assert config.count_channels == 2 + 1
    counts = ContextCounts(config, 1)
    # "xa" was followed by b, c, b, c: now it was last followed by c, and before that by b. The
    # last time that was so (the third "xa") a "b" followed; order 2 saw both twice.
    found = feed(counts, b"xab.xac.xab.xac.xa")
    assert counts.followed[0, ord("x") << 8 | ord("a")] == ord("b") << 8 | ord("c")
    assert (found[0, 1, ord("b")], found[0, 1, ord("c")]) == (2, 2)
    assert (found[0, 2, ord("b")], found[0, 2, ord("c")]) == (1, 0)
    # "b." was followed by x, x; "a." never occurred.
    assert counts.followed[0, ord("b") << 8 | ord(".")] == ord("x") << 8 | ord("x")
    assert counts.followed[0, ord("a") << 8 | ord(".")] == 0


def test_indirect_contexts_remember_each_streams_own_continuations():
    counts = ContextCounts(TINY.replace(**NO_COUNTS).replace(count_orders=1, count_indirect=2), 2)
    # After "a", stream 0 read "b" then "c"; stream 1 read "d" then "e".
    for pair in zip(b"ab.ac.a", b"ad.ae.a", strict=True):
        counts.update(counts.lookup(), np.ones(2, bool), np.array(pair))
    assert counts.followed_one[0, ord("a")] == ord("b") << 8 | ord("c")
    assert counts.followed_one[1, ord("a")] == ord("d") << 8 | ord("e")
    assert counts.followed[0, ord(".") << 8 | ord("a")] == ord("c")
    assert counts.followed[1, ord(".") << 8 | ord("a")] == ord("e")


def test_without_a_record_length_only_the_record_channels_are_silent():
    # Every kind of hashed channel, each after the record ones: prose has no record length, so
    # the two record channels give no counts and every other channel has seen its context.
    config = TINY.replace(count_indirect=1, count_shape=1)
    counts = ContextCounts(config, 1)
    seen = np.zeros(config.count_channels, bool)  # whether a channel gave counts at some position
    for token in b"the cat sat on the mat;\nthe cat sat on the hat;\nthe cat sat on the ":
        found = counts.lookup()
        seen |= found.counts[0].sum(-1) > 0
        counts.update(found, np.ones(1, bool), np.full(1, token))
    assert counts.record[0] == 0
    # Channels in the order of counts.py's list: byte orders, sparse, words, columns, records, ...
    first = config.count_orders + 2 * config.count_sparse + config.word_channels + 2 * config.count_columns
    records = np.zeros(config.count_channels, bool)
    records[first : first + 2] = True
    assert not seen[records].any() and seen[~records].all()


def test_indirect_contexts_and_mixer_selection_round_trip():
    config = CHANNELS
    data = b"".join(b"<entry code=%d name=%s/>\n" % (i * 37 % 101, b"abc"[: i % 3 + 1]) for i in range(200))
    assert prequential.decompress(prequential.compress(data, config)) == data


def test_column_and_record_contexts_round_trip():
    config = TINY  # which has both
    assert config.count_columns and config.count_records
    data = b"".join(b"%04d,%s,%d\n" % (i, b"xyz"[: i % 3 + 1], i * 7 % 13) for i in range(300))
    assert prequential.decompress(prequential.compress(data, config)) == data


def npy_head(array: np.ndarray) -> bytes:
    """The header of `array` saved as a .npy file (magic, version, length, dict)."""
    saved = io.BytesIO()
    np.save(saved, array)
    data = saved.getvalue()
    return data[: 10 + int.from_bytes(data[8:10], "little")]


@pytest.mark.parametrize(
    ("head", "layout"),
    [
        (npy_head(np.zeros((344, 403), "<i2")), (806, 2)),  # a raster: a row is the last axis
        (npy_head(np.zeros((200, 25, 25), "<f8")), (200, 8)),  # a stack of frames
        (npy_head(np.zeros((20, 30, 3), "u1")), (90, 3)),  # colour channels last: a pixel is all three
        (npy_head(np.zeros((4, 6), "<i2"))[:-1], (0, 0)),  # not the whole header yet
        (npy_head(np.zeros(100, "<i2")), (0, 0)),  # one axis: no rows
        (npy_head(np.zeros((4, 6), "<i2", order="F")), (0, 0)),  # Fortran order
        (npy_head(np.zeros((4, 6), [("a", "<i2")])), (0, 0)),  # records, not numbers
        (b"P6\n451 300\n255\n", (1353, 3)),
        (b"P5 640 # a comment\n480 255\n", (640, 1)),
        (b"BM" + bytes(16) + (33).to_bytes(4, "little") + bytes(4) + (1).to_bytes(2, "little") + (24).to_bytes(2, "little"), (100, 3)),
        (b"P6\n451 300\n65535\n", (0, 0)),  # 16-bit samples
        (b"P6\n451 300\n255", (0, 0)),  # not the whole header yet
        (b"P3\n451 300\n255\n", (0, 0)),  # text samples
        (b"#!/bin/sh\necho\n", (0, 0)),
    ],
)
def test_image_headers_give_the_row_and_pixel_length(head, layout):
    assert image_layout(head) == layout


def gradient_image(width: int, height: int) -> bytes:
    """A binary PGM whose every pixel is its west plus its north minus its north-west neighbour."""
    rng = np.random.default_rng(1)
    row, column = rng.integers(0, 128, width, dtype=np.int64), rng.integers(0, 128, height, dtype=np.int64)
    pixels = (row[None, :] + column[:, None] - row[0]) % 256
    return b"P5\n%d %d\n255\n" % (width, height) + pixels.astype(np.uint8).tobytes()


def test_an_image_header_sets_the_row_length_of_every_stream_and_the_gradient_context():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_records=1)
    image = gradient_image(37, 20)
    counts = ContextCounts(config, 2)
    found = feed(counts, image[:-1], streams=2)
    assert list(counts.record) == [37, 37] and list(counts.pixel) == [1, 1]
    predicted = found[0, counts._record_channels.stop - 1]  # the context W + N - NW
    assert predicted.argmax() == image[-1] and predicted[image[-1]] >= 4  # the next pixel, seen with this prediction before
    plain = ContextCounts(config, 1)
    feed(plain, image[15:])  # no header: no image
    assert plain.pixel[0] == 0


def test_an_image_round_trips():
    image = gradient_image(45, 30)
    assert prequential.decompress(prequential.compress(image, TINY)) == image


def test_a_numpy_array_file_is_read_as_an_image_and_round_trips():
    rng = np.random.default_rng(2)
    raster = np.cumsum(rng.integers(-3, 4, (40, 60)), axis=1).astype("<i2") + 500  # smooth rows, like elevations
    data = npy_head(raster) + raster.tobytes()
    counts = ContextCounts(TINY.replace(**NO_COUNTS).replace(count_orders=1, count_records=1), 2)
    feed(counts, data[:200], streams=2)
    assert list(counts.record) == [120, 120] and list(counts.pixel) == [2, 2]  # 60 numbers of 2 bytes a row
    blob = prequential.compress(data, TINY)
    assert len(blob) < len(data) and prequential.decompress(blob) == data


WAV_HEAD = b"RIFF\x24\x00\x01\x00WAVE"


@pytest.mark.parametrize(
    ("head", "fields16"),
    [
        (b"\x00\x01\x00\x00\x00\x12\x01\x00\x00\x04\x00\x20", True),  # TrueType
        (b"OTTO\x00\x0c\x00\x80\x00\x03\x00\x40", True),  # OpenType with CFF outlines
        (b"ttcf\x00\x01\x00\x00\x00\x00\x00\x02", True),  # a font collection
        (WAV_HEAD, True),
        (b"FORM\x00\x01\x00\x00AIFF", True),
        (b"RIFF\x24\x00\x01\x00AVI ", False),  # a video, not audio
        (b"\x7fELF\x02\x01\x01" + bytes(5), False),
        (b"\x00\x01\x00\x00", False),  # not 12 bytes yet
        (b"true, false\n", False),  # text, not an Apple TrueType table directory
        (b"\x00\x01\x00\x00\x00\x12\x01\x00\x00\x04\x00\x30", False),  # its fields disagree
        (b"hello, world", False),
    ],
)
def test_fonts_and_audio_are_found_from_their_first_bytes(head, fields16):
    assert has_fields16(head) == fields16


def test_in_a_font_the_column_channels_key_on_the_last_three_16_bit_fields():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_columns=1)

    def column_rows(data: bytes, head: bytes = WAV_HEAD) -> np.ndarray:
        counts = ContextCounts(config, 2)
        feed(counts, head + data, streams=2)
        assert list(counts.fields16) == [has_fields16(head)] * 2  # the first stream's head decides for every stream
        return counts.lookup().rows[0, 1:3]  # the two column channels

    rows = column_rows(b"\x00\x10\x20\x30\x40\x50\x60")
    # The bytes 2, 4 and 6 back are 50, 30 and 10; the bytes 1, 3 and 5 back are 60, 40 and 20.
    same_bytes, other_bytes = column_rows(b"\x00\x10\x99\x30\x98\x50\x97"), column_rows(b"\x00\x11\x20\x31\x40\x51\x60")
    assert same_bytes[0] == rows[0] and same_bytes[1] != rows[1]
    assert other_bytes[0] != rows[0] and other_bytes[1] == rows[1]
    assert list(column_rows(b"\x01\x10\x20\x30\x40\x50\x60")) == list(rows)  # byte 7 back is in neither
    plain = column_rows(b"\x00\x10\x99\x30\x98\x50\x97", head=b"hello, world")
    assert plain[0] != same_bytes[0]  # no font or audio: the byte above, as in text


def test_in_a_message_catalogs_tables_the_channels_key_on_fields():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_words=2, count_columns=1)
    magic = b"\xde\x12\x04\x95"

    def rows(head: bytes, data: bytes) -> np.ndarray:
        counts = ContextCounts(config, 1)
        feed(counts, head + data)
        return counts.lookup().rows[0, 1:]  # the word and column channels

    # The last 8 bytes decide: with at least 3 zero bytes the catalog's channels key on fields as
    # a font's do (the same keys, so the same rows); with fewer, on words and lines.
    for data, tables in [(b"\x07\x00\x00\x00\x1c\x00\x00\x00", True), (b"ab\0\x05c\0d\0e", True), (b"abc\0def\0gh", False)]:
        font, catalog = rows(WAV_HEAD, data), rows(magic, data)
        assert (list(font) == list(catalog)) == tables, data
    plain = rows(b"\x00\x01\x02\x03", b"\x07\x00\x00\x00\x1c\x00\x00\x00")
    assert list(plain) != list(rows(WAV_HEAD, b"\x07\x00\x00\x00\x1c\x00\x00\x00"))  # not a catalog: words and lines
    strings = [b"apple", b"banana", b"cherry"] * 30
    table = b"".join(len(text).to_bytes(4, "little") + (900 + 7 * i).to_bytes(4, "little") for i, text in enumerate(strings))
    data = magic + table + b"\0".join(strings) + b"\0"
    blob = prequential.compress(data, TINY)
    assert len(blob) < len(data) and prequential.decompress(blob) == data  # coded (not stored), and decoded


def test_in_a_font_the_word_channels_key_on_16_and_32_bit_fields():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_words=2)
    base = bytes(range(0x10, 0x19))  # no letters: no words to read

    def changes(back: int, head: bytes = WAV_HEAD) -> list[bool]:
        """Which word channels key on the byte `back` positions back."""
        rows = []
        for data in (base, base[:-back] + bytes([base[-back] ^ 1]) + base[len(base) - back + 1 :]):
            counts = ContextCounts(config, 1)
            feed(counts, head + data)
            rows.append(counts.lookup().rows[0, 1:4])
        return list(rows[0] != rows[1])

    # The bytes 2 and 4 back; 1 and 3 back; 4 and 8 back.
    assert [changes(back) for back in (1, 2, 3, 4, 5, 8)] == [
        [False, True, False],
        [True, False, False],
        [False, True, False],
        [True, False, True],
        [False, False, False],
        [False, False, True],
    ]
    assert changes(2, head=b"hello, world") == [False] * 3  # no font or audio: words


def sine_wav(samples: int) -> bytes:
    """16-bit mono PCM audio of a slow sine, after a WAV header's first 12 bytes."""
    wave = np.round(12000 * np.sin(np.arange(samples) * 0.05)).astype("<i2")
    return WAV_HEAD + wave.tobytes()


def test_16_bit_contexts_predict_audio_better_and_round_trip():
    audio = sine_wav(3000)
    with_fields, without = (measure(audio, TINY.replace(count_fields16=on), baselines=False).segment_bits.sum() for on in (1, 0))
    assert with_fields < 0.98 * without
    assert prequential.decompress(prequential.compress(audio, TINY)) == audio


@pytest.mark.parametrize(("bom", "encoding"), [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
def test_in_utf16_text_words_and_shapes_skip_the_zero_bytes(bom, encoding):
    config = TINY.replace(**NO_COUNTS).replace(count_words=2, count_shape=1)

    def state(data: bytes) -> tuple[int, int, int]:
        counts = ContextCounts(config, 1)
        feed(counts, data)
        return int(counts.word[0]), int(counts.previous_words[0, 0]), int(counts.shape[0])

    text = " the cat sat"
    assert state(bom + text.encode(encoding)) == state(b"xy" + text.encode())  # as in UTF-8, after 2 other bytes
    assert state(b"xy" + text.encode(encoding)) != state(b"xy" + text.encode())  # no mark: zero bytes end words
    data = bom + (text * 50).encode(encoding)
    assert prequential.decompress(prequential.compress(data, TINY)) == data


def test_the_shape_context_generalizes_over_letters_and_digits():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=3, count_shape=1)
    counts = ContextCounts(config, 1)
    # "d4=" never occurred, but the shape of its last 8 bytes "c3=9;d4=" (letter, digit, "=",
    # digit, ";", letter, digit, "=") did twice, followed by 7 and 9.
    found = feed(counts, b"a1=5;b2=7;c3=9;d4=")
    assert found[0, 2].sum() == 0  # order 3
    assert (found[0, 3, ord("7")], found[0, 3, ord("9")], found[0, 3].sum()) == (1, 1, 2)
    classes = [4, 3, 6, 3, 6, 4, 3, 6]  # 4 bits each, the newest lowest
    assert counts.shape[0] == sum(c << (4 * i) for i, c in enumerate(reversed(classes)))


def test_the_shape_context_knows_where_a_utf8_character_is():
    config = TINY.replace(**NO_COUNTS).replace(count_orders=1, count_shape=1)
    # The lead of a 3-byte character and its continuation bytes have classes of their own, so the
    # shape tells the second byte of a character from the third, and CJK text from Latin-1.
    counts = ContextCounts(config, 1)
    feed(counts, "是 是".encode())  # E6 98 AF 20 E6 98 AF
    lead, continuation, blank = 9, 7, 2
    classes = [lead, continuation, continuation, blank, lead, continuation, continuation]
    assert counts.shape[0] == sum(c << (4 * i) for i, c in enumerate(reversed(classes)))
    assert len({int(c) for c in _BYTE_CLASS[[ord("A"), 0x80, 0xC3, 0xE6, 0xF0, ord(" ")]]}) == 6


def test_the_empty_context_counts_every_byte():
    config = TINY.replace(**NO_COUNTS).replace(count_order0=1)
    found = feed(ContextCounts(config, 2), b"abracadabra", streams=2)
    assert [found[0, 0, ord(c)] for c in "abrcd"] == [10, 4, 4, 2, 2]  # both streams counted


def test_the_nesting_context_follows_brackets_and_ignores_them_in_strings():
    config = TINY.replace(**NO_COUNTS).replace(count_nest=1)
    counts = ContextCounts(config, 1)
    feed(counts, b'f(a[1], "x(')
    assert (oct(counts.nest[0]), counts.depth[0]) == ("0o15", 2)  # "(" then a string; its "(" opens nothing
    feed(counts, b'") {')
    assert (oct(counts.nest[0]), counts.depth[0]) == ("0o3", 1)  # the string and the call closed, a brace open
    # The same key after "{" twice: the second time, what followed the first is counted there.
    found = feed(counts, b"x} {")
    assert found[0, 0, ord("x")] == 1


def test_cjk_characters_are_words_and_latin1_letters_are_not_split():
    config = TINY.replace(**NO_COUNTS).replace(count_words=2)

    def word_after(text: bytes) -> tuple[int, int]:
        counts = ContextCounts(config, 1)
        feed(counts, text)
        return int(counts.word[0]), int(counts.previous_words[0, 0])

    zhong, wen = "中".encode(), "文".encode()
    assert word_after(zhong + wen) == (word_after(wen)[0], word_after(zhong)[0])  # the last character, after the one before
    assert word_after(b"caf\xe9")[0] != word_after(b"\xe9")[0]  # Latin-1: "\xe9" after an ASCII letter goes on the word
    kana_run, kanji = word_after("ています".encode()), word_after("漢字".encode())
    assert kana_run[0] == word_after(" ています".encode())[0] != word_after("す".encode())[0]  # a run of kana is one word
    assert kanji == (word_after("字".encode())[0], word_after("漢".encode())[0])  # kanji stay characters
    assert word_after("ます漢".encode()) == (word_after("漢".encode())[0], word_after("ます".encode())[0])  # a kanji after kana starts one


@pytest.mark.parametrize("word", ["தமிழ்", "मराठी", "한국어"])
def test_indic_and_korean_words_run_to_the_space(word):
    """Tamil, Devanagari and Hangul are written in 3-byte characters, as CJK is, but with spaces."""
    config = TINY.replace(**NO_COUNTS).replace(count_words=2)
    counts = ContextCounts(config, 1)
    feed(counts, word.encode())
    whole_word, after_space = int(counts.word[0]), ContextCounts(config, 1)
    feed(after_space, ("x " + word).encode())
    assert after_space.word[0] == whole_word  # one word from the space on
    last_character = ContextCounts(config, 1)
    feed(last_character, word[-1].encode())
    assert whole_word != int(last_character.word[0])  # not just the last character, as in CJK
