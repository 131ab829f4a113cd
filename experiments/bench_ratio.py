"""Compression-ratio benchmark (issue 4): our presets next to the classical and context-mixing peers.

For every file listed in ../shared/corpora/SOURCES.md (one that is missing or differs from its
listed SHA-256 is named in the output instead): the file size in bits per byte (header included) for each
preset, its encode and decode speed (one process, one XLA thread, compilation excluded, round trip
checked), and the sizes from gzip -9, bzip2 -9, xz -9e, zstd -19 --long, brotli -q 11, 7z PPMd
(-m0=PPMd -mx=9) and zpaq -m5, measured in the same run. Missing peers are installed with apt-get
when possible, and otherwise reported as missing. Writes docs/benchmarks.md.

    python experiments/bench_ratio.py [--presets default,strong] [--jobs 2] [--files canterbury/alice29.txt,...]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import CORPORA, DOCS, corpus_files, jobs_note, per_file, per_file_options, provenance

import prequential
from prequential import api
from prequential.config import preset
from prequential.learner import fingerprint, learner_for

# name -> (Debian package, command template writing {out} from {src})
PEERS = {
    "gzip -9": ("gzip", "gzip -9 -c {src} > {out}"),
    "bzip2 -9": ("bzip2", "bzip2 -9 -c {src} > {out}"),
    "xz -9e": ("xz-utils", "xz -9e -c {src} > {out}"),
    "zstd -19 --long": ("zstd", "zstd -q -19 --long -c {src} > {out}"),
    "brotli -q 11": ("brotli", "brotli -q 11 -c {src} > {out}"),
    "7z PPMd": ("7zip", "7zz a -bd -bso0 -m0=PPMd -mx=9 {out}.7z {src} && mv {out}.7z {out}"),
    "zpaq -m5": ("zpaq", "zpaq add {out}.zpaq {src} -m5 >/dev/null 2>&1 && mv {out}.zpaq {out}"),
}
BINARIES = {
    "gzip -9": "gzip",
    "bzip2 -9": "bzip2",
    "xz -9e": "xz",
    "zstd -19 --long": "zstd",
    "brotli -q 11": "brotli",
    "7z PPMd": "7zz",
    "zpaq -m5": "zpaq",
}


def ensure_peers() -> dict[str, str]:
    """Install missing peers from Debian if we can; return name -> why it is missing."""
    missing = {name: pkg for name, (pkg, _) in PEERS.items() if shutil.which(BINARIES[name]) is None}
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", *sorted(set(missing.values()))], capture_output=True)
    return {name: f"not installed (Debian package {pkg})" for name, pkg in missing.items() if shutil.which(BINARIES[name]) is None}


def peer_size(command: str, src: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        subprocess.run(command.format(src=src, out=out), shell=True, check=True, cwd=tmp)
        return out.stat().st_size


def ours(config_name: str, data: bytes) -> dict:
    config = preset(config_name)
    fingerprint(learner_for(config))  # compile outside the timed runs
    out = io.BytesIO()
    started = time.perf_counter()
    report = api.encode(data, out, config)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    assert prequential.decompress(out.getvalue()) == data, "round trip failed"
    decode_s = time.perf_counter() - started
    return {
        "bytes": len(out.getvalue()),
        "encode_kbs": len(data) / 1000 / encode_s,
        "decode_kbs": len(data) / 1000 / decode_s,
        "stored": report.stored,
    }


def measure_file(path: Path, presets: list[str], peers: list[str]) -> dict:
    """The table row and the speed rows of one file."""
    data = path.read_bytes()
    n = len(data)
    mine = {p: ours(p, data) for p in presets}
    theirs = {name: peer_size(PEERS[name][1], path) for name in peers}
    best = min(theirs, key=theirs.get)
    cells = [f"{8 * mine[p]['bytes'] / n:.3f}" + (" (stored)" if mine[p]["stored"] else "") for p in presets]
    cells += [f"{8 * theirs[name] / n:.3f}" for name in peers]
    speeds = []
    for p in presets:
        decode = "stored" if mine[p]["stored"] else f"{mine[p]['decode_kbs']:.2f}"
        speeds.append(f"| {path.parent.name}/{path.name} | {p} | {mine[p]['encode_kbs']:.2f} | {decode} |\n")
    row = f"| {path.parent.name}/{path.name} | {n:,} | " + " | ".join(cells) + f" | {best} |\n"
    print(row, end="", flush=True)
    return {"row": row, "speeds": speeds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default")
    parser.add_argument("--files", help="comma-separated paths under the corpora (default: all in SOURCES.md)")
    per_file_options(parser)
    parser.add_argument("--out", default=str(DOCS / "benchmarks.md"))
    args = parser.parse_args()
    absent = ensure_peers()
    files, problems = ([CORPORA / f for f in args.files.split(",")], []) if args.files else corpus_files()
    presets = args.presets.split(",")
    peers = [name for name in PEERS if name not in absent]
    results = per_file(__file__, files, args, lambda path: measure_file(path, presets, peers), ["--presets", args.presets])
    head = "| file | bytes | " + " | ".join(f"**{p}**" for p in presets) + " | " + " | ".join(peers) + " | best peer |\n"
    head += "|---|---:|" + "---:|" * (len(presets) + len(peers) + 1) + "\n"
    text = (
        "# Compression ratio (generated by experiments/bench_ratio.py)\n\n"
        f"{provenance(1)}{jobs_note(args)}\n\n"
        "Bits per byte of the whole output file (our header included), all measured in this run. "
        "Missing peers: "
        + (", ".join(f"{k}: {v}" for k, v in absent.items()) or "none")
        + ". Corpus files not measured: "
        + (", ".join(problems) or "none")
        + "."
        + (f" The corpus was read from {CORPORA} (PREQUENTIAL_CORPORA)." if os.environ.get("PREQUENTIAL_CORPORA") else "")
        + "\n\n"
        + head
        + "".join(r["row"] for r in results)
        + "\n## Speed (KB/s, one core, compilation excluded)\n\n| file | preset | encode | decode |\n|---|---|---:|---:|\n"
        + "".join(line for r in results for line in r["speeds"])
    )
    Path(args.out).write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
