"""The process-wide settings that decide which floats XLA computes, and pinning them.

Exact numerics (ops.py) compute the same integers under any of these settings, so for their
files the settings are recorded as information only. Native numerics depend on them: XLA sizes
its CPU thread pool from the process's CPU affinity when it creates its client, and long
reductions split across threads round differently for different thread counts. So a native
encoder records how many cores it ran on, and its decoder must run with as many.

The library only observes a process (`current`); pinning it (`activate`: CPU affinity, XLA
determinism flags, simulated devices, joining other processes) is for the command-line tool or a
caller who asks for it, and must happen before JAX starts. This module imports no JAX at module
level, so the CLI can read a header and pin the process first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from prequential.errors import NumericsError

# YNNPACK fusions make column reductions (bias and LayerNorm gradients) depend on the thread count.
# 512-bit vectors where the CPU has them: exact numerics' integer code runs 12 % faster (their
# results do not depend on it); native numerics record it with the other flags.
_DETERMINISM_FLAGS = {
    "cpu": ("--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_prefer_vector_width=512"),
    "gpu": ("--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0"),
}
BACKENDS = tuple(_DETERMINISM_FLAGS)
# JAX's platform for each backend. Not JAX's alias "gpu": it also asks for ROCm, and fails where that is missing.
_JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


@dataclasses.dataclass(frozen=True)
class Numerics:
    backend: str  # JAX platform: "cpu" or "gpu"
    device_kind: str  # e.g. "cpu" or "NVIDIA H100 80GB HBM3"
    threads: int  # CPU cores the process was pinned to
    flags_digest: bytes  # 4-byte hash of the XLA_FLAGS in effect
    devices: int = 1  # in a header: the devices the streams were split over; at run time: those available
    processes: int = 1  # JAX processes (hosts) those devices belong to

    def describe(self) -> str:
        spread = f", {self.devices} devices" if self.devices > 1 else ""
        spread += f" in {self.processes} processes" if self.processes > 1 else ""
        return f"{self.backend} ({self.device_kind}){spread}, {self.threads} CPU thread(s), XLA flags #{self.flags_digest.hex()}"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands among several (hosts, or processes on one host): the arguments of
    `jax.distributed.initialize`. Every process runs the same command on the same files."""

    coordinator: str  # host:port of process 0
    processes: int
    process_id: int

    def __post_init__(self) -> None:
        if self.processes < 1 or not 0 <= self.process_id < self.processes:
            raise NumericsError(f"process id {self.process_id} is not one of {self.processes} processes (0..{self.processes - 1})")


_active: Numerics | None = None  # the settings this process's JAX backend was created with


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def _flags_digest(flags: str) -> bytes:
    return hashlib.blake2b(" ".join(sorted(flags.split())).encode(), digest_size=4).digest()


def activate(
    backend: str = "cpu", threads: int | None = None, *, devices: int | None = None, cluster: Cluster | None = None, strict: bool = True
) -> Numerics:
    """Pin this process to `threads` cores and set determinism flags, then start JAX's backend.

    `devices` asks for at least that many devices in all: on CPU, that many host devices are
    created (jax_num_cpu_devices, shared out over the processes; they share the pinned cores); on
    GPU they must exist. With `cluster`, this process joins the others through
    `jax.distributed.initialize` (on CPU, with gloo collectives) and the devices are global.

    Must run before anything else in the process computes with JAX: XLA's client cannot be
    rebuilt inside a process. If it already runs, the settings in effect are returned instead,
    or, with `strict`, NumericsError is raised where they differ from the ones asked for.
    """
    global _active
    if backend not in BACKENDS:
        raise NumericsError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    cores = sorted(os.sched_getaffinity(0))
    threads = threads or len(cores)
    if threads > len(cores):
        raise NumericsError(f"{threads} CPU thread(s) asked for, but this process may use only {len(cores)} core(s)")
    import jax
    from jax._src import xla_bridge

    if _active is None and xla_bridge.backends_are_initialized():
        # Someone computed with JAX first: its pool was sized from the affinity it had then.
        _active = _observe(jax, len(cores))
    if _active is None:
        # Which cores does not change the floats, only how many: spread processes by pid so that
        # several prequential runs at once do not all share the first core.
        start = os.getpid() % len(cores)
        os.sched_setaffinity(0, (cores + cores)[start : start + threads])
        flags = os.environ.get("XLA_FLAGS", "").split()
        flags += [f for f in _DETERMINISM_FLAGS[backend] if f not in flags]
        os.environ["XLA_FLAGS"] = " ".join(flags)
        jax.config.update("jax_platforms", _JAX_PLATFORM[backend])
        processes = cluster.processes if cluster else 1
        if backend == "cpu" and devices:
            if devices % processes:
                raise NumericsError(f"{devices} CPU devices cannot be shared out evenly over {processes} processes")
            jax.config.update("jax_num_cpu_devices", devices // processes)
        if cluster:
            if backend == "cpu":
                jax.config.update("jax_cpu_collectives_implementation", "gloo")
            try:
                jax.distributed.initialize(cluster.coordinator, cluster.processes, cluster.process_id)
            except (RuntimeError, ValueError) as err:
                raise NumericsError(f"cannot join the processes at {cluster.coordinator}: {str(err).splitlines()[0]}") from None
        _active = _observe(jax, threads, backend)
    if _active.backend != backend or (strict and _active.threads != threads) or (cluster and cluster.processes != _active.processes):
        raise NumericsError(
            f"this process already runs JAX on {_active.describe()}; {backend} with {threads} thread(s)"
            + (f" in {cluster.processes} processes" if cluster else "")
            + " needs a fresh process (the command-line tool starts one for each run)"
        )
    if devices and _active.devices < devices:
        raise NumericsError(
            f"{devices} {backend} devices are needed, this process has {_active.devices}: "
            + (
                "run in a fresh process (the command creates CPU devices before JAX starts)"
                if backend == "cpu"
                else f"use a machine with {devices}"
            )
        )
    return _active


def _observe(jax, threads: int, backend: str | None = None) -> Numerics:
    try:
        device = jax.devices()[0]
    except (RuntimeError, AssertionError) as err:  # JAX asserts where no plugin provides the platform at all
        hint = " (a GPU needs an NVIDIA driver and JAX's CUDA plugin: pip install 'jax[cuda13]')" if backend == "gpu" else ""
        detail = str(err).splitlines()[0] if str(err) else "JAX found no such platform"
        raise NumericsError(f"no {backend or 'JAX'} backend is available here{hint}: {detail}") from None
    backend = "cpu" if device.platform == "cpu" else "gpu"
    kind = "cpu" if backend == "cpu" else device.device_kind
    flags = _flags_digest(os.environ.get("XLA_FLAGS", ""))
    return Numerics(backend, kind, threads, flags, jax.device_count(), jax.process_count())


def current() -> Numerics:
    """The settings this process computes with: the ones `activate` set or, if it was never
    called, the ones JAX runs with (JAX is started if it has not been; nothing is changed)."""
    global _active
    if _active is None:
        import jax

        _active = _observe(jax, usable_cores())
    return _active


def is_primary() -> bool:
    """Whether this process writes the results: the only one, or process 0 of several."""
    if _active is None or _active.processes == 1:
        return True
    import jax

    return jax.process_index() == 0


def mismatches(recorded: Numerics, here: Numerics) -> list[str]:
    """Human-readable differences between the encoder's settings and this process's."""
    out = []
    if recorded.backend != here.backend:
        out.append(f"backend: file {recorded.backend}, here {here.backend}")
    if recorded.device_kind != here.device_kind:
        out.append(f"device: file {recorded.device_kind!r}, here {here.device_kind!r}")
    if recorded.threads != here.threads:
        out.append(f"CPU threads: file {recorded.threads}, here {here.threads}")
    if recorded.devices != here.devices:
        out.append(f"devices: file {recorded.devices}, here {here.devices}")
    if recorded.processes != here.processes:
        out.append(f"processes: file {recorded.processes}, here {here.processes}")
    if recorded.flags_digest != here.flags_digest:
        out.append("XLA_FLAGS differ from the encoder's (unset any XLA_FLAGS of your own)")
    return out
