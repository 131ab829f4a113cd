"""Exact against native numerics, side by side in one run: ratio and speed per preset and file.

For every preset and file, both numerics of the same config: the training pass's bits per byte
(for exact numerics this is the encoder's ideal code length to the last bit; for native ones it
agrees with it to float rounding) and its speed, and with --roundtrip a real compress and
decompress in this process (file bits per byte, encode and decode KB/s, the round trip checked).
The two numerics alternate file by file, so machine noise falls on both. One process on one core;
compilation is timed apart. Writes docs/numerics-benchmark.md.

    python experiments/bench_numerics.py [--presets default,strong] [--files canterbury/alice29.txt,...] [--roundtrip]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from common import CORPORA, DOCS, provenance

import prequential
from prequential import api, numerics
from prequential.config import preset
from prequential.learner import fingerprint, learner_for
from prequential.replay import Layout, train_pass
from prequential.store import ArrayStore

FILES = "canterbury/alice29.txt,canterbury/lcet10.txt,misc/mapsdatazrh"


def run(preset_name: str, kind: str, path: Path, roundtrip: bool, train: bool = True, prefix: int = 0) -> dict:
    """One preset, numerics and file (its first `prefix` bytes, if given): the training pass
    (unless not `train`) and the round trip."""
    data = path.read_bytes()[: prefix or None]
    config = preset(preset_name).replace(numerics=kind)
    started = time.perf_counter()
    fingerprint(learner_for(config))  # compiles the functions the passes use
    row = {"preset": preset_name, "numerics": kind, "file": f"{path.parent.name}/{path.name}", "bytes": len(data)}
    row |= {"compile_s": time.perf_counter() - started}
    if train:
        tokens = np.frombuffer(data, np.uint8).astype(np.int32)
        started = time.perf_counter()
        bits = train_pass(learner_for(config), Layout(len(data), config.streams, config.segment), ArrayStore(tokens))[0].sum()
        row |= {"train_bpb": bits / len(data), "train_kbs": len(data) / 1000 / (time.perf_counter() - started)}
    if roundtrip:
        out = io.BytesIO()
        started = time.perf_counter()
        api.encode(data, out, config)
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        if prequential.decompress(out.getvalue()) != data:
            raise SystemExit(f"round trip failed: {row}")
        decode_s = time.perf_counter() - started
        row |= {"file_bpb": 8 * len(out.getvalue()) / len(data)}
        row |= {"encode_kbs": len(data) / 1000 / encode_s, "decode_kbs": len(data) / 1000 / decode_s}
    return row


def fastest(runs: list[dict]) -> dict:
    """One cell from repeated runs of it: the first's values, and each speed at its fastest (noise
    on a shared machine only slows a run down). The sizes must not change between repeats."""
    best = dict(runs[0])
    for r in runs[1:]:
        if r.get("file_bpb") != best.get("file_bpb"):
            raise SystemExit(f"a repeat gave another size: {r} against {best}")
        for key in ("encode_kbs", "decode_kbs"):
            if key in r:
                best[key] = max(best[key], r[key])
    return best


def table(rows: list[dict]) -> str:
    """One line per preset and file: both numerics and their ratios."""
    out = [
        "| preset | file | native bits/byte | exact bits/byte | exact/native size | native train KB/s | exact train KB/s |"
        " native enc / dec KB/s | exact enc / dec KB/s | exact/native speed (enc, dec) |\n",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    ]
    pairs: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["preset"], r["file"]), {})[r["numerics"]] = r
    for (name, file), both in pairs.items():
        if set(both) != {"native", "exact"}:
            continue
        n, e = both["native"], both["exact"]
        bpb = "file_bpb" if "file_bpb" in n else "train_bpb"
        line = f"| {name} | {file} | {n[bpb]:.4f} | {e[bpb]:.4f} | {e[bpb] / n[bpb]:.4f} | {n['train_kbs']:.2f} | {e['train_kbs']:.2f} |"
        if "encode_kbs" in n:
            line += f" {n['encode_kbs']:.2f} / {n['decode_kbs']:.2f} | {e['encode_kbs']:.2f} / {e['decode_kbs']:.2f} |"
            line += f" {e['encode_kbs'] / n['encode_kbs']:.2f}, {e['decode_kbs'] / n['decode_kbs']:.2f} |"
        else:
            line += " | | |"
        out.append(line + "\n")
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default")
    parser.add_argument("--files", default=FILES)
    parser.add_argument("--roundtrip", action="store_true", help="also compress and decompress (slower)")
    parser.add_argument("--repeats", type=int, default=1, help="round trips per cell, in alternating order; the fastest is reported")
    parser.add_argument("--bytes", type=int, default=0, help="only the first N bytes of each file (for slow presets)")
    parser.add_argument("--out", default=str(DOCS / "numerics-benchmark.md"))
    args = parser.parse_args()
    numerics.activate("cpu", 1)  # the command's default: one core, one XLA thread
    rows = []
    for name in args.presets.split(","):
        for file in args.files.split(","):
            runs: dict[str, list[dict]] = {"native": [], "exact": []}
            for repeat in range(args.repeats if args.roundtrip else 1):
                for kind in ("native", "exact") if repeat % 2 == 0 else ("exact", "native"):  # ABBA...: drift falls on both
                    runs[kind].append(run(name, kind, CORPORA / file, args.roundtrip, train=repeat == 0, prefix=args.bytes))
                    print(runs[kind][-1], flush=True)
            rows += [fastest(runs["native"]), fastest(runs["exact"])]
    repeated = f"; each round trip {args.repeats} times, in the order native, exact, exact, native, ..., the fastest of each shown"
    compile_lines = "".join(f"- {r['preset']} {r['numerics']}: {r['compile_s']:.1f} s\n" for r in rows if r["file"] == rows[0]["file"])
    text = (
        "# Exact against native numerics (generated by experiments/bench_numerics.py)\n\n"
        f"{provenance(1)}\n\n"
        "Bits per byte: "
        + ("the whole file (header included)" if args.roundtrip else "the training pass")
        + " over the input size"
        + (f" (the first {args.bytes:,} bytes of each file)" if args.bytes else "")
        + "; "
        "the exact training pass is the encoder's ideal code length to the last bit. Speeds exclude compilation. "
        "The two numerics ran alternately, file by file, in one process on one core"
        + (repeated if args.roundtrip and args.repeats > 1 else "")
        + ". Command: "
        f"`python experiments/bench_numerics.py --presets {args.presets} --files {args.files}"
        f"{' --roundtrip' if args.roundtrip else ''}{f' --repeats {args.repeats}' if args.repeats > 1 else ''}"
        f"{f' --bytes {args.bytes}' if args.bytes else ''}`.\n\n"
        + table(rows)
        + "\nCompile time (every function a pass uses, first file):\n\n"
        + compile_lines
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
