"""No code is ever run from data: reading a compressed file, or resuming from a checkpoint, neither
evaluates nor unpickles nor imports anything (ruff's S rules check the source for the same)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SAMPLE

# Run in a fresh process, since an audit hook cannot be removed. Every read path runs once to
# warm up (imports, compilation), then again under the hook. "compile" is not watched: numpy
# reads .npy headers with ast.literal_eval, which compiles to a syntax tree only; running any
# code object shows as "exec".
READS = """
import json, sys
from pathlib import Path

import numpy as np
import prequential
from prequential import cli
from prequential.config import preset

work = Path(sys.argv[1])
data = work.joinpath("data").read_bytes()
config = preset("tiny").replace(block_segments=4)  # a checkpoint every 4 segments


class Stop(Exception):
    pass


def stop(done, bits):
    if done >= len(data) // 2:
        raise Stop


def read_everything(round):
    pq = work / f"{round}.pq"
    pq.write_bytes(prequential.compress(data, config))
    assert prequential.decompress(pq.read_bytes()) == data
    assert cli.main(["-t", "-q", str(pq)]) == 0 and cli.main(["-l", str(pq)]) == 0
    checkpoint = str(work / f"{round}.ckpt")
    try:
        prequential.measure(data, config, baselines=False, checkpoint=checkpoint, checkpoint_interval=0, progress=stop)
    except Stop:
        pass
    prequential.measure(data, config, baselines=False, checkpoint=checkpoint, checkpoint_interval=0)  # resumes


WATCHED = {"exec", "import", "marshal.loads", "marshal.load", "pickle.find_class"}
seen = {"reads": [], "self-check": []}
phase = "warm-up"
read_everything(phase)
sys.addaudithook(lambda event, args: seen[phase].append(event) if phase in seen and event in WATCHED else None)
phase = "reads"
read_everything(phase)
phase = "self-check"  # the hook does see code run from data
eval("1 + 1")
import pickle
pickle.loads(pickle.dumps(np.zeros(1)))
phase = "done"
work.joinpath("events.json").write_text(json.dumps(seen))
"""


def test_reading_files_and_checkpoints_runs_no_code_from_them(tmp_path):
    (tmp_path / "data").write_bytes(SAMPLE[:3000])
    done = subprocess.run([sys.executable, "-c", READS, str(tmp_path)], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    seen = json.loads((tmp_path / "events.json").read_text())
    assert seen["reads"] == []
    assert {"exec", "pickle.find_class"} <= set(seen["self-check"])
