"""The .pq file format: a versioned binary header, then coded blocks (or the stored input).

Layout (integers little-endian; varint = unsigned LEB128; str8/str16 = length-prefixed UTF-8):

    stored: (when coding would not make the input smaller; no model is needed to read it)
            magic "\\x89PQZ" | format u8 | flags u8 = STORED | n_bytes varint | crc32 of the data u32 | crc32 u32
            | the input itself
    header: magic "\\x89PQZ" | format u8 | flags u8 | n_bytes varint | sha256 32B
            | package version str8 | library digest 4B | code digest 4B
            | backend str8 | device kind str8 | threads u16 | devices varint | processes varint | XLA flags digest 4B
            | fingerprint 8B | preset str8 | config overrides str16 (compact JSON)
            | [flag GIVEN: sha256 of the given data (flag LABELS: of the inputs X) 32B] | crc32 u32
    block:  n_words varint | n_sync x parameter digest 4B | [last block: ideal bits f64]
            | n_words x u32 range-coder words | crc32 u32

Every length is bounded before anything is allocated, so a hostile file cannot make the reader
ask for more memory than its own size plus the bounds below. Nothing read is ever executed.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import BinaryIO

import numpy as np

from prequential.config import Config, from_compact, to_compact
from prequential.errors import ConfigError, FormatError, PrequentialError
from prequential.numerics import Numerics

MAGIC = b"\x89PQZ"
FORMAT_VERSION = 1
FLAG_STORED = 1
FLAG_USER_MODEL = 2
FLAG_GIVEN = 4
FLAG_LABELS = 8  # labels coded given inputs (supervised.py); the given digest is the inputs'
_KNOWN_FLAGS = FLAG_STORED | FLAG_USER_MODEL | FLAG_GIVEN | FLAG_LABELS
MAX_VARINT_BYTES = 10
MAX_DEVICES = 4096  # as many as streams can be


@dataclasses.dataclass(frozen=True)
class Header:
    """A coded file's header holds everything its decoder replays and checks; a stored file's
    (flag STORED) only the length and the data's CRC-32, since no model is needed to read it."""

    flags: int
    n_bytes: int
    sha256: bytes | None = None
    package_version: str | None = None
    library_digest: bytes | None = None
    code_digest: bytes | None = None
    numerics: Numerics | None = None
    fingerprint: bytes | None = None
    config: Config | None = None
    given_sha256: bytes | None = None  # the data the model was trained on first (FLAG_GIVEN)
    data_crc32: int | None = None  # stored files only

    @property
    def stored(self) -> bool:
        return bool(self.flags & FLAG_STORED)

    @property
    def user_model(self) -> bool:
        return bool(self.flags & FLAG_USER_MODEL)

    @property
    def labels(self) -> bool:
        return bool(self.flags & FLAG_LABELS)


@dataclasses.dataclass(frozen=True)
class Block:
    words: np.ndarray  # uint32 range-coder output
    digests: list[bytes]
    ideal_bits: float | None  # only in the last block


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self.parts.append(data)

    @staticmethod
    def _varint_bytes(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    def varint(self, value: int) -> None:
        self.parts.append(self._varint_bytes(value))

    def string(self, text: str, width: int) -> None:
        data = text.encode()
        if len(data) >= 1 << (8 * width):
            raise PrequentialError(f"header string too long: {text[:40]!r}")
        self.parts.append(len(data).to_bytes(width, "little") + data)

    def finish_with_crc(self) -> bytes:
        body = b"".join(self.parts)
        return body + struct.pack("<I", zlib.crc32(body))


class _Reader:
    """Bounded reads from a stream; remembers the bytes read since the last checksum."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.seen = bytearray()

    def raw(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise FormatError(f"file is truncated (while reading the {what})")
        self.seen += data
        return data

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.raw(1, what)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise FormatError(f"file is corrupt (overlong number in the {what})")

    def string(self, width: int, what: str) -> str:
        n = int.from_bytes(self.raw(width, what), "little")
        try:
            return self.raw(n, what).decode()
        except UnicodeDecodeError:
            raise FormatError(f"file is corrupt (bad text in the {what})") from None

    def check_crc(self, what: str) -> None:
        body = bytes(self.seen)
        (crc,) = struct.unpack("<I", self.raw(4, what))
        if crc != zlib.crc32(body):
            raise FormatError(f"file is corrupt (checksum mismatch in the {what})")
        self.seen.clear()


def encode_header(h: Header) -> bytes:
    w = _Writer()
    w.raw(MAGIC + bytes([FORMAT_VERSION, h.flags]))
    w.varint(h.n_bytes)
    if h.stored:
        w.raw(struct.pack("<I", h.data_crc32))
        return w.finish_with_crc()
    w.raw(h.sha256)
    w.string(h.package_version, 1)
    w.raw(h.library_digest + h.code_digest)
    w.string(h.numerics.backend, 1)
    w.string(h.numerics.device_kind, 1)
    w.raw(struct.pack("<H", h.numerics.threads))
    w.varint(h.numerics.devices)
    w.varint(h.numerics.processes)
    w.raw(h.numerics.flags_digest + h.fingerprint)
    preset_name, overrides = to_compact(h.config)
    w.string(preset_name, 1)
    w.string(overrides, 2)
    if h.flags & FLAG_GIVEN:
        w.raw(h.given_sha256)
    return w.finish_with_crc()


def read_header(stream: BinaryIO) -> Header:
    r = _Reader(stream)
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise FormatError("not a prequential file (bad magic bytes)")
    r.seen += magic
    version, flags = r.raw(2, "header")
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported format version {version} (this prequential reads version {FORMAT_VERSION})")
    n_bytes = r.varint("header")
    if flags & FLAG_STORED:
        (data_crc32,) = struct.unpack("<I", r.raw(4, "header"))
        r.check_crc("header")
        if flags != FLAG_STORED:
            raise FormatError(f"file is corrupt (header flags {flags:#x} on stored data)")
        return Header(flags, n_bytes, data_crc32=data_crc32)
    sha = r.raw(32, "header")
    package_version = r.string(1, "header")
    library_digest, code_digest = r.raw(4, "header"), r.raw(4, "header")
    backend, device_kind = r.string(1, "header"), r.string(1, "header")
    (threads,) = struct.unpack("<H", r.raw(2, "header"))
    devices = r.varint("header")
    processes = r.varint("header")
    flags_digest, fingerprint = r.raw(4, "header"), r.raw(8, "header")
    preset_name, overrides = r.string(1, "header"), r.string(2, "header")
    given = r.raw(32, "header") if flags & FLAG_GIVEN else None
    r.check_crc("header")
    if flags & ~_KNOWN_FLAGS:
        raise FormatError(f"file is corrupt (unknown header flags {flags:#x})")
    try:
        config = from_compact(preset_name, overrides)
    except ConfigError as err:
        raise FormatError(f"file is corrupt or from another version (header config: {err})") from None
    if not 1 <= processes <= devices <= MAX_DEVICES:
        raise FormatError(f"file is corrupt (header declares {devices} devices in {processes} processes)")
    numerics = Numerics(backend, device_kind, threads, flags_digest, devices, processes)
    return Header(flags, n_bytes, sha, package_version, library_digest, code_digest, numerics, fingerprint, config, given)


def block_framing_bytes(n_words: int, n_sync: int, last: bool) -> int:
    """The bytes a block adds to its range-coder words: the word count, the sync digests, the
    ideal bits (last block only) and the CRC-32."""
    return len(_Writer._varint_bytes(n_words)) + 4 * n_sync + (8 if last else 0) + 4


def encode_block(words: np.ndarray, digests: list[bytes], ideal_bits: float | None) -> bytes:
    w = _Writer()
    w.varint(len(words))
    w.raw(b"".join(digests))
    if ideal_bits is not None:
        w.raw(struct.pack("<d", ideal_bits))
    w.raw(words.astype("<u4").tobytes())
    return w.finish_with_crc()


def read_block(stream: BinaryIO, n_sync: int, last: bool, max_words: int) -> Block:
    r = _Reader(stream)
    n_words = r.varint("block")
    if n_words > max_words:
        raise FormatError(f"file is corrupt (a block claims {n_words} words, at most {max_words} possible)")
    digests = [r.raw(4, "block") for _ in range(n_sync)]
    ideal_bits = struct.unpack("<d", r.raw(8, "block"))[0] if last else None
    words = np.frombuffer(r.raw(4 * n_words, "block"), dtype="<u4").astype(np.uint32)
    r.check_crc("block")
    return Block(words, digests, ideal_bits)


def expect_end(stream: BinaryIO) -> None:
    if stream.read(1):
        raise FormatError("file is corrupt (unexpected data after the end)")
