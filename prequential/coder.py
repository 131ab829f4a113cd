"""The two directions of the coder the replay engine drives: range encoding and range decoding.

Both take the model's float32 probabilities for the active streams at one position. The encoder
codes the known tokens and returns them; the decoder returns the tokens it decodes. Everything
else (the model, the training, the order of calls) is the replay engine's and is shared.
"""

from __future__ import annotations

import functools
from typing import BinaryIO, Protocol

import numpy as np

from prequential import container
from prequential.errors import DesyncError


@functools.cache
def _constriction():
    """constriction, imported when a coder is made: the learner runs without it (it has no wheel
    for every platform the learner runs on), and the family of models the coders use.
    perfect=False: constriction's fast, leaky quantization; every symbol keeps a nonzero probability."""
    import constriction

    return constriction, constriction.stream.model.Categorical(perfect=False)


class Coder(Protocol):
    decodes: bool  # whether `code` returns decoded tokens (else it codes the known ones it is given)

    def begin_block(self, n_sync: int, last: bool, max_words: int) -> None: ...
    def code(self, probs: np.ndarray, known: np.ndarray) -> np.ndarray: ...
    def sync(self, digest: bytes, segment: int) -> None: ...
    def end_block(self, ideal_bits: float) -> None: ...


class Encoder:
    """Codes the known tokens and writes each finished block to `out`."""

    decodes = False

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.bytes_written = 0
        self.word_bytes = 0  # range-coder output alone, without framing

    def begin_block(self, n_sync: int, last: bool, max_words: int) -> None:
        self._coder = _constriction()[0].stream.queue.RangeEncoder()
        self._digests: list[bytes] = []
        self._last = last

    def code(self, probs: np.ndarray, known: np.ndarray) -> np.ndarray:
        self._coder.encode(known, _constriction()[1], probs)
        return known

    def sync(self, digest: bytes, segment: int) -> None:
        self._digests.append(digest)

    def end_block(self, ideal_bits: float) -> None:
        words = self._coder.get_compressed()
        block = container.encode_block(words, self._digests, ideal_bits if self._last else None)
        self.word_bytes += 4 * len(words)
        self.out.write(block)
        self.bytes_written += len(block)


class Scorer:
    """No coding at all: hands the known tokens back, to score a model step by step."""

    decodes = False

    def begin_block(self, n_sync: int, last: bool, max_words: int) -> None:
        pass

    def code(self, probs: np.ndarray, known: np.ndarray) -> np.ndarray:
        return known

    def sync(self, digest: bytes, segment: int) -> None:
        pass

    def end_block(self, ideal_bits: float) -> None:
        pass


class Decoder:
    """Reads blocks from `source` and decodes tokens; checks each parameter digest as it comes."""

    decodes = True

    def __init__(self, source: BinaryIO) -> None:
        self.source = source

    def begin_block(self, n_sync: int, last: bool, max_words: int) -> None:
        block = container.read_block(self.source, n_sync, last, max_words)
        self._coder = _constriction()[0].stream.queue.RangeDecoder(block.words)
        self._digests = iter(block.digests)

    def code(self, probs: np.ndarray, known: np.ndarray) -> np.ndarray:
        return self._coder.decode(_constriction()[1], probs)

    def sync(self, digest: bytes, segment: int) -> None:
        if digest != next(self._digests):
            raise DesyncError(
                f"decoding diverged from the encoder at segment {segment}: this machine computes "
                "different floats (see 'prequential info' for the encoder's settings)"
            )

    def end_block(self, ideal_bits: float) -> None:
        pass
