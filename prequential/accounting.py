"""The description length, itemized: model code, header, coded payload, and classical baselines.

L(data) = L(code) + sum_t -log2 p_t(x_t) + coder overhead + framing + header, where L(code) is
the LZMA-compressed source of everything a receiver must run besides the shared libraries.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import io
import lzma
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from prequential.errors import ConfigError

# The modules that define the computation a receiver replays: counted as the model's code.
REPLAY_MODULES = ("config", "transform", "counts", "intmath", "ops", "model", "optimizer", "learner", "coder", "store", "replay")
# The libraries whose versions decide the floats; pinned exactly in pyproject.toml.
NUMERIC_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "constriction", "numpy")


def package_version() -> str:
    try:
        return importlib.metadata.version("prequential")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def library_versions() -> dict[str, str]:
    out = {}
    for name in NUMERIC_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def pinned_versions() -> list[str]:
    """The exact library versions this release of prequential requires (its files need them)."""
    try:
        requirements = importlib.metadata.requires("prequential") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [r for r in requirements if "==" in r and ";" not in r]  # ";" marks the optional extras


def library_digest() -> bytes:
    text = ";".join(f"{k}={v}" for k, v in library_versions().items())
    return hashlib.blake2b(text.encode(), digest_size=4).digest()


@functools.cache
def replay_source() -> bytes:
    here = Path(__file__).parent
    return b"".join((here / f"{name}.py").read_bytes() for name in REPLAY_MODULES)


def module_source(module: Any) -> bytes:
    """The source of a user's module: its whole file (helpers included) and the class's name,
    counted in L(code) and hashed into the header, so that decoding needs the same module."""
    if module is None:
        return b""
    try:
        source = inspect.getsource(inspect.getmodule(type(module)))
    except (OSError, TypeError):
        raise ConfigError(f"cannot read the source of {type(module).__name__}: define it in a .py file") from None
    return f"{source}\n# model: {type(module).__qualname__}\n".encode()


def code_digest(extra_source: bytes = b"") -> bytes:
    """4-byte hash of the replay code (and of a user's model source, when one is used)."""
    return hashlib.blake2b(replay_source() + extra_source, digest_size=4).digest()


@functools.cache
def model_code_bytes(extra_source: bytes = b"") -> int:
    """L(code): the replay code and model definition, LZMA-compressed (xz -9e)."""
    return len(lzma.compress(replay_source() + extra_source, preset=9 | lzma.PRESET_EXTREME))


def _compressors(n_bytes: int) -> dict[str, Any]:
    """The classical compressors a report sets beside ours, as streaming objects (compress,
    flush). xz's dictionary is capped at the input's size: the same output as xz -9e on it,
    without the 674 MiB of match tables a 64 MiB dictionary needs."""
    import zstandard  # the standard library has none before Python 3.14

    return {
        "gzip -9": zlib.compressobj(9, zlib.DEFLATED, 31),  # 31: the gzip container, as `gzip -9` writes it
        "bzip2 -9": bz2.BZ2Compressor(9),
        "xz -9e": lzma.LZMACompressor(
            filters=[{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": min(max(n_bytes, 4096), 64 << 20)}]
        ),
        "zstd -19": zstandard.ZstdCompressor(level=19).compressobj(),
    }


def baselines(source: BinaryIO | bytes) -> dict[str, int]:
    """Sizes in bytes of the same input (bytes, or a file read to its end in chunks) under the
    classical compressors: the one registry that reports, measure and the benchmarks use."""
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    start = stream.tell()
    n_bytes = stream.seek(0, os.SEEK_END) - start
    stream.seek(start)
    compressors = _compressors(n_bytes)
    sizes = dict.fromkeys(compressors, 0)
    while chunk := stream.read(1 << 20):
        for name, compressor in compressors.items():
            sizes[name] += len(compressor.compress(chunk))
    return {name: size + len(compressors[name].flush()) for name, size in sizes.items()}


def itemized(rows: list[tuple[str, str, str, str]]) -> str:
    """Aligned lines of (label, amount, unit, note): the layout of every report here."""
    lines = (f"{label:<20}{amount:>14} {unit:<5}" + (f" ({note})" if note else "") for label, amount, unit, note in rows)
    return "\n".join(line.rstrip() for line in lines)


@dataclasses.dataclass
class Report:
    """What a compress (or measure) run cost, in the units a reader checks by hand."""

    original_bytes: int
    header_bytes: int
    payload_bytes: int  # everything after the header
    coded_bytes: int  # of which range-coder output; the rest is framing (lengths, sync digests, CRCs)
    ideal_bits: float  # sum over tokens of -log2 p, p as given to the coder
    model_code_bytes: int
    stored: bool  # the input was stored as is, being smaller than its code
    seconds: float
    config: dict[str, Any]
    baselines: dict[str, int] = dataclasses.field(default_factory=dict)
    checkpoint_seconds: float = 0.0  # of `seconds`, spent writing checkpoints
    block_bits: list[float] = dataclasses.field(default_factory=list)  # a block-wise code: the ideal bits of each block

    @property
    def file_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    @property
    def overhead_bits(self) -> float:
        return 8 * self.coded_bytes - self.ideal_bits

    @property
    def overhead_percent(self) -> float:
        return 100 * self.overhead_bits / self.ideal_bits if self.ideal_bits else 0.0

    @property
    def total_bits(self) -> int:
        """The description length: file plus model code."""
        return 8 * (self.file_bytes + self.model_code_bytes)

    def bits_per_byte(self, n_bytes: int) -> float:
        return 8 * n_bytes / self.original_bytes if self.original_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            file_bytes=self.file_bytes,
            framing_bytes=self.payload_bytes - self.coded_bytes if not self.stored else 0,
            overhead_bits=self.overhead_bits,
            overhead_percent=self.overhead_percent,
            total_bits=self.total_bits,
            file_bits_per_byte=self.bits_per_byte(self.file_bytes),
            ideal_bits_per_byte=self.ideal_bits / self.original_bytes if self.original_bytes else 0.0,
            total_bits_per_byte=self.total_bits / self.original_bytes if self.original_bytes else 0.0,
            speed_kb_per_s=self.original_bytes / 1000 / self.seconds if self.seconds else 0.0,
        )
        return out

    def format(self) -> str:
        d = self.to_dict()
        n = max(self.original_bytes, 1)
        payload_note = "stored: the model's code was larger" if self.stored else f"{d['framing_bytes']:,} of framing"
        rows = [
            ("original", f"{self.original_bytes:,}", "bytes", ""),
            ("header", f"{self.header_bytes:,}", "bytes", ""),
            ("payload", f"{self.payload_bytes:,}", "bytes", payload_note),
            ("ideal", f"{self.ideal_bits:,.1f}", "bits", f"sum of -log2 p over {n:,} tokens, {self.ideal_bits / n:.4f} bits/byte"),
            ("coder overhead", f"{self.overhead_bits:,.1f}", "bits", f"{self.overhead_percent:.5f} % of ideal"),
            ("model code", f"{self.model_code_bytes:,}", "bytes", "replay code and model, LZMA"),
            ("total", f"{self.total_bits:,}", "bits", f"{d['total_bits_per_byte']:.4f} bits/byte with code"),
            ("file", f"{self.file_bytes:,}", "bytes", f"{d['file_bits_per_byte']:.4f} bits/byte"),
        ]
        rows += [(f"block {i + 1}", f"{bits:,.1f}", "bits", "uniform" if not i else "") for i, bits in enumerate(self.block_bits)]
        rows += [(name, f"{size:,}", "bytes", f"{8 * size / n:.4f} bits/byte") for name, size in self.baselines.items()]
        if self.seconds:
            rows.append(("time", f"{self.seconds:.2f}", "s", f"{d['speed_kb_per_s']:.2f} KB/s"))
        return itemized(rows)
