"""Compress and decompress: the checks around the replay engine, for bytes and streams.

Importing JAX computes nothing; `numerics.activate` pins the process before the first
computation, which happens inside `encode` and `decode`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import flax.linen as nn
import numpy as np
import optax

from prequential import accounting, container, numerics, transform
from prequential import checkpoint as checkpoints
from prequential.coder import Decoder, Encoder
from prequential.config import Config, resolve
from prequential.errors import ConfigError, FormatError, NumericsError, PrequentialError, VersionError
from prequential.learner import Learner, fingerprint, learner_for
from prequential.replay import BlockEnd, Carry, Layout, Progress, code, coder_blocks, train_pass
from prequential.store import ArrayStore, FileStore, TokenStore, as_tokens

# A header declaring more output is refused before any work. Memory does not grow with the output
# (it is written to a temporary file), so the limit guards the disk and the time a decoder spends.
DEFAULT_MAX_OUTPUT = 16 * 10**9


def layout_devices(config: Config, here: numerics.Numerics, devices: int | None) -> int:
    """How many of this process's devices the streams are split over: `devices`, else the most
    that divide the streams evenly."""
    if devices is None:
        return max(d for d in range(1, here.devices + 1) if config.streams % d == 0)
    if devices > here.devices:
        raise NumericsError(
            f"{devices} devices asked for, this process has {here.devices} "
            "(on CPU, create them before JAX starts: numerics.activate(devices=N), or the command's --devices)"
        )
    return devices


@dataclasses.dataclass(frozen=True)
class LearnerSpec:
    """Which learner runs: our model for a config, or a user's Flax module and optax optimizer."""

    config: Config
    module: nn.Module | None = None
    optimizer: optax.GradientTransformation | None = None
    devices: int = 1  # the layout: how many devices the streams are split over

    @property
    def learner(self) -> Learner:
        return learner_for(self.config, self.module, self.optimizer, self.devices)

    @property
    def source(self) -> bytes:
        return accounting.module_source(self.module)


def _prime(spec: LearnerSpec, given: bytes | None) -> Carry | None:
    """Train on the given data first, teacher-forced (no coding): both sides do the same."""
    if given is None:
        return None
    tokens = as_tokens(given, spec.config.vocab_size)
    layout = Layout(len(tokens), spec.config.streams, spec.config.segment)
    return train_pass(spec.learner, layout, ArrayStore(tokens))[1]


Input = bytes | BinaryIO


def _open_input(data: Input) -> tuple[TokenStore, int, bytes]:
    """A token store over the input, its length and its SHA-256. A file is read in chunks and
    then by offset as the replay goes, never into memory as a whole."""
    if isinstance(data, bytes):
        return ArrayStore(np.frombuffer(data, np.uint8)), len(data), hashlib.sha256(data).digest()
    start = data.tell()
    sha256 = hashlib.file_digest(data, "sha256").digest()
    n_bytes = data.tell() - start
    return FileStore(data.fileno(), start), n_bytes, sha256


@contextlib.contextmanager
def _coded_tokens(config: Config, tokens: TokenStore, n_bytes: int) -> Iterator[TokenStore]:
    """The tokens the model codes: the input's, or those of its x86 filter (transform.py),
    written to a temporary file."""
    if not transform.applies(config, transform.head(tokens, n_bytes)):
        yield tokens
        return
    with tempfile.TemporaryFile() as filtered:
        store = FileStore(filtered.fileno())
        transform.encode(tokens, store, n_bytes)
        yield store


def _unfilter(config: Config, decoded: BinaryIO, n_bytes: int) -> None:
    """Invert the x86 filter in place, where the encoder applied it."""
    store = FileStore(decoded.fileno())
    if transform.applies(config, transform.head(store, n_bytes)):
        transform.decode(store, n_bytes)


def _rewound(data: Input, tokens: TokenStore) -> BinaryIO:
    """The input as a stream at its first byte, to read it again."""
    if isinstance(data, bytes):
        return io.BytesIO(data)
    data.seek(tokens.offset)
    return data


def _copy(source: BinaryIO, out: BinaryIO | None, n_bytes: int) -> int:
    """Copy exactly n_bytes, in chunks (or only read them, without `out`); return their CRC-32.
    FormatError if the source ends first."""
    crc = 0
    while n_bytes:
        chunk = source.read(min(n_bytes, 1 << 20))
        if not chunk:
            raise FormatError("file is truncated (while reading the stored data)")
        if out is not None:
            out.write(chunk)
        crc = zlib.crc32(chunk, crc)
        n_bytes -= len(chunk)
    return crc


def encode(
    data: Input,
    out: BinaryIO,
    config: Config | str = "default",
    *,
    progress: Progress | None = None,
    module: nn.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
    given: bytes | None = None,
    checkpoint: str | None = None,
    checkpoint_interval: float = 60.0,
    devices: int | None = None,
) -> accounting.Report:
    """Compress `data` (bytes, or a binary file read from its position to its end) to the stream
    `out`; return the itemized description length. A file is streamed: memory stays bounded.

    `module` and `optimizer` replace our model and optimizer (the decoder needs the same ones);
    with `given`, the model first trains on that data, and decoding needs it too.
    With `checkpoint`, the run saves its progress there (at coder block ends, every
    `checkpoint_interval` seconds at most) and resumes from it if it exists; the result is
    byte-identical to an uninterrupted run. The checkpoint is removed on success.
    `devices` (else all local devices that divide the streams evenly) splits the streams over
    that many devices. The process is used as it is (backend, CPU affinity, XLA flags: see
    `numerics.activate`), and the file records it: an exact-numerics file decodes anywhere, a
    native one only where those settings are reproduced.
    """
    config = resolve(config, module is not None)
    started = time.perf_counter()
    here = numerics.current()
    used = layout_devices(config, here, devices)
    if here.processes > 1 and used != here.devices:
        raise ConfigError(
            f"{here.processes} processes split the streams over all their {here.devices} devices: "
            f"choose a number of streams that {here.devices} divides (the config has {config.streams})"
        )
    spec = LearnerSpec(config, module, optimizer, used)
    here = dataclasses.replace(here, devices=used)
    if checkpoint is not None and not config.resumable:
        raise ConfigError("checkpoints are for the one-pass online code without a replay buffer: drop the checkpoint")
    tokens, n_bytes, sha256 = _open_input(data)
    given_sha256 = hashlib.sha256(given).digest() if given is not None else None
    saver = None
    if checkpoint is not None:
        given_hex = given_sha256.hex() if given_sha256 is not None else None
        identity = checkpoints.identity(spec.config, spec.source, sha256.hex(), given_hex, here)
        saver = checkpoints.Checkpointer(checkpoint, identity, checkpoint_interval)
    with _payload_file(saver) as payload, _coded_tokens(spec.config, tokens, n_bytes) as coded:
        coder = Encoder(payload)
        resume = None
        if saver is not None and saver.path.exists():
            done, resume = checkpoints.load(saver.path, saver.identity, spec.learner)
            if os.fstat(payload.fileno()).st_size < done["payload_bytes"]:
                raise PrequentialError(f"the output saved beside checkpoint {checkpoint!r} is missing or short; remove the checkpoint")
            payload.truncate(done["payload_bytes"])
            payload.seek(done["payload_bytes"])
            coder.bytes_written, coder.word_bytes = done["payload_bytes"], done["word_bytes"]

        def on_block(block_end: BlockEnd) -> None:
            payload.flush()
            os.fsync(payload.fileno())
            saver.maybe_save(block_end, {"payload_bytes": coder.bytes_written, "word_bytes": coder.word_bytes})

        carry = _prime(spec, given) if resume is None else None
        hook = on_block if saver is not None else None
        pass_bits = np.zeros(0)
        if n_bytes:
            options = {"on_block": hook, "resume": resume} if saver else {}
            pass_bits = code(spec.learner, n_bytes, coded, coder, progress, carry, **options)
        ideal_bits = float(pass_bits.sum())
        stored = coder.bytes_written >= n_bytes > 0
        if stored:
            crc = _copy(_rewound(data, tokens), None, n_bytes)
            header = container.encode_header(container.Header(container.FLAG_STORED, n_bytes, data_crc32=crc))
        else:
            header = container.encode_header(
                container.Header(
                    flags=(container.FLAG_USER_MODEL if module is not None else 0) | (container.FLAG_GIVEN if given is not None else 0),
                    n_bytes=n_bytes,
                    sha256=sha256,
                    package_version=accounting.package_version(),
                    library_digest=accounting.library_digest(),
                    code_digest=accounting.code_digest(spec.source),
                    numerics=here,
                    fingerprint=fingerprint(spec.learner) if n_bytes else bytes(8),
                    config=spec.config,
                    given_sha256=given_sha256,
                )
            )
        out.write(header)
        if stored:
            _copy(_rewound(data, tokens), out, n_bytes)
        else:
            payload.seek(0)
            shutil.copyfileobj(payload, out)
        payload_bytes = n_bytes if stored else coder.bytes_written
        if saver is not None:
            saver.remove()
    return accounting.Report(
        original_bytes=n_bytes,
        header_bytes=len(header),
        payload_bytes=payload_bytes,
        coded_bytes=coder.word_bytes,
        ideal_bits=ideal_bits,
        model_code_bytes=accounting.model_code_bytes(spec.source),
        stored=stored,
        seconds=time.perf_counter() - started,
        config=spec.config.to_dict(),
        checkpoint_seconds=saver.seconds_spent if saver is not None else 0.0,
        block_bits=pass_bits.tolist() if config.block_wise and not stored else [],
    )


@contextlib.contextmanager
def _payload_file(saver: checkpoints.Checkpointer | None) -> Iterator[BinaryIO]:
    """Where the coded blocks go before the header is known: a temporary file, or, when
    checkpointing, a file beside the checkpoint that survives an interruption."""
    if saver is None:
        with tempfile.TemporaryFile() as payload:
            yield payload
        return
    path = Path(f"{saver.path}.payload")
    try:
        with open(path, "r+b" if path.exists() and saver.path.exists() else "w+b") as payload:
            yield payload
    finally:
        if not saver.path.exists():  # finished, or stopped before any checkpoint: nothing to resume
            path.unlink(missing_ok=True)


def check_versions(header: container.Header, spec: LearnerSpec, given: bytes | None, source: bytes | None = None) -> None:
    """Refuse, saying what to install or pass, a file this installation cannot replay (`source`:
    the code besides the replay modules, else the module's)."""
    ours = accounting.package_version()
    if header.package_version != ours:
        raise VersionError(
            f"file made by prequential {header.package_version}, this is {ours}: "
            f"decode it with 'pip install prequential=={header.package_version}'"
        )
    if header.library_digest != accounting.library_digest():
        installed = ", ".join(f"{k} {v}" for k, v in accounting.library_versions().items())
        pins = " ".join(accounting.pinned_versions()) or f"the versions pinned by prequential {ours}"
        raise VersionError(f"file made with other numeric libraries than the installed ones ({installed}); install {pins}")
    if header.user_model and spec.module is None:
        raise VersionError("file made with a user's model: decode it with the same module and optimizer (module=, optimizer=)")
    if header.code_digest != accounting.code_digest(spec.source if source is None else source):
        if spec.module is not None:
            raise VersionError("the module's source differs from the one the file was made with")
        raise VersionError(f"the replay code differs from the encoder's although both say prequential {ours}; reinstall it")
    if header.given_sha256 is not None and not header.labels:  # a labels file's inputs are checked by supervised.py
        if given is None:
            raise PrequentialError(f"file made given other data first (SHA-256 {header.given_sha256.hex()}): pass it with --given")
        if hashlib.sha256(given).digest() != header.given_sha256:
            raise PrequentialError(f"the given data differs from the file's (SHA-256 {header.given_sha256.hex()})")


def decoding_numerics(header: container.Header, devices: int | None) -> numerics.Numerics:
    """The settings to decode with, and the layout: any layout for an exact-numerics file (its
    integers do not depend on it); for a native one, the encoder's, refused where this process
    cannot reproduce its floats."""
    here = numerics.current()
    if header.config.numerics == "exact":
        return dataclasses.replace(here, devices=layout_devices(header.config, here, devices))
    recorded = header.numerics
    if here.devices < recorded.devices:
        causes = [f"devices: file {recorded.devices}, here {here.devices}"]
    else:
        causes = numerics.mismatches(recorded, dataclasses.replace(here, devices=recorded.devices))
    if causes:
        raise NumericsError(
            f"refusing to decode: a native-numerics file decodes only where its floats are reproduced ({'; '.join(causes)}); "
            "the prequential command sets the encoder's settings itself (or call numerics.activate with them first)"
        )
    return dataclasses.replace(here, devices=recorded.devices)


def check_fingerprint(header: container.Header, here: numerics.Numerics, computed: bytes) -> None:
    """The fingerprint guards against bugs and tampered headers (exact numerics) and against a
    machine that computes other floats (native)."""
    if computed == header.fingerprint:
        return
    if header.config.numerics == "exact":
        raise NumericsError(
            "refusing to decode: this installation computes a different fingerprint than the file's "
            "(the header is corrupt or was altered, or this is a bug: please report it)"
        )
    causes = numerics.mismatches(header.numerics, here)
    raise NumericsError(
        "refusing to decode: this machine computes different floats than the encoder "
        f"({'; '.join(causes) or 'same settings, so the CPU or library build differs'}); decode on the kind of machine "
        "that encoded it, or use exact numerics (the default) for files that decode anywhere"
    )


def decode(
    source: BinaryIO,
    out: BinaryIO,
    *,
    progress: Progress | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    module: nn.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
    given: bytes | None = None,
    scratch: str | None = None,
    devices: int | None = None,
) -> container.Header:
    """Decompress the stream `source` into `out`, which receives data only after its SHA-256
    (for stored data, its CRC-32) matched. The data is decoded into a temporary file first (in
    `scratch`, or the system's temporary directory), so memory stays bounded whatever the output size.
    `devices` splits the streams of an exact-numerics file over that many devices (any number
    that divides them); a native file uses the encoder's layout."""
    header = container.read_header(source)
    if header.n_bytes > max_output:
        raise PrequentialError(
            f"file declares {header.n_bytes:,} bytes of output, more than the limit of {max_output:,} (--max-output-size)"
        )
    if header.labels:
        raise FormatError("a file of labels coded given inputs: decode it with 'prequential labels decompress' (supervised.decompress)")
    with tempfile.TemporaryFile(dir=scratch) as decoded:
        if header.stored:  # any version reads it: no model was used
            if _copy(source, decoded, header.n_bytes) != header.data_crc32:
                raise FormatError("stored data fails its CRC-32 check: the file is corrupt")
        else:
            check_versions(header, LearnerSpec(header.config, module, optimizer), given)
            if header.n_bytes:
                here = decoding_numerics(header, devices)
                spec = LearnerSpec(header.config, module, optimizer, here.devices)
                check_fingerprint(header, here, fingerprint(spec.learner))
                code(spec.learner, header.n_bytes, FileStore(decoded.fileno()), Decoder(source), progress, _prime(spec, given))
                _unfilter(header.config, decoded, header.n_bytes)
            decoded.seek(0)
            if hashlib.file_digest(decoded, "sha256").digest() != header.sha256:
                raise FormatError("decoded data fails its SHA-256 check: the file is corrupt")
        container.expect_end(source)
        decoded.seek(0)
        shutil.copyfileobj(decoded, out)
    return header


def compress(data: bytes, config: Config | str = "default", **options) -> bytes:
    """Compress bytes with a model trained online on them; `decompress` inverts it exactly.
    Options are those of `encode` (threads, progress, module, optimizer, given)."""
    out = io.BytesIO()
    encode(data, out, config, **options)
    return out.getvalue()


def decompress(blob: bytes, **options) -> bytes:
    """Options are those of `decode` (progress, max_output, module, optimizer, given)."""
    out = io.BytesIO()
    decode(io.BytesIO(blob), out, **options)
    return out.getvalue()


def read_info(source: BinaryIO) -> tuple[container.Header, accounting.Report]:
    """Read a file's header and walk its blocks (without decoding) to itemize its size."""
    start = source.tell()
    header = container.read_header(source)
    header_bytes = source.tell() - start
    coded_bytes, pass_bits = 0, []
    if header.stored:
        _skip(source, header.n_bytes)
    else:
        for plan in coder_blocks(header.config, header.n_bytes):
            block = container.read_block(source, plan.n_sync, plan.last, plan.max_words)
            coded_bytes += 4 * len(block.words)
            if plan.last:  # the last block of each pass records the pass's bits
                pass_bits.append(block.ideal_bits)
    container.expect_end(source)
    report = accounting.Report(
        original_bytes=header.n_bytes,
        header_bytes=header_bytes,
        payload_bytes=source.tell() - start - header_bytes,
        coded_bytes=coded_bytes,
        ideal_bits=sum(pass_bits),
        model_code_bytes=accounting.model_code_bytes(),
        stored=header.stored,
        seconds=0.0,
        config=header.config.to_dict() if header.config else {},
        block_bits=pass_bits if len(pass_bits) > 1 else [],
    )
    return header, report


def _skip(source: BinaryIO, n_bytes: int) -> None:
    """Move past n_bytes of stored data; FormatError if the source ends first."""
    here = source.tell()
    if source.seek(0, os.SEEK_END) - here < n_bytes:
        raise FormatError("file is truncated (while reading the stored data)")
    source.seek(here + n_bytes)
