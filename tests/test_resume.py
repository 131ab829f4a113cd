"""Interrupted runs resume from their checkpoint and give the same bytes (compress) or totals (measure)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import SAMPLE, run_cli

import prequential
from prequential import api, checkpoint
from prequential.config import preset
from prequential.errors import PrequentialError
from prequential.learner import learner_for
from prequential.replay import BlockEnd, Carry, new_counts

BLOCKS = preset("tiny").replace(block_segments=4)  # a checkpoint can be taken every 4 segments
DATA = SAMPLE[:3000]


class Stop(Exception):
    pass


def stop_after(tokens: int):
    def progress(done: int, bits: float) -> None:
        if done >= tokens:
            raise Stop

    return progress


@pytest.mark.parametrize(
    ("stop_at", "config"), [(200, BLOCKS), (1500, BLOCKS), (2900, BLOCKS), (1500, BLOCKS.replace(n_layers=2, memory_cache=1))]
)
def test_compress_resumes_to_the_same_bytes(tmp_path, stop_at, config):
    whole = prequential.compress(DATA, config)
    ckpt = str(tmp_path / "run.ckpt")
    with pytest.raises(Stop):
        api.encode(DATA, io.BytesIO(), config, checkpoint=ckpt, checkpoint_interval=0, progress=stop_after(stop_at))
    assert os.path.exists(ckpt) and os.path.exists(ckpt + ".payload")
    out = io.BytesIO()
    api.encode(DATA, out, config, checkpoint=ckpt, checkpoint_interval=0)
    assert out.getvalue() == whole
    assert not os.path.exists(ckpt) and not os.path.exists(ckpt + ".payload")  # cleaned up on success


def test_checkpoint_of_another_input_is_refused(tmp_path):
    ckpt = str(tmp_path / "run.ckpt")
    with pytest.raises(Stop):
        api.encode(DATA, io.BytesIO(), BLOCKS, checkpoint=ckpt, checkpoint_interval=0, progress=stop_after(1000))
    with pytest.raises(PrequentialError, match=r"another run.*sha256"):
        api.encode(DATA[::-1], io.BytesIO(), BLOCKS, checkpoint=ckpt, checkpoint_interval=0)


def test_measure_resumes_to_the_same_totals(tmp_path):
    whole = prequential.measure(DATA, BLOCKS, baselines=False)
    ckpt = str(tmp_path / "m.ckpt")
    with pytest.raises(Stop):
        prequential.measure(DATA, BLOCKS, baselines=False, checkpoint=ckpt, checkpoint_interval=0, progress=stop_after(1600))
    resumed = prequential.measure(DATA, BLOCKS, baselines=False, checkpoint=ckpt, checkpoint_interval=0)
    assert np.array_equal(resumed.segment_bits, whole.segment_bits)
    assert not os.path.exists(ckpt)


def test_kill_9_then_resume_gives_the_same_file(tmp_path):
    """A real stop at an arbitrary moment: SIGKILL the command once its first checkpoint exists."""
    data = (SAMPLE * 3)[:30000]
    (tmp_path / "in").write_bytes(data)
    config = tmp_path / "c.toml"
    config.write_text('preset = "tiny"\nblock_segments = 8\n')
    args = ["compress", "-q", "-k", "--config", str(config), "--checkpoint", "ck", "--checkpoint-interval", "0"]
    command = [sys.executable, "-m", "prequential", *args, "in", "-o", "killed.pq"]
    proc = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ck").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed.pq").exists()  # nothing half-written at the destination
    assert "exists" in run_cli(*args, "in", "-o", "killed.pq", cwd=tmp_path).stderr.decode()  # resuming is explicit
    resumed = run_cli(*args, "--resume", "in", "-o", "killed.pq", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr.decode()
    fresh = run_cli("compress", "-q", "-k", "--config", str(config), "in", "-o", "fresh.pq", cwd=tmp_path)
    assert fresh.returncode == 0
    assert (tmp_path / "killed.pq").read_bytes() == (tmp_path / "fresh.pq").read_bytes()


def test_a_checkpoint_restores_every_count_array(tmp_path):
    """Every array of the count models comes back from a checkpoint as it was saved. The arrays
    are found from the object, not from checkpoint.py's list, so one added later and not saved
    fails here: a resumed run would otherwise go on from its initial value."""
    config = BLOCKS.replace(count_indirect=2, count_shape=1, count_order0=1, count_nest=1, count_select=1)
    # It ends inside a word, inside a bracket left open, on a repeat of records 4 and 5 that the match model follows.
    text = b"".join(b"%04d,(%02d) word\n" % (i, i * 7 % 13) for i in range(120)) + b"0003,(08 word\n0004,(02) word\n0005,(09) wo"
    # An image header, a font's start, UTF-16's byte-order mark and a message catalog's magic each set arrays that the others leave alone.
    heads = (b"P6\n4 3\n255\n" + bytes(range(36)), b"OTTO\x00\x0c\x00\x80\x00\x03\x00\x40", b"\xff\xfe", b"\xde\x12\x04\x95")
    streams = config.streams
    learner = learner_for(config)
    moved = set()
    for i, head in enumerate(heads):
        counts = new_counts(config, streams)
        for token in head + text:
            counts.update(counts.lookup(), np.ones(streams, bool), np.full(streams, token))
        fresh = new_counts(config, streams)
        arrays = [name for name, value in vars(counts).items() if isinstance(value, np.ndarray)]
        changed = [name for name in arrays if not np.array_equal(getattr(counts, name), getattr(fresh, name))]
        moved.update(changed)

        path = tmp_path / f"run{i}.ckpt"
        identity = {"run": "this one"}
        checkpoint.save(path, identity, {"done": 1}, BlockEnd(3, Carry(learner.init(), counts, None), 12.5, None))
        _, loaded = checkpoint.load(path, identity, learner)
        for name in changed:
            assert np.array_equal(getattr(loaded.carry.counts, name), getattr(counts, name)), name
        assert loaded.carry.counts.time == counts.time
    constant = {"_shifts", "_row_base", "_decays"}  # derived from the config
    assert set(arrays) - moved <= constant  # the inputs moved every array that a run moves
