"""The `prequential` command: compress, decompress, verify, info (manners of xz and zstd).

Outputs are written to a temporary file beside the destination and renamed into place only
when complete (and, for decompression, only after the SHA-256 matched), so an error or an
interruption never leaves a partial file. Errors, usage errors included, are one line on stderr
and exit status 1; with several files, each is handled and reported, and a failure does not stop
the others.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from prequential import accounting, api, container, numerics, plots
from prequential import config as configs
from prequential.errors import PrequentialError
from prequential.measure import crossings, measure

SUFFIX = ".pq"
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


class UsageError(PrequentialError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 1 like every other error (not usage text and 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


XZ_MANNERS = """Without a command, the manners of xz and zstd: prequential FILE... compresses, -d decompresses,
-t tests (verify), -l lists (info), -c writes to standard output (docs/cli.md)."""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="prequential", description="Lossless compression by learning the data online.", epilog=XZ_MANNERS)
    p.add_argument("--version", action="version", version=f"prequential {accounting.package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(q: argparse.ArgumentParser, output: bool = True) -> None:
        q.add_argument("files", nargs="+", metavar="FILE", help="input files, or - for standard input")
        q.add_argument("--given", metavar="X", help="the model first trains on file X (decoding needs X too)")
        if output:
            to = q.add_mutually_exclusive_group()
            to.add_argument("-o", "--output", help="output path (one FILE only), or - for standard output")
            to.add_argument("-c", "--stdout", dest="output", action="store_const", const="-", help="write to standard output, as -o -")
            q.add_argument(
                "-k", "--keep", action="store_true", help="keep the input file (it is deleted after success otherwise, as with xz)"
            )
            q.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no report on stderr")

    def checkpointing(q: argparse.ArgumentParser) -> None:
        q.add_argument("--checkpoint", metavar="PATH", help="save progress there (default: OUTPUT.ckpt for inputs over 4 MiB)")
        q.add_argument("--checkpoint-interval", type=float, default=60.0, metavar="SECONDS", help="at most this often (default 60)")
        q.add_argument("--resume", action="store_true", help="go on from the checkpoint of an interrupted run")

    def backend(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--backend",
            choices=numerics.BACKENDS,
            default="cpu",
            help="where XLA computes: cpu (default) or gpu; exact files decode on either (native ones only on the encoder's)",
        )

    def placement(q: argparse.ArgumentParser, decoding: bool) -> None:
        """Threads, devices and backend: they change the speed of exact numerics, never the result."""
        q.add_argument(
            "-T",
            "--threads",
            type=int,
            default=1 if not decoding else None,
            help="CPU threads for XLA (default 1; a native-numerics file sets its own)"
            if decoding
            else "CPU threads for XLA (default: 1; a native-numerics file then needs as many to decode)",
        )
        q.add_argument(
            "--devices",
            type=int,
            metavar="N",
            help="split the streams over N devices (on CPU, N simulated ones; default: all local devices that divide them)",
        )
        backend(q)

    def cluster(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("several processes (hosts) together, through jax.distributed; each runs the same command")
        g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (every process gives the same)")
        g.add_argument("--processes", type=int, metavar="N", help="how many processes run together")
        g.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0..N-1; process 0 writes the output")

    def model(q: argparse.ArgumentParser) -> None:
        g = q.add_mutually_exclusive_group()
        g.add_argument("--preset", help=f"named configuration: {', '.join(configs.PRESETS)} (default: default)")
        g.add_argument("--config", metavar="PATH", help="TOML or JSON file of config fields (may name a preset)")

    def estimating(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("estimator: how the weights that code each token are trained (docs/estimators.md)")
        g.add_argument(
            "--blocks", type=_blocks, metavar="F,F,...", help="block-wise code at these fractions of the data ('vt': 0.001,0.002,...,1)"
        )
        g.add_argument("--block-tokens", type=_numbers(int), metavar="N,N,...", help="block-wise code at these token counts")
        g.add_argument("--block-init", choices=configs.BLOCK_INITS, help="each block's model from the seed (default) or the previous one")
        g.add_argument("--epochs", type=int, metavar="E", help="passes over the earlier blocks before coding the next (default 1)")
        g.add_argument("--early-stop", type=float, metavar="R", help="stop before E once a pass lowers the loss by less than this fraction")
        g.add_argument("--updates", type=int, metavar="K", help="online: gradient steps on each segment (default 1)")
        g.add_argument("--replay-buffer", type=int, metavar="S", help="online: segments kept for replay")
        g.add_argument("--replay-steps", type=int, metavar="R", help="online: steps per segment on segments drawn from the buffer")
        g.add_argument("--ema", type=float, dest="ema_decay", metavar="DECAY", help="online: score with an EMA of the parameters")
        g.add_argument("--calibrate", action="store_const", const=1, help="online: forward-calibrate a temperature on the data coded")

    c = sub.add_parser("compress", help="compress FILE to FILE.pq")
    common(c)
    model(c)
    estimating(c)
    placement(c, decoding=False)
    cluster(c)
    c.add_argument("--verify", action="store_true", help="decode the result in a fresh process before keeping it")
    checkpointing(c)
    c.add_argument("--json", metavar="PATH", help="write the description-length report as JSON")

    d = sub.add_parser("decompress", help="restore FILE.pq to FILE")
    common(d)
    d.add_argument(
        "--max-output-size",
        type=_size,
        default=api.DEFAULT_MAX_OUTPUT,
        metavar="BYTES",
        help="refuse files that declare more output (default: 16G; suffixes K M G T)",
    )
    placement(d, decoding=True)
    cluster(d)

    v = sub.add_parser("verify", help="decode FILE.pq and check its SHA-256, writing nothing")
    common(v, output=False)
    placement(v, decoding=True)
    cluster(v)

    m = sub.add_parser("demo", help="compress, decompress (in a fresh process) and verify an embedded sample text")
    m.add_argument("--preset", default="default", help=f"one of: {', '.join(configs.PRESETS)}")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("measure", help="description length of training online on DATA, without coding")
    e.add_argument("file", help="data file, or - for standard input")
    model(e)
    estimating(e)
    e.add_argument("--given", metavar="X", help="train on file X first and report L(DATA | X) next to L(DATA)")
    e.add_argument("-T", "--threads", type=int, help="CPU threads for XLA (default: all; nothing needs decoding)")
    backend(e)
    e.add_argument("--json", metavar="PATH", help="write the result as JSON (schema: docs/measure.md)")
    e.add_argument("--plot", metavar="PATH", help="write the learning curve (PNG, or SVG by suffix)")
    checkpointing(e)
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    r = sub.add_parser("compare", help="measure several presets or configs on the same DATA")
    r.add_argument("file", help="data file, or - for standard input")
    models = r.add_mutually_exclusive_group()
    models.add_argument("--presets", help="comma-separated preset names (default: default)")
    models.add_argument("--configs", help="comma-separated TOML/JSON config files")
    r.add_argument("--estimators", help=f"comma-separated estimators to set on each model: {', '.join(configs.ESTIMATORS)}")
    estimating(r)
    r.add_argument("-T", "--threads", type=int, help="CPU threads for XLA (default: all)")
    backend(r)
    r.add_argument("--json", metavar="PATH", help="write the results and the crossing points as JSON")
    r.add_argument("--plot", metavar="PATH", help="write the cumulative description lengths (PNG, or SVG by suffix)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    lab = sub.add_parser("labels", help="L(Y | X): code labels Y (.npy) given inputs X (.npy) with a classifier")
    actions = lab.add_subparsers(dest="action", required=True, metavar="ACTION")

    def classifier(q: argparse.ArgumentParser) -> None:
        g = q.add_argument_group("classifier (decoding needs the same)")
        g.add_argument(
            "--model", metavar="FILE.py:NAME", help="NAME(classes) in FILE.py returns (Flax module, optax optimizer); default an MLP"
        )
        g.add_argument(
            "--hidden", type=_numbers(int), default=(64,), metavar="N,N,...", help="the default MLP's hidden widths (default 64)"
        )
        g.add_argument("--learning-rate", type=float, default=1e-3, help="the default MLP's Adam learning rate (default 0.001)")
        q.add_argument("-q", "--quiet", action="store_true", help="no report on stderr")

    def labels_run(q: argparse.ArgumentParser) -> None:
        q.add_argument("inputs", metavar="X.npy", help="the inputs, one example per row")
        q.add_argument("labels", metavar="Y.npy", help="the labels, integers in [0, classes)")
        q.add_argument("--classes", type=int, help="number of classes (default: the largest label + 1)")
        q.add_argument("--batch", type=int, default=32, help="examples per online update and per minibatch (default 32)")
        q.add_argument("--seed", type=int, default=0, help="the seed of the classifier's initialisation and the training order")
        classifier(q)
        estimating(q)

    lm = actions.add_parser("measure", help="L(Y | X) in bits, without coding")
    labels_run(lm)
    lm.add_argument("--json", metavar="PATH", help="write the result as JSON")
    lc = actions.add_parser("compress", help="code Y given X to a .pq file")
    labels_run(lc)
    lc.add_argument("-o", "--output", required=True, help="the .pq file to write")
    lc.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    ld = actions.add_parser("decompress", help="decode a labels .pq file given X to Y.npy")
    ld.add_argument("file", metavar="FILE.pq")
    ld.add_argument("inputs", metavar="X.npy", help="the same inputs the file was made with")
    ld.add_argument("-o", "--output", required=True, help="the .npy file to write")
    ld.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    classifier(ld)

    i = sub.add_parser("info", help="print the header and the description-length breakdown")
    i.add_argument("files", nargs="+", metavar="FILE")
    i.add_argument("--json", metavar="PATH", help="also write it as JSON (one FILE only)")
    return p


def _numbers(kind: type):
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__}s: {text!r}") from None

    return parse


def _blocks(text: str) -> tuple[float, ...]:
    return configs.VOITA_TITOV_BLOCKS if text == "vt" else _numbers(float)(text)


ESTIMATOR_OPTIONS = (
    "blocks",
    "block_tokens",
    "block_init",
    "epochs",
    "early_stop",
    "updates",
    "replay_buffer",
    "replay_steps",
    "ema_decay",
    "calibrate",
)


def _with_estimator(config: configs.Config, args: argparse.Namespace) -> configs.Config:
    """The config with the estimator options given on the command line."""
    changes = {name: getattr(args, name) for name in ESTIMATOR_OPTIONS if getattr(args, name, None) is not None}
    return config.replace(**changes).validate() if changes else config


def _size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    scale = units.get(text[-1:].upper(), 1)
    try:
        value = int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    return value


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as err:
        raise PrequentialError(f"cannot read {name!r}: {err.strerror}") from None


@contextlib.contextmanager
def _input_file(name: str) -> Iterator[BinaryIO]:
    """The input as a seekable file, to be streamed: a regular file opened for reading, or standard
    input (or a pipe) spooled to a temporary file, since coding needs the length before it starts."""
    try:
        opened = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115 (closed below)
    except OSError as err:
        raise PrequentialError(f"cannot read {name!r}: {err.strerror}") from None
    try:
        if name != "-" and stat.S_ISREG(os.fstat(opened.fileno()).st_mode):
            yield opened
            return
        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(opened, spool, 1 << 20)
            spool.seek(0)
            yield spool
    finally:
        if name != "-":
            opened.close()


@contextlib.contextmanager
def _atomic_output(name: str, force: bool) -> Iterator[BinaryIO]:
    """A temporary file that becomes `name` (or is copied to stdout) only if the block succeeds."""
    if name != "-" and os.path.exists(name) and not force:
        raise PrequentialError(f"{name!r} already exists; use -f to overwrite it")
    directory = tempfile.gettempdir() if name == "-" else (os.path.dirname(name) or ".")
    try:
        tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in the finally below)
            dir=directory, prefix=f".{os.path.basename(name)}.", suffix=".tmp", delete=False
        )
    except OSError as err:
        raise PrequentialError(f"cannot write to {directory!r}: {err.strerror}") from None
    try:
        yield tmp
        tmp.flush()
        os.fsync(tmp.fileno())
        tmp.close()
        if name == "-":
            with open(tmp.name, "rb") as done:
                while chunk := done.read(1 << 20):
                    sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            os.replace(tmp.name, name)
    finally:
        tmp.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)


class _ProgressBar:
    """tqdm on stderr: bytes done, KB/s, ETA and the running bits per byte."""

    def __init__(self, total: int, label: str, quiet: bool) -> None:
        self.bar = None
        if not quiet and total:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1000,
                file=sys.stderr,
                mininterval=0.5,
                delay=1.0,
                leave=False,
            )

    def __call__(self, done: int, bits: float) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{bits / max(done, 1):.3f} bits/byte", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _output_name(args: argparse.Namespace, compressing: bool) -> str:
    if args.output:
        return args.output
    if args.file == "-":
        return "-"
    if compressing:
        return args.file + SUFFIX
    if not args.file.endswith(SUFFIX):
        raise UsageError(f"{args.file!r} does not end in {SUFFIX}; name the output with -o")
    return args.file[: -len(SUFFIX)]


def _write_json(path: str, payload: dict[str, Any]) -> None:
    with _atomic_output(path, force=True) as out:
        out.write(json.dumps(payload, indent=2).encode() + b"\n")


def _remove_input(args: argparse.Namespace, output: str) -> None:
    """After success, as xz does: the input goes unless -k (or it is a stream)."""
    if not args.keep and args.file != "-" and output != "-":
        os.unlink(args.file)


# Above this size the report leaves out the classical compressors (they would take minutes).
BASELINE_LIMIT = 64 << 20


def _compress(args: argparse.Namespace) -> None:
    config = _config(args)
    output = _output_name(args, compressing=True)
    if output == "-" and sys.stdout.isatty():
        raise UsageError("refusing to write compressed data to a terminal; use -o or redirect standard output")
    together = _cluster(args)
    # Exact numerics compute the same bits under any settings: a process that already runs JAX
    # (a caller's) is used as it is. Native ones must run under the settings the file records.
    numerics.activate(args.backend, args.threads, devices=args.devices, cluster=together, strict=config.numerics == "native")
    primary = numerics.is_primary()
    with _input_file(args.file) as source:
        n_bytes = os.fstat(source.fileno()).st_size
        bar = _ProgressBar(n_bytes, "compress", args.quiet or not primary)
        with _atomic_output(output, args.force) if primary else tempfile.TemporaryFile() as out:
            try:
                report = api.encode(
                    source,
                    out,
                    config,
                    progress=bar,
                    given=_given(args),
                    checkpoint=None
                    if together or not (config.resumable or args.checkpoint or args.resume)
                    else _checkpoint(args, output, n_bytes),
                    checkpoint_interval=args.checkpoint_interval,
                    devices=args.devices,
                )
            finally:
                bar.close()
            if args.verify and not together:  # one process alone cannot decode a file made by several
                out.flush()
                _verify_in_fresh_process(out.name, args.given)
        if not primary:
            return
        if (args.json or not args.quiet) and n_bytes <= BASELINE_LIMIT:
            source.seek(0)
            report.baselines = accounting.baselines(source)
    if not args.quiet:
        print(report.format() if len(args.files) == 1 else f"{args.file}:\n{report.format()}", file=sys.stderr)
    if args.json:
        _write_json(args.json, report.to_dict())
    if not together:  # the other processes may still read the input
        _remove_input(args, output)


def _cluster(args: argparse.Namespace) -> numerics.Cluster | None:
    """The processes this command runs with (--coordinator, --processes, --process-id); None alone."""
    given = [args.coordinator, args.processes, args.process_id]
    if all(value is None for value in given):
        return None
    if any(value is None for value in given):
        raise UsageError("several processes need all of --coordinator, --processes and --process-id")
    if args.file == "-" or getattr(args, "output", None) == "-":
        raise UsageError("several processes read and write files by name, not standard input or output (gloo writes to stdout)")
    if getattr(args, "checkpoint", None) or getattr(args, "resume", False):
        raise UsageError("checkpoints are not supported with several processes")
    return numerics.Cluster(args.coordinator, args.processes, args.process_id)


def _config(args: argparse.Namespace) -> configs.Config:
    config = configs.load(args.config) if args.config else configs.preset(args.preset or "default")
    return _with_estimator(config, args)


AUTO_CHECKPOINT_BYTES = 4 << 20


def _checkpoint(args: argparse.Namespace, output: str, n_bytes: int) -> str | None:
    """The checkpoint path, if any; an existing one is used only with --resume, and --resume needs one."""
    path = args.checkpoint or (f"{output}.ckpt" if output != "-" and n_bytes >= AUTO_CHECKPOINT_BYTES else None)
    exists = path is not None and os.path.exists(path)
    if args.resume and not exists:
        raise UsageError(f"nothing to resume: no checkpoint {path or '(give --checkpoint PATH)'}")
    if exists and not args.resume:
        raise UsageError(f"checkpoint {path!r} exists: add --resume to go on from it, or remove it to start over")
    return path


def _given(args: argparse.Namespace) -> bytes | None:
    return _read_input(args.given) if args.given else None


def _verify_in_fresh_process(path: str, given: str | None) -> None:
    """A new process proves the file decodes from the file alone, not from this process's state."""
    command = [sys.executable, "-m", "prequential", "verify", "--quiet", path] + (["--given", given] if given else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        raise PrequentialError(f"verification failed, nothing written: {message}")


def _decode_to(
    args: argparse.Namespace, out: BinaryIO, max_output: int = api.DEFAULT_MAX_OUTPUT, scratch: str | None = None, follows: bool = False
) -> None:
    with _input_file(args.file) as source:
        header, _ = api.read_info(source)  # a corrupt file is refused before any model runs
        if not follows:
            _activate_for(header, args, None)
        source.seek(0)
        bar = _ProgressBar(header.n_bytes, "decompress", args.quiet or follows)
        try:
            api.decode(source, out, progress=bar, max_output=max_output, given=_given(args), scratch=scratch, devices=args.devices)
        finally:
            bar.close()


def _activate_for(header: container.Header, args: argparse.Namespace, cluster: numerics.Cluster | None) -> None:
    """Set this process up to decode the file: as asked (exact numerics decode under any
    settings), or as the encoder was (native numerics: its threads, where this machine has them,
    backend and devices)."""
    if header.stored:
        return
    if header.config.numerics == "exact":
        numerics.activate(args.backend, args.threads or 1, devices=args.devices, cluster=cluster, strict=False)
        return
    n = header.numerics
    try:
        numerics.activate(n.backend, min(n.threads, numerics.usable_cores()), devices=n.devices, cluster=cluster, strict=False)
    except PrequentialError as err:
        raise PrequentialError(f"refusing to decode: this native-numerics file was made on {n.describe()}; {err}") from None


def _follows(args: argparse.Namespace, cluster: numerics.Cluster | None) -> bool:
    """Join the other processes, with the file's backend and devices; whether this process only
    follows (decodes along with process 0 and discards its output)."""
    if cluster is None:
        return False
    with _input_file(args.file) as source:
        header = container.read_header(source)
    if header.stored:  # nothing to compute together: process 0 copies the data out
        return cluster.process_id != 0
    _activate_for(header, args, cluster)
    return not numerics.is_primary()


def _decompress(args: argparse.Namespace) -> None:
    output = _output_name(args, compressing=False)
    cluster = _cluster(args)
    if _follows(args, cluster):
        with open(os.devnull, "wb") as sink:
            _decode_to(args, sink, args.max_output_size, follows=True)
        return
    with _atomic_output(output, args.force) as out:
        _decode_to(args, out, args.max_output_size, scratch=os.path.dirname(out.name))
    if cluster is None:  # the other processes may still read the input
        _remove_input(args, output)


def _verify(args: argparse.Namespace) -> None:
    follows = _follows(args, _cluster(args))
    with open(os.devnull, "wb") as sink:
        _decode_to(args, sink, follows=follows)
    if not args.quiet and not follows:
        print(f"{args.file}: OK", file=sys.stderr)


def _info(args: argparse.Namespace) -> None:
    with _input_file(args.file) as source:
        header, report = api.read_info(source)
    if header.stored:
        print(f"{args.file}: {header.n_bytes:,} bytes stored as they are (coding did not make them smaller), crc32 {header.data_crc32:08x}")
        print(report.format())
        if args.json:
            fields = {"original_bytes": header.n_bytes, "stored": True, "crc32": f"{header.data_crc32:08x}"}
            _write_json(args.json, {"file": args.file, "format_version": container.FORMAT_VERSION, **fields, "report": report.to_dict()})
        return
    n = header.numerics
    fields = {
        "file": args.file,
        "package_version": header.package_version,
        "format_version": container.FORMAT_VERSION,
        "original_bytes": header.n_bytes,
        "sha256": header.sha256.hex(),
        "stored": header.stored,
        "numerics": {
            "backend": n.backend,
            "device_kind": n.device_kind,
            "devices": n.devices,
            "processes": n.processes,
            "threads": n.threads,
            "xla_flags_digest": n.flags_digest.hex(),
        },
        "library_digest": header.library_digest.hex(),
        "code_digest": header.code_digest.hex(),
        "fingerprint": header.fingerprint.hex(),
        "config": header.config.to_dict(),
        "report": report.to_dict(),
    }
    what = "labels coded given inputs" if header.labels else "bytes"
    print(f"{args.file}: prequential {header.package_version}, {header.n_bytes:,} {what}, sha256 {header.sha256.hex()}")
    print(f"numerics: {n.describe()}; fingerprint {header.fingerprint.hex()}")
    print(f"digests: code #{header.code_digest.hex()}, numeric libraries #{header.library_digest.hex()}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in header.config.to_dict().items()))
    print(report.format())
    if args.json:
        _write_json(args.json, fields)


def _measure(args: argparse.Namespace) -> None:
    config = _config(args)
    numerics.activate(args.backend, args.threads)
    data = _read_input(args.file)
    if not data:
        raise UsageError(f"{args.file!r} is empty: there is nothing to measure")
    bar = _ProgressBar(len(data), "measure", args.quiet)
    try:
        result = measure(
            data,
            config,
            given=_given(args),
            progress=bar,
            checkpoint=_checkpoint(args, args.json or args.file, len(data)) if args.checkpoint or args.resume else None,
            checkpoint_interval=args.checkpoint_interval,
        )
    finally:
        bar.close()
    print(result.format())
    if args.json:
        _write_json(args.json, result.to_dict())
    if args.plot:
        plots.learning_curve(result, args.plot, f"prequential measure: {os.path.basename(args.file)}")


def _compare(args: argparse.Namespace) -> None:
    models = (
        {Path(path).stem: configs.load(path) for path in args.configs.split(",")}
        if args.configs
        else {name: configs.preset(name) for name in (args.presets or "default").split(",")}
    )
    models = {name: _with_estimator(config, args) for name, config in models.items()}
    if args.estimators:
        estimators = args.estimators.split(",")
        models = {
            (f"{name} {est}" if len(models) > 1 else est): configs.estimator(est, config)
            for name, config in models.items()
            for est in estimators
        }
    numerics.activate(args.backend, args.threads)
    data = _read_input(args.file)
    if not data:
        raise UsageError(f"{args.file!r} is empty: there is nothing to measure")
    results = {}
    for name, config in models.items():
        bar = _ProgressBar(len(data), name, args.quiet)
        try:
            results[name] = measure(data, config, baselines=False, progress=bar)
        finally:
            bar.close()
    names = list(results)
    pairs = {f"{a} vs {b}": crossings(results[a], results[b]) for i, a in enumerate(names) for b in names[i + 1 :]}
    n = max(len(data), 1)
    print(f"{'model':<20}{'code bits':>12}{'sum of losses':>16}{'total bits':>14}{'bits/byte':>11}")
    for name, r in results.items():
        print(f"{name:<20}{8 * r.code_bytes:>12,}{r.data_bits:>16,.1f}{r.total_bits:>14,.1f}{r.total_bits / n:>11.4f}")
    for pair, at in pairs.items():
        print(f"crossings {pair}: " + (", ".join(f"{t:,} tokens" for t in at) or "none"))
    if args.json:
        _write_json(
            args.json, {"schema": "prequential.compare/1", "results": {k: r.to_dict() for k, r in results.items()}, "crossings": pairs}
        )
    if args.plot:
        plots.comparison(results, args.plot, f"prequential compare: {os.path.basename(args.file)}")


def _load_npy(path: str, what: str):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)  # never unpickle: a .npy of objects is refused
    except (OSError, ValueError) as err:
        raise PrequentialError(f"cannot read {what} {path!r} as a .npy array: {err}") from None


def _classifier(args: argparse.Namespace, classes: int):
    """(module, optimizer): NAME(classes) from --model FILE.py:NAME, or the built-in MLP."""
    import importlib.util

    import optax

    from prequential import supervised

    if not args.model:
        return supervised.MLP(classes=classes, hidden=tuple(args.hidden)), optax.adam(args.learning_rate)
    path, _, name = args.model.rpartition(":")
    if not path or not name:
        raise UsageError(f"--model must be FILE.py:NAME, got {args.model!r}")
    spec = importlib.util.spec_from_file_location(f"prequential_user_{Path(path).stem}", path)
    if spec is None or not os.path.exists(path):
        raise PrequentialError(f"cannot load the model file {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that its source can be read and counted in L(code)
    spec.loader.exec_module(module)  # the user's own file, named on the command line (never anything read from a .pq)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise PrequentialError(f"{path!r} defines no callable {name!r}")
    made = factory(classes)
    if not (isinstance(made, tuple) and len(made) == 2):
        raise PrequentialError(f"{name}(classes) must return (Flax module, optax optimizer)")
    return made


def _labels(args: argparse.Namespace) -> None:
    import numpy as np

    from prequential import supervised

    numerics.activate("cpu", 1)
    x = _load_npy(args.inputs, "inputs")
    if args.action == "decompress":
        blob = _read_input(args.file)
        header = container.read_header(io.BytesIO(blob))
        module, optimizer = _classifier(args, header.config.vocab_size if header.config else 2)
        y = supervised.decompress(blob, x, module, optimizer)
        with _atomic_output(args.output, args.force) as out:
            np.save(out, y)
        if not args.quiet:
            print(f"{args.file}: {len(y):,} labels restored (SHA-256 checked)", file=sys.stderr)
        return
    y = _load_npy(args.labels, "labels")
    classes = args.classes or (int(y.max()) + 1 if y.size and np.issubdtype(y.dtype, np.integer) else 2)
    config = _with_estimator(supervised.labels_config(classes, args.batch, args.seed), args)
    module, optimizer = _classifier(args, classes)
    if args.action == "measure":
        result = supervised.measure(x, y, module, optimizer, config)
        print(result.format())
        if args.json:
            _write_json(args.json, result.to_dict())
        return
    blob = supervised.compress(x, y, module, optimizer, config)
    with _atomic_output(args.output, args.force) as out:
        out.write(blob)
    if not args.quiet:
        print(
            f"{args.labels}: {len(y):,} labels given {args.inputs} -> {len(blob):,} bytes ({8 * len(blob) / len(y):.4f} bits a label)",
            file=sys.stderr,
        )


def _demo(args: argparse.Namespace) -> None:
    sample = (resources.files("prequential") / "data" / "sample.txt").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        original, packed, restored = (os.path.join(tmp, name) for name in ("sample.txt", "sample.txt.pq", "restored.txt"))
        Path(original).write_bytes(sample)
        print(
            f"compressing the embedded sample ({len(sample):,} bytes of 'Alice in Wonderland') with preset {args.preset!r}", file=sys.stderr
        )
        _compress(_for_file(_parser().parse_args(["compress", original, "-k", "--preset", args.preset, *["-q"] * args.quiet]), original))
        print("decompressing in a fresh process ...", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "prequential", "decompress", "-q", packed, "-o", restored], capture_output=True, text=True
        )
        if done.returncode or Path(restored).read_bytes() != sample:
            raise PrequentialError(f"demo round trip failed: {done.stderr.strip() or 'restored bytes differ'}")
    print(f"OK: {len(sample):,} bytes restored bit-exact (SHA-256 checked) by a separate process", file=sys.stderr)


COMMANDS = {
    "compress": _compress,
    "decompress": _decompress,
    "verify": _verify,
    "info": _info,
    "measure": _measure,
    "compare": _compare,
    "labels": _labels,
    "demo": _demo,
}


# xz's and zstd's flags that name the command, where no command word is given.
MODE_FLAGS = {"-z": "compress", "-d": "decompress", "-t": "verify", "-l": "info"}
MODE_WORDS = {"--compress": "compress", "--decompress": "decompress", "--uncompress": "decompress", "--test": "verify", "--list": "info"}
VALUED_LETTERS = "oT"  # short options whose value may follow in the same word (-T4, -oOUT)


def _command_first(argv: list[str]) -> list[str]:
    """argv with a command word first: where it has none, the command is named by -z, -d, -t or
    -l (also inside a cluster such as -dk) or is compress, as with xz."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    modes: dict[str, str] = {}  # flag as typed -> command
    rest = []
    for at, word in enumerate(argv):
        if word == "--":  # file names follow, even ones that look like flags
            rest += argv[at:]
            break
        if word in MODE_WORDS:
            modes[word] = MODE_WORDS[word]
            continue
        if word.startswith("-") and not word.startswith("--") and len(word) > 1:
            kept = ""
            for i, letter in enumerate(word[1:], 1):
                if letter in VALUED_LETTERS:
                    kept += word[i:]
                    break
                if f"-{letter}" in MODE_FLAGS:
                    modes[f"-{letter}"] = MODE_FLAGS[f"-{letter}"]
                else:
                    kept += letter
            if not kept:
                continue
            word = f"-{kept}"
        rest.append(word)
    if len(set(modes.values())) > 1:
        raise UsageError(f"give one of {', '.join(MODE_FLAGS)}, not {' and '.join(modes)}")
    return [next(iter(modes.values()), "compress"), *rest]


def _for_file(args: argparse.Namespace, name: str) -> argparse.Namespace:
    return argparse.Namespace(**vars(args), file=name)


def _check_several(args: argparse.Namespace) -> None:
    """Options that name one path, or processes that run one file together, cannot serve several
    files; decompressed outputs may follow one another on standard output, as with xz -dc."""
    output = getattr(args, "output", None)
    single = {
        "-o/-c": None if args.command == "decompress" and output == "-" else output,
        "--json": getattr(args, "json", None),
        "--checkpoint": getattr(args, "checkpoint", None),
        "--coordinator": getattr(args, "coordinator", None),
    }
    if given := [flag for flag, value in single.items() if value is not None]:
        raise UsageError(f"{', '.join(given)}: for one FILE only, not {len(args.files)}")


MEMORY_MESSAGE = "out of memory (the default preset needs about 1.7 GB, whatever the input size; docs/memory.md)"


def _fail(message: str) -> int:
    print(f"prequential: {message}", file=sys.stderr)
    return EXIT_ERROR


def _run(args: argparse.Namespace, label: str = "") -> int:
    """One command on one file: exit status 0, or 1 with its error as one line on stderr."""
    try:
        COMMANDS[args.command](args)
    except PrequentialError as err:
        return _fail(f"{label}{err}")
    except MemoryError:
        return _fail(f"{label}{MEMORY_MESSAGE}")
    except BrokenPipeError:
        return EXIT_ERROR
    return 0


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk (PREQUENTIAL_CACHE, default ~/.cache/prequential/xla;
    "off" for none): compiling a learner takes seconds, loading it a fraction of one. Results do
    not depend on it: the cache holds programs compiled for this machine and these settings. It
    sets this process's JAX configuration: for the command and scripts run like it (experiments/),
    never for a library call."""
    import jax  # imported already (api imports flax); its config, not the environment, is read from now on

    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    where = os.environ.get("PREQUENTIAL_CACHE") or str(home / "prequential" / "xla")
    if where != "off" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        jax.config.update("jax_compilation_cache_dir", where)
        # Every program: below JAX's default threshold (1 s of XLA compile) are most of the
        # learner's, whose time goes to tracing and lowering, which the cache does not skip.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def entry() -> None:
    """The `prequential` command: main, then exit at once. The interpreter's teardown (XLA's
    compiled programs and clients destroyed one by one) would add half a second to every command,
    after the outputs are closed and there is nothing left to do."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    use_compilation_cache()
    try:
        args = _parser().parse_args(_command_first(sys.argv[1:] if argv is None else argv))
        names = getattr(args, "files", None)
        if names is not None and len(names) > 1:
            _check_several(args)
    except UsageError as err:
        return _fail(str(err))
    try:
        if names is None:
            return _run(args)
        # Each file in turn; the status says whether all succeeded.
        return max(_run(_for_file(args, name), f"{name}: " if len(names) > 1 else "") for name in names)
    except KeyboardInterrupt:
        print("prequential: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
