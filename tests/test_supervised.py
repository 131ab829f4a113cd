"""L(Y | X) for a user's Flax classifier and optax optimizer: measured, compressed, decoded."""

from __future__ import annotations

import io
import zlib

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from conftest import one_line_error, run_cli

from prequential import api, container, supervised
from prequential.config import VOITA_TITOV_BLOCKS
from prequential.errors import ConfigError, FormatError, PrequentialError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4, 4)).astype(np.float32)
Y = (X.reshape(200, -1) @ RNG.normal(size=(16, 3))).argmax(1)  # learnable: a linear rule
MODEL = supervised.MLP(classes=3, hidden=(16,))


def optimizer():
    return optax.adam(1e-2)


OPT = optimizer()


class WrongShape(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(5)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    "estimator",
    [
        {},
        {"blocks": VOITA_TITOV_BLOCKS, "epochs": 2},
        {"blocks": (0.2, 0.6), "block_init": "continue"},
        {"replay_buffer": 3, "replay_steps": 1, "ema_decay": 0.9, "calibrate": 1},
    ],
    ids=["online", "blocks", "blocks-continue", "replay-ema-calibrated"],
)
def test_labels_round_trip_and_measure_equals_the_code(estimator):
    config = supervised.labels_config(classes=3, batch=16, **estimator)
    result = supervised.measure(X, Y, MODEL, OPT, config)
    blob = supervised.compress(X, Y, MODEL, OPT, config)
    assert np.array_equal(supervised.decompress(blob, X, MODEL, OPT), Y)
    _, report = api.read_info(io.BytesIO(blob))
    assert report.ideal_bits == pytest.approx(result.data_bits, rel=1e-12)
    assert result.data_bits < result.uniform_bits  # it learned something of the rule


def test_the_block_code_starts_uniform_and_learns():
    config = supervised.labels_config(classes=3, batch=16, blocks=(0.1, 0.5), epochs=4)
    result = supervised.measure(X, Y, MODEL, OPT, config)
    assert list(result.pass_examples) == [20, 80, 100]
    assert result.pass_bits[0] == 20 * np.log2(3)
    assert result.pass_bits[2] / 100 < result.pass_bits[1] / 80  # more data before it, fewer bits a label


def test_decoding_needs_the_same_inputs():
    config = supervised.labels_config(classes=3, batch=16)
    blob = supervised.compress(X, Y, MODEL, OPT, config)
    with pytest.raises(PrequentialError, match="the inputs X differ"):
        supervised.decompress(blob, X + 1, MODEL, OPT)


def test_a_token_file_is_not_a_labels_file():
    stored = container.encode_header(container.Header(container.FLAG_STORED, 3, data_crc32=zlib.crc32(b"abc"))) + b"abc"
    with pytest.raises(FormatError, match="not a labels file"):
        supervised.decompress(stored, X, MODEL, OPT)


@pytest.mark.parametrize(
    ("x", "y", "model", "message"),
    [
        (X, Y[:50], MODEL, "X and Y must hold as many examples: X has 200, Y 50"),
        (X, np.where(Y == 2, 7, Y), MODEL, r"labels must be in \[0, 3\)"),
        (X, Y.astype(np.float32), MODEL, "labels Y must be a 1-D integer array"),
        (X, Y, WrongShape(), r"the classifier must return logits of shape \(batch, classes\) = \(16, 3\), it returned \(16, 5\)"),
    ],
)
def test_bad_input_is_one_clear_error(x, y, model, message):
    with pytest.raises(ConfigError, match=message):
        supervised.measure(x, y, model, OPT, supervised.labels_config(classes=3, batch=16))


def test_labels_on_the_command_line(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    done = run_cli("labels", "measure", "x.npy", "y.npy", "--hidden", "16", "--blocks", "0.2,0.6", "--json", "m.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert "block 3" in done.stdout.decode()
    done = run_cli("labels", "compress", "x.npy", "y.npy", "--hidden", "16", "-o", "y.pq", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    done = run_cli("labels", "decompress", "y.pq", "x.npy", "--hidden", "16", "-o", "back.npy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert np.array_equal(np.load(tmp_path / "back.npy"), Y)
    np.save(tmp_path / "short.npy", Y[:10])
    assert "X and Y must hold as many examples" in one_line_error(run_cli("labels", "measure", "x.npy", "short.npy", cwd=tmp_path))
    assert "'epochs'" in one_line_error(run_cli("labels", "measure", "x.npy", "y.npy", "--epochs", "0", cwd=tmp_path))
    assert "labels decompress" in one_line_error(run_cli("decompress", "y.pq", "-o", "z", cwd=tmp_path))
