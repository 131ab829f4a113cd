"""Configs: presets, files, validation with the field's name, and the compact header form."""

from __future__ import annotations

import dataclasses
import json

import pytest

from prequential import config as configs
from prequential.config import PRESETS, Config
from prequential.errors import ConfigError


def test_toml_and_json_files(tmp_path):
    (tmp_path / "c.toml").write_text('preset = "tiny"\nlearning_rate = 2e-3\nstreams = 2\n')
    (tmp_path / "c.json").write_text(json.dumps({"preset": "tiny", "learning_rate": 0.002, "streams": 2}))
    expected = PRESETS["tiny"].replace(learning_rate=2e-3, streams=2)
    assert configs.load(tmp_path / "c.toml") == expected == configs.load(tmp_path / "c.json")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"d_model": -4}, "d_model"),
        ({"streams": 0}, "streams"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"adam_b2": 1.5}, "adam_b2"),
        ({"segment": 2.5}, "segment"),
        ({"n_layers": True}, "n_layers"),
        ({"d_model": 100, "n_heads": 3}, "d_model"),
        ({"colour": "red"}, "colour"),
        ({"preset": "huge"}, "huge"),
    ],
)
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        configs.from_dict(values)


def test_unreadable_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        configs.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("learning_rate = = 1")
    with pytest.raises(ConfigError, match="does not parse"):
        configs.load(tmp_path / "bad.toml")


def test_compact_form_round_trips_and_is_short_for_presets():
    for name, preset in PRESETS.items():
        assert configs.to_compact(preset) == (name, "")
        assert configs.from_compact(name, "") == preset
    custom = PRESETS["default"].replace(learning_rate=5e-4, seed=7)
    name, overrides = configs.to_compact(custom)
    assert name == "default" and json.loads(overrides) == {"learning_rate": 5e-4, "seed": 7}
    assert configs.from_compact(name, overrides) == custom


def test_every_field_has_bounds():
    # numerics and block_init: one of a list; blocks and block_tokens: checked element by element.
    bounded = set(configs._INT_BOUNDS) | set(configs._FLOAT_BOUNDS) | {"numerics", "block_init", "blocks", "block_tokens"}
    assert bounded == {f.name for f in dataclasses.fields(Config)}
