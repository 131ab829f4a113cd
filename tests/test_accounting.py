"""The description-length arithmetic: the bits the coder wrote are the losses the model reported."""

from __future__ import annotations

import io
import math

import numpy as np
from conftest import SAMPLE

from prequential import accounting, api, container
from prequential.coder import Encoder
from prequential.config import preset
from prequential.learner import learner_for
from prequential.replay import Layout, replay, train_pass
from prequential.store import ArrayStore

ONE_BLOCK = preset("tiny").replace(block_segments=1 << 20)  # a single coder flush


def test_coded_bits_equal_reported_losses():
    report = api.encode(SAMPLE, io.BytesIO(), ONE_BLOCK)
    assert not report.stored
    # What the range coder wrote is the sum of the model's per-token losses, to within 0.1 %.
    assert abs(8 * report.coded_bytes - report.ideal_bits) < 0.001 * report.ideal_bits
    # The framing is one block: word count (varint), a 4-byte digest per sync point, ideal bits, CRC.
    layout = Layout(len(SAMPLE), ONE_BLOCK.streams, ONE_BLOCK.segment)
    n_sync = -(-layout.segments // ONE_BLOCK.sync_segments)
    assert report.payload_bytes - report.coded_bytes == container.block_framing_bytes(report.coded_bytes // 4, n_sync, last=True)
    assert container.block_framing_bytes(1000, 2, last=False) == 2 + 8 + 4  # varint, two digests, CRC-32


class RecordingEncoder(Encoder):
    """Keeps what the coder was given, to recompute the losses independently."""

    def code(self, probs, known):
        symbols = super().code(probs, known)
        weights = probs.astype(np.float64)  # exact numerics hand over integer weights, not probabilities
        self.seen.append(-np.log2(weights[np.arange(len(symbols)), symbols] / weights.sum(-1)))
        return symbols


def _recorded_pass(config):
    layout = Layout(len(SAMPLE), config.streams, config.segment)
    tokens = np.frombuffer(SAMPLE, np.uint8).astype(np.int32)
    coder = RecordingEncoder(io.BytesIO())
    coder.seen = []
    result = replay(learner_for(config), layout, ArrayStore(tokens), coder, record_segments=True)
    per_token = np.concatenate(coder.seen)
    assert len(per_token) == len(SAMPLE)
    assert math.isclose(result.segment_bits.sum(), result.ideal_bits, rel_tol=1e-12)
    return per_token, result, train_pass(learner_for(config), layout, ArrayStore(tokens))[0]


def test_ideal_bits_are_the_sum_of_per_token_losses():
    per_token, result, forced = _recorded_pass(ONE_BLOCK)
    # Exact numerics: the model's own -log2 p (fixed point, 16 fractional bits) of the weights coded,
    # so within 2**-14 bits a token of float64 arithmetic on them; the training pass is the same sum.
    assert abs(per_token.sum() - result.ideal_bits) < 2**-14 * len(per_token)
    assert forced.sum() == result.ideal_bits


def test_ideal_bits_are_the_sum_of_per_token_losses_in_native_numerics():
    per_token, result, forced = _recorded_pass(ONE_BLOCK.replace(numerics="native"))
    assert math.isclose(per_token.sum(), result.ideal_bits, rel_tol=1e-12)
    # The teacher-forced training pass scores the same model on the same data: same total up to float rounding.
    assert abs(forced.sum() - result.ideal_bits) < 1e-4 * result.ideal_bits


def test_report_fields_add_up():
    r = accounting.Report(
        original_bytes=1000,
        header_bytes=90,
        payload_bytes=310,
        coded_bytes=300,
        ideal_bits=2390.0,
        model_code_bytes=8000,
        stored=False,
        seconds=2.0,
        config={},
    )
    d = r.to_dict()
    assert d["file_bytes"] == 400 and d["framing_bytes"] == 10
    assert d["overhead_bits"] == 10.0 and abs(d["overhead_percent"] - 100 * 10 / 2390) < 1e-12
    assert d["total_bits"] == 8 * 8400 and d["file_bits_per_byte"] == 3.2
    assert "coder overhead" in r.format()


def test_model_code_length_counts_the_replay_sources():
    n = accounting.model_code_bytes()
    assert 1000 < n < len(accounting.replay_source())


def test_the_replayed_code_covers_every_module_the_learner_runs():
    """L(code) and the code digest must cover whatever decides the probabilities: every module
    the replay engine and the x86 filter (which decides the decoded bytes too) import, except the
    ones that only frame, name errors, pin processes or keep traced programs on disk (whose key
    holds the replayed code: programs.py), and what only those import."""
    import ast
    from pathlib import Path

    folder = Path(accounting.__file__).parent
    outside = {"errors", "container", "numerics", "programs"}
    seen, todo = set(), ["replay", "transform"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in outside:
            continue
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prequential"):
                todo += [node.module.split(".")[1]] if node.module != "prequential" else [a.name for a in node.names]
    assert seen - outside == set(accounting.REPLAY_MODULES)
