"""Compression-ratio benchmark (issues 4 and 14): our presets next to the classical and context-mixing peers.

A user picks a compressor on their own files, so this runs on two corpora: every file listed in
../shared/corpora/SOURCES.md, and the broad corpus that experiments/corpus.py builds from pinned
packages (executables, libraries, source code, markup, tables, logs, JSON, non-English and CJK text,
an image; listed in its MANIFEST.json); with --corpus probes, also on corpus.py's probe set of more
kinds (fonts, 16-bit audio, message catalogs, UTF-16, Japanese and Chinese text, base64, NumPy
arrays, sequence formats). A file that is missing or differs from its listed SHA-256 is named in the output
instead. For each file, whole or cut to the first N bytes (--prefix, e.g. 100000 or whole,100000
for both), it reports bits per byte (our header included) for each preset with its
encode and decode speed (one process, one XLA thread, compilation excluded, round trip checked),
and the size and compression speed of gzip -9, bzip2 -9, xz -9e, zstd -19 --long, brotli -q 11,
7z PPMd (-m0=PPMd -mx=9), zpaq -m5 and paq8px -8L, all measured in the same run. Missing Debian
peers are installed with apt-get when possible; paq8px is not packaged: build it from its public
source (github.com/hxim/paq8px) outside this repository and point PAQ8PX at the binary (or put it on
PATH). Peers that cannot be found are printed and named in the output. Writes docs/benchmarks.md.

    python experiments/bench_ratio.py [--presets default,strong|none] [--corpus shared,broad,probes]
        [--prefix whole,100000] [--jobs 2] [--files canterbury/alice29.txt,broad/make,...]
        [--peers "gzip -9,zpaq -m5,..."|all]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import CORPORA, DOCS, corpus_files, corpus_label, corpus_path, jobs_note, per_file, per_file_options, provenance
from corpus import BROAD, SETS

# name -> (Debian package, or None where Debian has none; binary; command writing {out} from {src}, {bin} the binary)
PEERS = {
    "gzip -9": ("gzip", "gzip", "{bin} -9 -c {src} > {out}"),
    "bzip2 -9": ("bzip2", "bzip2", "{bin} -9 -c {src} > {out}"),
    "xz -9e": ("xz-utils", "xz", "{bin} -9e -c {src} > {out}"),
    "zstd -19 --long": ("zstd", "zstd", "{bin} -q -19 --long -c {src} > {out}"),
    "brotli -q 11": ("brotli", "brotli", "{bin} -q 11 -c {src} > {out}"),
    "7z PPMd": ("7zip", "7zz", "{bin} a -bd -bso0 -m0=PPMd -mx=9 {out}.7z {src} && mv {out}.7z {out}"),
    "zpaq -m5": ("zpaq", "zpaq", "{bin} add {out}.zpaq {src} -m5 >/dev/null 2>&1 && mv {out}.zpaq {out}"),
    "paq8px -8L": (None, "paq8px", "{bin} -8L {src} {out} >/dev/null 2>&1"),
}
ENV = {"paq8px -8L": "PAQ8PX"}  # a peer whose binary an environment variable may name (it wins over PATH)


def binary(name: str) -> str | None:
    variable = ENV.get(name)
    if variable and os.environ.get(variable):
        path = os.environ[variable]
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(PEERS[name][1])


def ensure_peers() -> tuple[dict[str, str], dict[str, str]]:
    """Install missing Debian peers if we can; return name -> binary for those found, and name -> why for the rest."""
    packages = {PEERS[name][0] for name in PEERS if binary(name) is None} - {None}
    if packages and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", *sorted(packages)], capture_output=True)
    found = {name: path for name in PEERS if (path := binary(name))}
    absent = {}
    for name, (package, exe, _) in PEERS.items():
        if name in found:
            continue
        if name in ENV:
            where = f"${ENV[name]} ({os.environ[ENV[name]]}) is not an executable file" if os.environ.get(ENV[name]) else None
            absent[name] = where or f"not found (set ${ENV[name]} to the binary, or put {exe} on PATH)"
        else:
            absent[name] = f"not installed (Debian package {package})"
    return found, absent


def peer_version(name: str, path: str) -> str:
    """For the provenance line: the Debian package version, or what the binary says of itself."""
    package = PEERS[name][0]
    if package:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        return done.stdout.strip() or "version unknown"
    done = subprocess.run([path], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    match = re.search(r"\bv\d+\S*", done.stdout + done.stderr)
    return f"{match.group(0) if match else 'version unknown'}, {path}"


def peer_run(command: str, src: Path) -> tuple[int, float]:
    """Compressed size and wall seconds of one peer on one file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        started = time.perf_counter()
        subprocess.run(command.format(src=src, out=out), shell=True, check=True, cwd=tmp)
        return out.stat().st_size, time.perf_counter() - started


def ours(config_name: str, data: bytes) -> dict:
    # Imported here, so that a peers-only run (--presets none) needs nothing of the model.
    import prequential
    from prequential import api
    from prequential.config import preset
    from prequential.learner import fingerprint, learner_for

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


def built_files(name: str, folder: Path) -> tuple[list[Path], list[str]]:
    """The files of corpus.py's set `name`, built in `folder`, that match both MANIFEST.json and the
    digests pinned in corpus.py, and a note for each expected file that is missing or differs."""
    manifest = folder / "MANIFEST.json"
    if not manifest.is_file():
        return [], [f"the {name} corpus ({folder}) is not built: run experiments/corpus.py --set {name}"]
    listed = json.loads(manifest.read_text())
    pins = {entry.name: entry.sha256 for entry in SETS[name][0]}
    files, problems = [], [f"{name}/{note}" for note in listed.get("left_out", [])]
    for item in listed["files"]:
        path = folder / item["file"]
        if pins.get(item["file"]) != item["sha256"]:
            problems.append(f"{name}/{item['file']} is listed with a digest that corpus.py does not pin")
        elif not path.is_file():
            problems.append(f"{name}/{item['file']} is missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != item["sha256"]:
            problems.append(f"{name}/{item['file']} differs from MANIFEST.json")
        else:
            files.append(path)
    return files, problems


def manifests(folders: dict[str, Path]) -> dict[str, dict]:
    """Label -> MANIFEST.json item, for every file of the built sets."""
    found = {}
    for name, folder in folders.items():
        manifest = folder / "MANIFEST.json"
        for item in json.loads(manifest.read_text())["files"] if manifest.is_file() else []:
            found[f"{name}/{item['file']}"] = item
    return found


def measure_file(path: Path, presets: list[str], peers: dict[str, str], prefixes: list[int], folders: dict[str, Path]) -> dict:
    """The table, speed and peer-speed rows of one file, for each prefix length (0: the whole file;
    a prefix as long as the file is the whole file, measured once)."""
    whole = path.read_bytes()
    item = manifests(folders).get(corpus_label(path, folders))
    kind = item["kind"] if item else path.parent.name
    rows, speeds, peer_speeds = [], [], []
    for prefix in prefixes:
        if prefix and prefix >= len(whole) and 0 in prefixes:
            continue
        data = whole[:prefix] if prefix else whole
        n = len(data)
        name = corpus_label(path, folders) + (f" [:{prefix:,}]" if prefix and prefix < len(whole) else "")
        mine = {p: ours(p, data) for p in presets}
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / path.name  # the same name as the whole file: archivers store it
            src.write_bytes(data)
            theirs = {peer: peer_run(PEERS[peer][2].replace("{bin}", exe), src) for peer, exe in peers.items()}
        cells = [f"{8 * mine[p]['bytes'] / n:.3f}" + (" (stored)" if mine[p]["stored"] else "") for p in presets]
        cells += [f"{8 * size / n:.3f}" for size, _ in theirs.values()]
        best = min(theirs, key=lambda peer: theirs[peer][0]) if theirs else "-"
        rows.append(f"| {name} | {kind} | {n:,} | " + " | ".join(cells) + f" | {best} |\n")
        for p in presets:
            decode = "stored" if mine[p]["stored"] else f"{mine[p]['decode_kbs']:.2f}"
            speeds.append(f"| {name} | {p} | {mine[p]['encode_kbs']:.2f} | {decode} |\n")
        peer_speeds.append(f"| {name} | " + " | ".join(f"{n / 1000 / seconds:,.1f}" for _, seconds in theirs.values()) + " |\n")
        print(rows[-1], end="", flush=True)
    return {"rows": rows, "speeds": speeds, "peer_speeds": peer_speeds}


def corpus_note(folders: dict[str, Path], shown: set[str]) -> str:
    """The built sets' files as measured: kind, size, where each came from, what was done to it."""
    items = [item for name, item in manifests(folders).items() if name in shown]
    if not items:
        return ""
    lines = [
        "\n## Files from pinned packages (experiments/corpus.py)\n\n",
        "| file | kind | bytes | package | path in the package | transformation | SHA-256 |\n|---|---|---:|---|---|---|---|\n",
    ]
    for item in items:
        source = f"{item['registry']} {item['package']} {item['version']}"
        lines.append(
            f"| {item['file']} | {item['kind']} | {item['bytes']:,} | {source} | {item['member']} "
            f"| {item['transform']} | {item['sha256'][:16]}… |\n"
        )
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default", help="comma-separated presets, or none (peers only)")
    parser.add_argument("--corpus", default="shared,broad", help="comma-separated: shared (../shared/corpora), broad, probes")
    parser.add_argument("--broad", default=str(BROAD), help="the folder that experiments/corpus.py built")
    parser.add_argument("--prefix", default="whole", help="comma-separated: whole, or a byte count to cut every file to")
    parser.add_argument("--files", help="comma-separated paths under the corpora, broad/NAME or probes/NAME for corpus.py's (default: all)")
    parser.add_argument("--peers", default="all", help="comma-separated peer names (as in the table), or all")
    per_file_options(parser)
    parser.add_argument("--out", default=str(DOCS / "benchmarks.md"))
    args = parser.parse_args()
    folders = {name: folder.resolve() for name, (_, folder) in SETS.items()} | {"broad": Path(args.broad).resolve()}
    found, absent = ensure_peers()
    if args.peers != "all":
        chosen = args.peers.split(",")
        if unknown := set(chosen) - set(PEERS):
            raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))}; choose from: {', '.join(PEERS)}")
        found = {name: path for name, path in found.items() if name in chosen}
        absent = {name: why for name, why in absent.items() if name in chosen}
    if absent:
        print("Peers not found: " + "; ".join(f"{k}: {v}" for k, v in absent.items()), flush=True)
    if args.files:
        names = args.files.split(",")
        files = [corpus_path(f, folders) for f in names]
        problems = []
    else:
        files, problems = [], []
        for corpus in args.corpus.split(","):
            more, notes = corpus_files() if corpus == "shared" else built_files(corpus, folders[corpus])
            files, problems = files + more, problems + notes
    presets = [] if args.presets == "none" else args.presets.split(",")
    prefixes = [0 if size == "whole" else int(size) for size in args.prefix.split(",")]
    options = ["--presets", args.presets, "--prefix", args.prefix, "--broad", str(folders["broad"]), "--peers", args.peers]
    results = per_file(__file__, files, args, lambda path: measure_file(path, presets, found, prefixes, folders), options)
    shown = {corpus_label(path, folders) for path in files}
    head = "| file | kind | bytes | " + " | ".join([*(f"**{p}**" for p in presets), *found]) + " | best peer |\n"
    head += "|---|---|---:|" + "---:|" * (len(presets) + len(found) + 1) + "\n"
    versions = "; ".join(f"{name}: {peer_version(name, path)}" for name, path in found.items())
    sizes = ", ".join("whole files" if p == 0 else f"the first {p:,} bytes of each file" for p in prefixes)
    text = (
        "# Compression ratio (generated by experiments/bench_ratio.py)\n\n"
        f"{provenance(1)}{jobs_note(args)} Peers: {versions or 'none'}.\n\n"
        f"Bits per byte of the whole output file (our header included), all measured in this run, on {sizes}. "
        "Missing peers: "
        + ("; ".join(f"{k}: {v}" for k, v in absent.items()) or "none")
        + (f". Not run here (--peers): {', '.join(n for n in PEERS if n not in args.peers.split(','))}" if args.peers != "all" else "")
        + ". Corpus files not measured: "
        + ("; ".join(problems) or "none")
        + "."
        + (f" The corpus was read from {CORPORA} (PREQUENTIAL_CORPORA)." if os.environ.get("PREQUENTIAL_CORPORA") else "")
        + "\n\n"
        + head
        + "".join(row for r in results for row in r["rows"])
        + (
            "\n## Speed of our presets (KB/s, one core, compilation excluded)\n\n| file | preset | encode | decode |\n|---|---|---:|---:|\n"
            + "".join(line for r in results for line in r["speeds"])
            if presets
            else ""
        )
        + (
            "\n## Speed of the peers (KB/s compressing, wall time of the whole command, one process)\n\n| file | "
            + " | ".join(found)
            + " |\n|---|"
            + "---:|" * len(found)
            + "\n"
            + "".join(line for r in results for line in r["peer_speeds"])
            if found
            else ""
        )
        + corpus_note(folders, shown)
    )
    Path(args.out).write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
