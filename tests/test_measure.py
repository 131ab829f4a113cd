"""Measuring description length: agreement with compress, the prequential order, user modules,
the conditional mode, the JSON and the plots."""

from __future__ import annotations

import json

import numpy as np
import optax
import pytest
from conftest import SAMPLE, TINY, one_line_error, run_cli
from user_models import Bigram, Peeking, WrongShape

import prequential
from prequential import api
from prequential.config import NO_COUNTS
from prequential.errors import ConfigError, PrequentialError, VersionError
from prequential.learner import learner_for

PLAIN = TINY.replace(**NO_COUNTS)  # what a user's module gets
TEXT = SAMPLE[:4000]
OTHER_TEXT = SAMPLE[4000:8000]


def test_measure_agrees_with_compress_within_a_tenth_of_a_percent():
    measured = prequential.measure(TEXT, TINY, baselines=False)
    report = api.encode(TEXT, __import__("io").BytesIO(), TINY)
    assert not report.stored
    assert abs(measured.total_bits - report.total_bits) < 0.001 * report.total_bits
    assert abs(measured.data_bits - report.ideal_bits) < 0.001 * report.ideal_bits


def test_a_model_that_peeks_pays_full_price():
    optimizer = optax.sgd(0.0)
    result = prequential.measure(TEXT, PLAIN, module=Peeking(), optimizer=optimizer, baselines=False)
    assert result.scoring == "step-wise"
    assert result.data_bits / result.n_tokens > 7.9  # it sees only the start symbol where it peeks
    blob = prequential.compress(TEXT, PLAIN, module=Peeking(), optimizer=optimizer)
    assert len(blob) >= len(TEXT)  # stored: coding could not beat 8 bits a byte
    assert prequential.decompress(blob, module=Peeking(), optimizer=optimizer) == TEXT


def test_user_module_and_optimizer_in_about_ten_lines():
    tokens = np.frombuffer(TEXT, np.uint8) % 50  # integers with a vocabulary of 50
    config = PLAIN.replace(vocab_size=50)
    result = prequential.measure(tokens, config, module=Bigram(vocab=50), optimizer=optax.adam(1e-2), baselines=False)
    assert result.scoring == "teacher-forced" and result.n_tokens == len(tokens)
    assert 0 < result.data_bits < len(tokens) * np.log2(50)  # it learns something
    assert len(result.segment_bits) == len(result.segment_tokens) and result.segment_tokens.sum() == len(tokens)
    assert result.code_bytes > 0


def test_user_module_round_trips_and_is_required_to_decode():
    optimizer = optax.adam(1e-2)
    blob = prequential.compress(TEXT, PLAIN, module=Bigram(), optimizer=optimizer)
    assert prequential.decompress(blob, module=Bigram(), optimizer=optimizer) == TEXT
    with pytest.raises(VersionError, match="user's model"):
        prequential.decompress(blob)
    with pytest.raises(VersionError, match="module's source differs"):
        prequential.decompress(blob, module=Peeking(), optimizer=optimizer)


def test_module_with_wrong_output_shape_is_refused():
    with pytest.raises(ConfigError, match="logits of shape"):
        prequential.measure(TEXT, PLAIN, module=WrongShape(), optimizer=optax.adam(1e-3))


def test_our_count_models_do_not_go_with_a_users_module():
    with pytest.raises(ConfigError, match="count_orders"):
        prequential.measure(TEXT, TINY, module=Bigram(), optimizer=optax.adam(1e-3))


def test_a_users_module_runs_without_cached_memory_states():
    config = PLAIN.replace(n_layers=2, memory_cache=1)  # what this package's transformer would cache
    with pytest.raises(ConfigError, match="memory_cache"):
        learner_for(config, Bigram(), optax.adam(1e-3))
    assert prequential.measure(TEXT, config, module=Bigram(), optimizer=optax.adam(1e-3), baselines=False).data_bits > 0


def test_tokens_must_fit_the_vocabulary():
    with pytest.raises(ConfigError, match="vocab_size"):
        prequential.measure(np.array([1, 2, 300]), PLAIN, module=Bigram(), optimizer=optax.adam(1e-3))


def test_conditional_description_length():
    related = prequential.measure(TEXT, TINY, given=TEXT, baselines=False)  # X = Y: the most X can help
    g = related.given
    assert g["conditional_bits"] == related.data_bits
    assert g["saving_bits"] == pytest.approx(g["alone_bits"] - g["conditional_bits"])
    assert g["saving_percent"] == pytest.approx(100 * g["saving_bits"] / g["alone_bits"])
    assert g["saving_percent"] > 30
    noise = np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    unrelated = prequential.measure(TEXT, TINY, given=noise, baselines=False)
    assert unrelated.given["saving_percent"] < g["saving_percent"] / 3


def test_compress_given_needs_the_same_given_data():
    blob = prequential.compress(OTHER_TEXT, TINY, given=TEXT)
    assert len(blob) < len(prequential.compress(OTHER_TEXT, TINY))
    assert prequential.decompress(blob, given=TEXT) == OTHER_TEXT
    with pytest.raises(PrequentialError, match="pass it with --given"):
        prequential.decompress(blob)
    with pytest.raises(PrequentialError, match="given data differs"):
        prequential.decompress(blob, given=TEXT[:-1])


def test_baselines():
    result = prequential.measure(TEXT, TINY)
    b = result.baselines
    assert b["uniform"] == 8 * len(TEXT)
    assert set(b) == {"uniform", "adaptive order-0", "adaptive order-2", "gzip -9", "bzip2 -9", "xz -9e", "zstd -19"}
    # The adaptive order-0 code of a constant string is tiny; of text it is near the entropy of letters.
    assert 4 * len(TEXT) < b["adaptive order-0"] < 5.5 * len(TEXT)


def test_cli_measure_json_and_plot(tmp_path):
    (tmp_path / "y.txt").write_bytes(OTHER_TEXT)
    (tmp_path / "x.txt").write_bytes(TEXT)
    done = run_cli("measure", "-q", "--preset", "tiny", "y.txt", "--given", "x.txt", "--json", "m.json", "--plot", "m.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert b"L(Y|X)" in done.stdout and b"gzip -9" in done.stdout
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["schema"] == "prequential.measure/1"
    assert {"data_bits", "code_bytes", "container_bytes", "total_bits", "curve", "baselines_bits", "given", "config"} <= set(result)
    assert result["curve"]["tokens"][-1] == len(OTHER_TEXT)
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_names_crossings_and_draws(tmp_path):
    (tmp_path / "y.txt").write_bytes(TEXT)
    # native numerics: this checks the command's plumbing, and they compile faster
    (tmp_path / "big.toml").write_text('preset = "tiny"\nnumerics = "native"\nd_model = 64\nd_ff = 128\n')
    (tmp_path / "small.toml").write_text('preset = "tiny"\nnumerics = "native"\n')
    done = run_cli("compare", "-q", "y.txt", "--configs", "small.toml,big.toml", "--json", "c.json", "--plot", "c.svg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads((tmp_path / "c.json").read_text())
    assert set(result["results"]) == {"small", "big"} and "small vs big" in result["crossings"]
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["measure", "empty.txt"], "empty"),
        (["measure", "missing.txt"], "cannot read"),
        (["measure", "--preset", "huge", "y.txt"], "unknown preset 'huge'"),
        (["measure", "--config", "neg.toml", "y.txt"], "d_model"),
        (["compare", "y.txt", "--estimators", "nope"], "unknown estimator 'nope'"),
    ],
)
def test_cli_measure_bad_input(tmp_path, args, needle):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "y.txt").write_bytes(b"abc")
    (tmp_path / "neg.toml").write_text("d_model = -3\n")
    assert needle in one_line_error(run_cli(*args, cwd=tmp_path))
