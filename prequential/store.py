"""Where the tokens of a pass live: an array in memory, or bytes in a file read and written by offset.

The replay engine touches the tokens of one segment at a time (and the memory before it), so a
file-backed store keeps the resident memory of compressing or decompressing a large file
independent of its size: positional reads and writes (pread/pwrite) go through the page cache,
which the kernel may evict, instead of through arrays that stay mapped.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from prequential.errors import ConfigError, PrequentialError


class TokenStore(Protocol):
    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens [start, start + count) as int32."""
        ...

    def write(self, start: int, tokens: np.ndarray) -> None: ...


class ArrayStore:
    """Tokens in a NumPy array (any integer dtype; the API's in-memory path and measurements)."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens

    def read(self, start: int, count: int) -> np.ndarray:
        return self.tokens[start : start + count].astype(np.int32)

    def write(self, start: int, tokens: np.ndarray) -> None:
        self.tokens[start : start + len(tokens)] = tokens


class FileStore:
    """Byte tokens in an open file, starting at `offset`; the file position is left alone."""

    def __init__(self, fd: int, offset: int = 0) -> None:
        self.fd, self.offset = fd, offset

    def read(self, start: int, count: int) -> np.ndarray:
        data = os.pread(self.fd, count, self.offset + start)
        if len(data) != count:
            raise PrequentialError(f"the input file shrank while it was read (wanted {count} bytes at {start}, got {len(data)})")
        return np.frombuffer(data, np.uint8).astype(np.int32)

    def write(self, start: int, tokens: np.ndarray) -> None:
        data = tokens.astype(np.uint8).tobytes()
        if os.pwrite(self.fd, data, self.offset + start) != len(data):
            raise PrequentialError("short write to the output file (is the disk full?)")


class OffsetStore:
    """The tokens of another store from `offset` on: one block of a block-wise code."""

    def __init__(self, store: TokenStore, offset: int) -> None:
        self.store, self.offset = store, offset

    def read(self, start: int, count: int) -> np.ndarray:
        return self.store.read(self.offset + start, count)

    def write(self, start: int, tokens: np.ndarray) -> None:
        self.store.write(self.offset + start, tokens)


def as_tokens(data: bytes | np.ndarray, vocab_size: int) -> np.ndarray:
    """Bytes, or an integer array whose values are all below `vocab_size`, as int32 tokens."""
    tokens = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ConfigError(f"tokens must be bytes or a 1-D integer array, got {tokens.dtype} of shape {tokens.shape}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ConfigError(f"config field 'vocab_size' ({vocab_size}) must exceed every token; the data holds {int(tokens.max())}")
    return tokens.astype(np.int32)
