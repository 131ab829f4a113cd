"""Portability matrix: files made under one setting, decoded in separate processes under others.

Exact numerics (the default) must decode bit-exactly in every cell. Native numerics are shown
beside them for contrast: there a cell must read bit-exact or refused (before decoding, with the
cause), never wrong output. The aarch64 cell runs the exact learner under an emulated 64-bit ARM
CPU (../shared/tools/aarch64-python; constriction has no wheel there, so it covers the learner:
the fingerprint, and a hash of the coder weights of a whole training pass) and compares with this
machine. Writes docs/portability.md.

    python experiments/portability.py [--presets tiny,default] [--bytes 6000] [--arm-bytes 20000] [--no-arm]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

from common import CORPORA, DOCS, provenance

from prequential import numerics

CORES = sorted(os.sched_getaffinity(0))
ROOT = Path(__file__).resolve().parents[1]
ARM = ROOT.parent / "shared" / "tools" / "aarch64-python"
ISAS = ("SSE4_2", "AVX", "AVX2", "native")
ARM_NUMBA = Path(__file__).resolve().parent / "out" / "aarch64-numba"  # git-ignored

# Runs on both machines: the fingerprints, and a hash of every weight the coder would be given
# (and the tokens), over a training pass on the first N bytes of alice29.txt.
LEARNER_PROBE = """
import hashlib, os, sys
sys.path[:0] = [p for p in [os.environ.get("ARM_EXTRA_SITE")] if p]  # Numba for aarch64 (arm_site)
import numpy as np
from prequential.config import preset
from prequential.learner import fingerprint, learner_for
from prequential.replay import Layout, replay
from prequential.store import ArrayStore

class Hashing:
    decodes = False
    def __init__(self): self.h = hashlib.blake2b(digest_size=8)
    def begin_block(self, *args): pass
    def code(self, weights, known): self.h.update(np.ascontiguousarray(weights).tobytes() + known.tobytes()); return known
    def sync(self, digest, segment): self.h.update(digest)
    def end_block(self, bits): pass

names, path, n = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
for name in names:
    print(name, "fingerprint", fingerprint(learner_for(preset(name))).hex(), flush=True)
config = preset(names[0])
data = np.frombuffer(open(path, "rb").read()[:n], np.uint8).astype(np.int32)
coder = Hashing()
result = replay(learner_for(config), Layout(len(data), config.streams, config.segment), ArrayStore(data), coder)
print(names[0], "pass", coder.h.hexdigest(), result.ideal_bits, flush=True)
"""


def cli(args: list[str], cores: list[int], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = ["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-m", "prequential", *args]
    return subprocess.run(command, capture_output=True, env={**os.environ, **(env or {})}, timeout=1800)


def outcome(done: subprocess.CompletedProcess, data: bytes) -> str:
    if done.returncode == 0:
        return "bit-exact" if done.stdout == data else "**WRONG OUTPUT**"
    return "refused: " + done.stderr.decode().strip().replace("|", "/")


def decoders() -> dict[str, tuple[list[int], dict[str, str], list[str]]]:
    """name -> (cores, environment, extra decompress options)."""
    out = {}
    for isa in ISAS:
        env = {} if isa == "native" else {"XLA_FLAGS": f"--xla_cpu_max_isa={isa}"}
        for cores in sorted({1, len(CORES)}):
            out[f"{isa}, {cores} core(s)"] = (CORES[:cores], env, [])
    out["4 simulated devices"] = (CORES, {}, ["--devices", "4"])
    return out


def matrix(presets: list[str], data: bytes, tmp: Path) -> list[str]:
    source = tmp / "in"
    source.write_bytes(data)
    rows = []
    encoders = [(p, "exact", t, []) for p in presets for t in sorted({1, len(CORES)})]
    encoders += [(presets[0], "exact", 1, ["--devices", "4"])]
    encoders += [(presets[0], "native", len(CORES), [])]
    for preset, kind, threads, extra in encoders:
        config = tmp / f"{preset}-{kind}.toml"
        config.write_text(f'preset = "{preset}"\nnumerics = "{kind}"\n')
        packed = tmp / f"{preset}-{kind}-{threads}-{len(extra)}.pq"
        encode = ["compress", "-q", "-k", "-f", "--config", str(config), "--threads", str(threads), *extra, str(source), "-o", str(packed)]
        made = cli(encode, CORES)
        encoder = f"{threads} thread(s)" + (", 4 simulated devices" if extra else "")
        if made.returncode:
            rows.append(f"| {preset} | {kind} | {encoder} | | encode failed: {made.stderr.decode().strip()} |\n")
            continue
        for name, (cores, env, options) in decoders().items():
            if kind == "native" and options:
                continue
            started = time.perf_counter()
            done = cli(["decompress", "-q", "-k", *options, str(packed), "-o", "-"], cores, env)
            rows.append(f"| {preset} | {kind} | {encoder} | {name} | {outcome(done, data)} |\n")
            print(rows[-1].strip(), f"({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def arm_site(folder: Path) -> Path:
    """Numba and llvmlite for aarch64, unpacked: the aarch64 tool installs only the learner's
    pinned JAX stack, and the count models need Numba (the versions installed here)."""
    site = folder / "site"
    if not site.exists():
        pins = [f"{name}=={metadata.version(name)}" for name in ("numba", "llvmlite")]
        wheels = folder / "wheels"
        tags = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
        platforms = [arg for tag in tags for arg in ("--platform", tag)]
        download = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "--python-version", "3.11"]
        subprocess.run([*download, *platforms, "-d", str(wheels), *pins], check=True)
        for wheel in wheels.glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(site)
    return site


def arm_cell(presets: list[str], n_bytes: int) -> str:
    path = str(CORPORA / "canterbury/alice29.txt")
    probe = ["-c", LEARNER_PROBE, ",".join(presets), path, str(n_bytes)]
    here = subprocess.run([sys.executable, *probe], capture_output=True, text=True, cwd=ROOT)
    if not ARM.exists():
        return f"aarch64: not measured ({ARM} is missing).\n"
    started = time.perf_counter()
    env = {**os.environ, "PROJECT": str(ROOT), "ARM_EXTRA_SITE": str(arm_site(ARM_NUMBA))}
    arm = subprocess.run([str(ARM), *probe], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if arm.returncode or here.returncode:
        return f"aarch64: the probe failed: {(arm.stderr or here.stderr).strip().splitlines()[-1:]}\n"
    lines = ["| check | x86-64 (here) | aarch64 (emulated) | equal |\n|---|---|---|---|\n"]
    for mine, theirs in zip(here.stdout.splitlines(), arm.stdout.splitlines(), strict=True):
        name, what, value = mine.split(" ", 2)
        other = theirs.split(" ", 2)[2]
        lines.append(f"| {name} {what} | `{value}` | `{other}` | {'yes' if value == other else '**NO**'} |\n")
    return (
        f"The learner on an emulated 64-bit ARM CPU (QEMU user mode, the same pinned jax, jaxlib, flax, optax, numpy "
        f"and numba wheels for aarch64; {seconds:.0f} s): the fingerprints of {', '.join(presets)}, and a hash of every weight the "
        f"coder is given (with the tokens and sync digests) over the training pass of `{presets[0]}` on the first "
        f"{n_bytes:,} bytes of alice29.txt, with its ideal code length in bits.\n\n" + "".join(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="tiny,default")
    parser.add_argument("--bytes", type=int, default=6000)
    parser.add_argument("--arm-bytes", type=int, default=20000)
    parser.add_argument("--no-arm", action="store_true")
    args = parser.parse_args()
    presets = args.presets.split(",")
    data = (CORPORA / "canterbury/alice29.txt").read_bytes()[: args.bytes]
    with tempfile.TemporaryDirectory() as tmp:
        rows = matrix(presets, data, Path(tmp))
    arm = "aarch64: not measured in this run (--no-arm).\n" if args.no_arm else arm_cell(presets, args.arm_bytes)
    digest = hashlib.sha256(data).hexdigest()[:16]
    text = (
        "# Portability matrix (generated by experiments/portability.py)\n\n"
        f"{provenance(numerics.usable_cores())}\n\n"
        f"Each file ({args.bytes:,} bytes of alice29.txt, SHA-256 {digest}...) is made by `prequential compress` in one "
        "process and decoded by `prequential decompress` in another, under the setting named: `XLA_FLAGS=--xla_cpu_max_isa=ISA` "
        "(older x86 instruction sets; `native` is this machine's), `taskset` to that many cores, or `--devices 4` "
        "(simulated CPU devices, the streams split over them). Exact numerics must be bit-exact in every cell; native "
        "numerics, shown for contrast, bit-exact or refused before decoding, never wrong output.\n\n"
        "| preset | numerics | encoder | decoder | outcome |\n|---|---|---|---|---|\n"
        + "".join(rows)
        + "\n## Another CPU architecture\n\n"
        + arm
        + "\n"
        "## GPU\n\nGPU cells (GPU encode to CPU decode, CPU encode to GPU decode): not measured; no GPU machine was lent "
        "to this task. Exact numerics compute the same integers there by construction (the matrix products are float32 "
        "dots of integers whose every partial sum is exact, also in TF32), and a CPU-made file names no device the "
        "decoder must have.\n"
    )
    (DOCS / "portability.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
