"""identlib.config: validation, replace, the cache digest, sweep axes and chapter parameters."""
from __future__ import annotations

import dataclasses
import re

import pytest

from identlib.config import ConfigError, RunConfig, check_sweep, validate_parameters

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]

# A valid value different from the default, for every field.
CHANGED = {
    "model": "cnn", "depth": 3, "width": 100, "channels": 8, "kernel_size": 3,
    "activation": "relu", "bias": True, "padding": "circular", "init": "he", "init_scale": 0.5,
    "optimizer": "adam", "lr": 0.02, "momentum": 0.9, "steps": 10, "loss_reduction": "sum",
    "tol": 1e-3, "train_index": 0, "n_train": 2, "batch_size": 4, "dtype": "float64", "seed": 1,
    "precision": "bf16",
}

INVALID = [
    ("depth", 0), ("depth", 1.5), ("depth", True), ("depth", "2"), ("width", 0), ("channels", -1),
    ("kernel_size", 4), ("kernel_size", 0), ("steps", 0), ("train_index", -1), ("n_train", 0),
    ("batch_size", -1), ("seed", -1), ("seed", False),
    ("lr", -1), ("lr", 0), ("lr", True), ("lr", "0.1"), ("lr", float("nan")),
    ("init_scale", 0.0), ("momentum", 1.0), ("momentum", -0.1), ("tol", -1e-3),
    ("model", "rnn"), ("activation", "tanh"), ("padding", "same"), ("init", "kaiming"),
    ("optimizer", "rmsprop"), ("loss_reduction", "max"), ("dtype", "float16"), ("bias", 1),
    ("precision", "float16"),
]


def test_defaults_are_valid():
    cfg = RunConfig()
    assert (cfg.model, cfg.depth, cfg.width, cfg.train_index, cfg.n_train) == ("fcn", 1, 784, 15, 1)


def test_changed_values_cover_every_field():
    assert set(CHANGED) == set(FIELDS)


@pytest.mark.parametrize("field, value", list(CHANGED.items()))
def test_every_changed_value_is_valid(field, value):
    assert getattr(RunConfig(**{field: value}), field) == value


@pytest.mark.parametrize("field, value", INVALID)
def test_invalid_value_raises_one_line_error_naming_field(field, value):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{field: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert re.match(rf"{field}\b", msg), msg


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_train_index_only_for_single_image_runs():
    with pytest.raises(ConfigError, match="train_index"):
        RunConfig(n_train=3, train_index=0)
    assert RunConfig(n_train=3).n_train == 3


def test_replace_changes_one_field_and_validates():
    cfg = RunConfig(model="cnn", depth=2)
    new = cfg.replace(depth=5)
    assert new.depth == 5 and new.model == "cnn" and cfg.depth == 2
    with pytest.raises(ConfigError, match="depth"):
        cfg.replace(depth=0)


def test_replace_unknown_field_raises():
    with pytest.raises(ConfigError, match="unknown config field.*deepth"):
        RunConfig().replace(deepth=2)


def test_config_is_frozen_and_hashable():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.depth = 3
    assert len({cfg, RunConfig(), cfg.replace(seed=1)}) == 2


def test_to_dict_has_every_field():
    assert RunConfig(depth=4).to_dict() == {f: getattr(RunConfig(depth=4), f) for f in FIELDS}


def test_digest_is_stable_hex():
    digest = RunConfig().digest()
    assert digest == RunConfig().digest() == RunConfig().digest()
    assert re.fullmatch(r"[0-9a-f]{20}", digest)


def test_digest_changes_with_every_field():
    base = RunConfig()
    digests = {base.digest()} | {base.replace(**{f: v}).digest() for f, v in CHANGED.items()}
    assert len(digests) == len(CHANGED) + 1


def test_equal_configs_have_equal_digests():
    assert RunConfig(lr=1) == RunConfig(lr=1.0)
    assert RunConfig(lr=1).digest() == RunConfig(lr=1.0).digest()


def test_label():
    assert RunConfig(model="fcn", activation="relu", depth=6, width=784).label() == "fcn-relu-d6-w784"
    assert RunConfig(model="cnn", depth=3, channels=128, kernel_size=5).label() == "cnn-linear-d3-c128-k5"


# --- sweep axes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("[1, 2, 6]", [1, 2, 6]), ("1,2,6", [1, 2, 6]), (" 1, 2 ", [1, 2]), (3, [3]), ((1, 2), [1, 2]),
    ([4], [4]),
])
def test_check_sweep_parses(value, expected):
    assert check_sweep("depths", value) == expected


def test_check_sweep_rejects_bad_element_naming_axis():
    with pytest.raises(ConfigError, match=r"^depths: depth must be an integer >= 1 \(got 0\)$"):
        check_sweep("depths", [1, 0])


@pytest.mark.parametrize("value", [[], "[]", "[1, 2", True, {"a": 1}])
def test_check_sweep_rejects_non_lists(value):
    with pytest.raises(ConfigError, match="depths"):
        check_sweep("depths", value)


def test_check_sweep_uses_field_rules_and_named_rules():
    assert check_sweep("activations", "linear, relu") == ["linear", "relu"]
    assert check_sweep("lrs", [0.1, 0.01]) == [0.1, 0.01]
    assert check_sweep("rhos", "[0, 0.5, 1]") == [0, 0.5, 1]
    with pytest.raises(ConfigError, match="rhos"):
        check_sweep("rhos", [0.5, 1.5])
    with pytest.raises(ConfigError, match="kernel_sizes: kernel_size must be odd"):
        check_sweep("kernel_sizes", [3, 4])


def test_check_sweep_unknown_axis_raises():
    with pytest.raises(ConfigError, match="no validation rule.*'colours'"):
        check_sweep("colours", [1])


# --- chapter parameters --------------------------------------------------------------------------

def test_validate_parameters_known_names():
    params = {"lr": 1, "model": "cnn", "depths": "1,2", "seeds": 2, "rhos": [0, 0.5],
              "n_probes": 4, "n_test": 10}
    out = validate_parameters(params)
    assert out == {"lr": 1.0, "model": "cnn", "depths": [1, 2], "seeds": [2], "rhos": [0, 0.5],
                   "n_probes": 4, "n_test": 10}
    assert isinstance(out["lr"], float)


@pytest.mark.parametrize("params, name", [
    ({"lr": -1}, "lr"), ({"depths": [1, 0]}, "depths"), ({"n_probes": 0}, "n_probes"),
    ({"rhos": [2.0]}, "rhos"), ({"seeds": "0, -1"}, "seeds"), ({"activation": "tanh"}, "activation"),
])
def test_validate_parameters_rejects_bad_values(params, name):
    with pytest.raises(ConfigError, match=name):
        validate_parameters(params)


def test_validate_parameters_unknown_name_raises():
    with pytest.raises(ConfigError, match="no validation rule for parameter 'learning_rate'"):
        validate_parameters({"learning_rate": 0.1})


def test_scalar_parameters_are_not_sweeps():
    with pytest.raises(ConfigError, match="n_probes must be an integer >= 1"):
        validate_parameters({"n_probes": [1, 2]})
    assert validate_parameters({"rhos": 0.5}) == {"rhos": [0.5]}


def test_section_parameters_follow_their_field_rules():
    assert validate_parameters({"lr_60k": 1, "optimizer_60k": "adam"}) == {"lr_60k": 1.0, "optimizer_60k": "adam"}
    with pytest.raises(ConfigError, match="optimizer_60k: optimizer must be one of"):
        validate_parameters({"optimizer_60k": "rmsprop"})
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        validate_parameters({"epochs": 0})


def test_section_parameters_are_validated_as_their_field_or_sweep():
    out = validate_parameters({"map_lrs": [0.01, 1], "study_depths": "5, 20", "map_channels": 8,
                               "channel_counts": [4, 8], "map_init_scales": [0.5]})
    assert out == {"map_lrs": [0.01, 1.0], "study_depths": [5, 20], "map_channels": 8,
                   "channel_counts": [4, 8], "map_init_scales": [0.5]}
    with pytest.raises(ConfigError, match="map_lrs: lrs: lr"):
        validate_parameters({"map_lrs": [0.01, -1]})
    with pytest.raises(ConfigError, match="map_optimizers"):
        validate_parameters({"map_optimizers": ["gd", "rmsprop"]})
    with pytest.raises(ConfigError, match="channel_counts"):
        validate_parameters({"channel_counts": [4, 0]})
    with pytest.raises(ConfigError, match="no validation rule"):
        validate_parameters({"map_colour": 3})


def test_wide_channels_may_be_zero_to_skip():
    assert validate_parameters({"wide_channels": 0}) == {"wide_channels": 0}
    with pytest.raises(ConfigError, match="wide_channels must be an integer >= 0"):
        validate_parameters({"wide_channels": -1})
