"""identlib.config: validation, replace, the cache digest, sweep axes and chapter parameters."""
from __future__ import annotations

import dataclasses
import re

import pytest

from identlib.config import ConfigError, Kind, RunConfig

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


# --- parameter kinds -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("[1, 2, 6]", [1, 2, 6]), ("1,2,6", [1, 2, 6]), (" 1, 2 ", [1, 2]), (3, [3]), ((1, 2), [1, 2]),
    ([4], [4]),
])
def test_a_list_kind_parses(value, expected):
    assert Kind("list of depth")("depths", value) == expected


def test_a_list_kind_names_the_parameter_and_the_rule():
    with pytest.raises(ConfigError, match=r"^depths: depth must be an integer >= 1 \(got 0\)$"):
        Kind("list of depth")("depths", [1, 0])
    with pytest.raises(ConfigError, match=r"^map_lrs: lr must be > 0 \(got -1.0\)$"):
        Kind("list of lr")("map_lrs", [0.01, -1])
    with pytest.raises(ConfigError, match="kernel_sizes: kernel_size must be odd"):
        Kind("list of kernel_size")("kernel_sizes", [3, 4])


@pytest.mark.parametrize("value", [[], "[]", "[1, 2", True, {"a": 1}])
def test_a_list_kind_rejects_non_lists(value):
    with pytest.raises(ConfigError, match="depths"):
        Kind("list of depth")("depths", value)


def test_kinds_of_every_form():
    assert Kind("list of activation")("activations", "linear, relu") == ["linear", "relu"]
    assert Kind("list of lr")("lrs", [0.1, 1]) == [0.1, 1.0]
    assert Kind("list of number in 0..1")("rhos", "[0, 0.5, 1]") == [0, 0.5, 1]
    with pytest.raises(ConfigError, match=r"rhos: rhos must be a number in \[0, 1\]"):
        Kind("list of number in 0..1")("rhos", [0.5, 1.5])
    assert Kind("lr")("lr_60k", 1) == 1.0
    with pytest.raises(ConfigError, match="optimizer_60k: optimizer must be one of"):
        Kind("optimizer")("optimizer_60k", "rmsprop")
    assert Kind("int >= 0")("wide_channels", 0) == 0
    with pytest.raises(ConfigError, match="wide_channels must be an integer >= 0"):
        Kind("int >= 0")("wide_channels", -1)
    assert Kind("one of pc, mean")("summary", "mean") == "mean"
    with pytest.raises(ConfigError, match="summary must be one of pc, mean"):
        Kind("one of pc, mean")("summary", "max")
    assert Kind("list of int >= 0")("snapshots", "[0, 10]") == [0, 10]


def test_a_scalar_kind_refuses_a_list():
    with pytest.raises(ConfigError, match="n_probes must be a single value"):
        Kind("int >= 1")("n_probes", [1, 2])


def test_an_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match=r"unknown parameter kind \[list of colour\]"):
        Kind("list of colour")


def test_numpy_and_torch_scalars_are_taken_as_python_numbers():
    """Values read off a table (numpy integers and floats) or a tensor: the same config, and the
    same digest, as the Python numbers."""
    import numpy as np
    import torch

    config = RunConfig(depth=np.int64(3), width=torch.tensor(16), lr=np.float32(0.5))
    assert type(config.depth) is int and type(config.width) is int and type(config.lr) is float
    assert config == RunConfig(depth=3, width=16, lr=0.5)
    assert config.digest() == RunConfig(depth=3, width=16, lr=0.5).digest()
    assert RunConfig().replace(depth=np.int64(10)).depth == 10
    with pytest.raises(ConfigError, match="depth"):
        RunConfig(depth=np.float64(2.5))


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "float32")])
def test_precision_auto_becomes_the_hardware_s_precision_when_the_config_is_made(monkeypatch, native,
                                                                                 expected):
    """``precision="auto"`` is decided once, when the config is made: bf16 where the CPU has
    bfloat16 instructions, float32 elsewhere; the config (and so the network's cache key) holds the
    precision it trains in, never "auto"."""
    import torch

    from identlib import runtime

    monkeypatch.setenv("IDENTLIB_DEVICE", "cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    config = RunConfig(model="cnn", precision="auto")
    assert config.precision == expected == runtime.native_precision()
    assert config == RunConfig(model="cnn", precision=expected)
    assert config.digest() == RunConfig(model="cnn", precision=expected).digest()
    assert RunConfig(precision="auto", dtype="float64").precision == "float32"   # bf16 needs float32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")          # oneDNN limited below bfloat16
    assert RunConfig(precision="auto").precision == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert RunConfig(precision="auto").precision == expected
