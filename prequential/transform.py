"""The x86 call/jump filter (E8/E9): a reversible preprocessing of executables (Config.x86_filter).

x86 CALL (E8) and JMP (E9) instructions hold a 32-bit offset relative to the instruction, so calls
to one function from different places are different bytes. The filter adds the position to the low
24 bits of such an offset, which makes it the absolute target: repeated calls become repeated
bytes that the count models and the match model predict. It is zpaq's filter: the encoder scans
from the last byte to the first and converts at position i when byte i is E8 or E9 and byte i + 4
(the offset's top byte, which it leaves alone) is 00 or FF; the decoder scans from the first byte
and subtracts. The decoder reads at every i the bytes the encoder read there (byte i restored by
the conversions before it, byte i + 4 still as the encoder left it), so it makes the same
decisions and the inverse is exact. Both scans run on chunks, so a file is filtered as it streams.

It applies only to data that starts with the magic of an ELF, PE or Mach-O file. No conversion
changes the first 4 bytes, so the decoder sees from the decoded data whether the encoder applied it.
"""

from __future__ import annotations

import re

import numpy as np

from prequential.config import Config
from prequential.store import ArrayStore, TokenStore

MAGICS = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe")
_OPCODE = re.compile(b"[\xe8\xe9]")
_CHUNK = 1 << 20


def applies(config: Config, head: bytes) -> bool:
    """Whether `config` filters byte data that starts with `head` (its first 4 bytes or more)."""
    return bool(config.x86_filter) and config.vocab_size == 256 and head.startswith(MAGICS)


def head(store: TokenStore, n: int) -> bytes:
    """The first bytes of n in `store`, as many as `applies` reads."""
    return _read(store, 0, min(n, 4))


def _read(store: TokenStore, start: int, count: int) -> bytearray:
    return bytearray(store.read(start, count).astype(np.uint8).tobytes())


def _convert(buf: bytearray, i: int, delta: int) -> None:
    target = (buf[i + 1] | buf[i + 2] << 8 | buf[i + 3] << 16) + delta
    buf[i + 1], buf[i + 2], buf[i + 3] = target & 0xFF, target >> 8 & 0xFF, target >> 16 & 0xFF


def _converts(buf: bytearray, i: int) -> bool:
    return (buf[i + 4] + 1) & 0xFE == 0  # the top byte is 00 or FF: a near call or jump


def encode(source: TokenStore, target: TokenStore, n: int) -> None:
    """Filter the n bytes of `source` into `target`, at the same offsets (it may be `source`)."""
    end, tail = n, b""
    while end > 0:
        start = max(end - _CHUNK, 0)
        # Positions in [start, end) read and change bytes up to end + 3: the chunk after this one
        # converted them already, and this one writes them again.
        buf = _read(source, start, end - start) + tail
        last = max(min(end, n - 4) - start, 0)  # positions that have their 4 offset bytes
        opcodes = np.flatnonzero((np.frombuffer(buf, np.uint8)[:last] & 0xFE) == 0xE8)
        for i in opcodes[::-1].tolist():  # a conversion changes only bytes after i: byte i is the input's
            if _converts(buf, i):
                _convert(buf, i, start + i)
        target.write(start, np.frombuffer(buf, np.uint8))
        end, tail = start, buf[:4]


def decode(store: TokenStore, n: int) -> None:
    """Invert `encode` on the n bytes of `store`, in place."""
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        buf = _read(store, start, min(stop + 4, n) - start)
        last = min(stop, n - 4) - start  # positions that have their 4 offset bytes
        found = _OPCODE.search(buf, 0, max(last, 0))
        while found is not None:
            i = found.start()
            if _converts(buf, i):
                _convert(buf, i, -(start + i))
            found = _OPCODE.search(buf, i + 1, last)
        store.write(start, np.frombuffer(buf, np.uint8))


def encode_tokens(config: Config, tokens: np.ndarray) -> np.ndarray:
    """The int32 tokens the model codes for these: the filter's where it applies."""
    if not applies(config, head(ArrayStore(tokens), len(tokens))):
        return tokens
    return np.frombuffer(encode_bytes(tokens.astype(np.uint8).tobytes()), np.uint8).astype(np.int32)


def encode_bytes(data: bytes) -> bytes:
    store = ArrayStore(np.frombuffer(data, np.uint8).copy())
    encode(store, store, len(data))
    return store.tokens.tobytes()


def decode_bytes(data: bytes) -> bytes:
    store = ArrayStore(np.frombuffer(data, np.uint8).copy())
    decode(store, len(data))
    return store.tokens.tobytes()
