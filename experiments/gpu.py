"""Speed of the presets on a GPU next to the same presets on the CPU, and where a step's time goes
(issue 6). Also the GPU round trip through the command in separate processes, and the refusal of a
GPU file on a machine without that GPU.

Each speed cell runs in a fresh process (the backend is chosen before JAX starts): it compiles by
coding a few bytes, then times `encode` and `decode` of the input in the same process, so the
speeds exclude compilation, and then replays the first segments again with every jitted call
synchronized, to split the time per step into the model's step, its training, and the host's work
(count models, range coder, Python). Writes docs/gpu-speed.md. Usage:

    python experiments/gpu.py [--presets default,large,xl] [--bytes 152089] [--cpu-bytes 16384]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CORPORA, DOCS, provenance, run_prequential

DEFAULT_PRESETS = "default,large,xl"


class TimedLearner:
    """A learner whose jitted calls wait for their results, so each one's time can be read off."""

    def __init__(self, learner) -> None:
        self.learner, self.config, self.seconds, self.calls = learner, learner.config, collections.Counter(), collections.Counter()

    def init(self):
        return self.learner.init()

    def __getattr__(self, name: str):  # everything else (prepare, score, scoring_params, ...) untimed
        return getattr(self.learner, name)

    def _timed(self, name: str, *args):
        import jax

        started = time.perf_counter()
        result = jax.block_until_ready(getattr(self.learner, name)(*args))
        self.seconds[name] += time.perf_counter() - started
        self.calls[name] += 1
        return result

    def prefill(self, *args):
        return self._timed("prefill", *args)

    def step(self, *args):
        return self._timed("step", *args)

    def train(self, *args):
        return self._timed("train", *args)


def cell(backend: str, name: str, data: bytes, profile_segments: int) -> dict:
    """One preset on one backend, in this (fresh) process."""
    import jax
    import numpy as np

    from prequential import api, numerics
    from prequential import config as configs
    from prequential.coder import Encoder
    from prequential.config import PRESETS, preset
    from prequential.learner import learner_for
    from prequential.replay import Layout, replay
    from prequential.store import ArrayStore

    here = numerics.activate(backend, None if backend == "cpu" else 1)
    config = preset(name) if name in PRESETS else configs.load(name)  # a preset, or a TOML/JSON config file
    started = time.perf_counter()
    api.compress(data[: config.streams * config.segment], config, threads=here.threads, backend=backend)  # compiles every function
    compile_s = time.perf_counter() - started
    out = io.BytesIO()
    started = time.perf_counter()
    api.encode(data, out, config, threads=here.threads, backend=backend)
    encode_s = time.perf_counter() - started
    decoded = io.BytesIO()
    started = time.perf_counter()
    api.decode(io.BytesIO(out.getvalue()), decoded)
    decode_s = time.perf_counter() - started

    learner = learner_for(config)
    params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(learner.init().params))
    timed = TimedLearner(learner)
    sample = data[: profile_segments * config.streams * config.segment]
    layout = Layout(len(sample), config.streams, config.segment)
    started = time.perf_counter()
    replay(timed, layout, ArrayStore(np.frombuffer(sample, np.uint8)), Encoder(io.BytesIO()))
    profile_s = time.perf_counter() - started
    steps = max(timed.calls["step"], 1)
    device_s = sum(timed.seconds.values())
    return {
        "backend": backend,
        "device": here.device_kind,
        "threads": here.threads,
        "preset": Path(name).stem,
        "params": int(params),
        "streams": config.streams,
        "bytes": len(data),
        "bits_per_byte": 8 * len(out.getvalue()) / len(data),
        "encode_kb_s": len(data) / 1000 / encode_s,
        "decode_kb_s": len(data) / 1000 / decode_s,
        "compile_s": compile_s,
        "exact": decoded.getvalue() == data,
        "step_ms": 1000 * timed.seconds["step"] / steps,
        "prefill_ms_per_step": 1000 * timed.seconds["prefill"] / steps,
        "train_ms_per_step": 1000 * timed.seconds["train"] / steps,
        "host_ms_per_step": 1000 * (profile_s - device_s) / steps,
        "profiled_ms_per_step": 1000 * profile_s / steps,
        "bytes_per_step": config.streams,
    }


def round_trip(name: str, data: bytes, work: Path) -> str:
    """Compress on the GPU and decompress in another process; then refuse it where no GPU is visible."""
    (work / "in").write_bytes(data)
    compress_s, done = run_prequential(["compress", "-q", "-k", "-f", "--backend", "gpu", "--preset", name, "in"], work)
    if done.returncode:
        return f"| {name} | {len(data):,} | compress failed: {done.stderr.strip().splitlines()[-1]} | | | |\n"
    decompress_s, done = run_prequential(["decompress", "-q", "-k", "-f", "in.pq", "-o", "out"], work)
    exact = not done.returncode and (work / "out").read_bytes() == data
    hidden = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    _, refused = run_prequential(["decompress", "-q", "-f", "in.pq", "-o", "refused"], work, env=hidden)
    message = refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else "(no message)"
    return (
        f"| {name} | {len(data):,} | {8 * (work / 'in.pq').stat().st_size / len(data):.3f} | {compress_s:.1f} | {decompress_s:.1f} "
        f"| {'yes' if exact else 'NO'} | exit {refused.returncode}: `{message}` |\n"
    )


def speed_row(backend: str, name: str) -> str:
    done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--cell", backend, name], capture_output=True, text=True, check=False)
    if done.returncode:
        print(f"{backend} {name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return f"| {backend} | {name} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'} |\n"
    r = json.loads(done.stdout.splitlines()[-1])
    row = (
        f"| {r['backend']} ({r['device']}, {r['threads']} thread(s)) | {r['preset']} | {r['params'] / 1e6:.2f} M | {r['streams']} "
        f"| {r['bytes']:,} | {r['bits_per_byte']:.3f} | {r['encode_kb_s']:.2f} | {r['decode_kb_s']:.2f} | {r['compile_s']:.1f} "
        f"| {r['profiled_ms_per_step']:.2f} | {r['step_ms']:.2f} | {r['prefill_ms_per_step'] + r['train_ms_per_step']:.2f} "
        f"| {r['host_ms_per_step']:.2f} | {'yes' if r['exact'] else 'NO'} |\n"
    )
    print(row, end="", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=DEFAULT_PRESETS, help="preset names or config files")
    parser.add_argument("--file", default="canterbury/alice29.txt")
    parser.add_argument("--bytes", type=int, default=152089, help="input size on the GPU")
    parser.add_argument("--cpu-bytes", type=int, default=16384, help="input size on the CPU (all its cores)")
    parser.add_argument("--round-trip-bytes", type=int, default=30000)
    parser.add_argument("--round-trip-presets", default="default,xl")
    parser.add_argument("--profile-segments", type=int, default=16)
    parser.add_argument("--backends", default="gpu,cpu")
    parser.add_argument("--out", type=Path, default=DOCS / "gpu-speed.md")
    parser.add_argument("--cell", nargs=2, metavar=("BACKEND", "PRESET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    source = (CORPORA / args.file).read_bytes()
    if args.cell:
        backend, name = args.cell
        size = args.bytes if backend == "gpu" else args.cpu_bytes
        print(json.dumps(cell(backend, name, source[:size], args.profile_segments)))
        return
    rows, trips = [], []
    backends = args.backends.split(",")
    for backend in backends:  # the GPU first: its numbers are the point, the CPU's the comparison
        for name in filter(None, args.presets.split(",")):
            rows.append(speed_row(backend, name))
        if backend == "gpu":
            with tempfile.TemporaryDirectory() as tmp:
                for name in filter(None, args.round_trip_presets.split(",")):
                    trips.append(round_trip(name, source[: args.round_trip_bytes], Path(tmp)))
                    print(trips[-1], end="", flush=True)
    text = (
        "# GPU and CPU speed\n\nGenerated by `python experiments/gpu.py`. "
        + provenance(1)
        + f" Input: the start of {args.file} ({args.bytes:,} bytes on the GPU, {args.cpu_bytes:,} on the CPU, which uses all"
        " its cores).\n\nEncode and decode KB/s exclude compilation (compile s: coding a few bytes first). A step codes one"
        " byte of each stream. The time per step is split by a second, synchronized run over the first"
        f" {args.profile_segments} segments: the model's step, its prefill and training (per step), and the host's work (count"
        " models, range coder, Python), which is the rest.\n\n"
        "| backend | preset | parameters | streams | bytes | bits/byte | encode KB/s | decode KB/s | compile s "
        "| ms/step | step ms | prefill+train ms/step | host ms/step | bit-exact |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        + "".join(rows)
        + "\n## GPU round trip through the command, separate processes\n\nCompress with `--backend gpu`, decompress in another"
        " process, then decompress again with no GPU visible (`CUDA_VISIBLE_DEVICES=`), which must be refused. Times are"
        " whole commands (process start and compile included).\n\n"
        "| preset | bytes | bits/byte | compress s | decompress s | bit-exact | without the GPU |\n|---|---:|---:|---:|---:|---|---|\n"
        + "".join(trips)
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
