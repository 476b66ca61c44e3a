"""One frozen config per run. Its fields are the chapters' parameter names; a run's cache key is a
digest of its content.

>>> cfg = RunConfig(model="fcn", depth=2)
>>> cfg.replace(depth=6).depth
6
>>> RunConfig(depth=0)
Traceback (most recent call last):
...
identlib.config.ConfigError: depth must be an integer >= 1 (got 0)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConfigError", "RunConfig", "check_sweep", "validate_parameters", "source_digest"]


class ConfigError(ValueError):
    """An invalid parameter value. The message is one line naming the parameter and the rule."""


CHOICES = {
    "model": ("fcn", "cnn"),
    "activation": ("linear", "relu"),
    "padding": ("zeros", "circular", "reflect", "replicate"),
    "init": ("xavier_uniform", "xavier_normal", "he", "default", "orthogonal"),
    "optimizer": ("gd", "sgd", "adam"),
    "loss_reduction": ("mean", "sum"),
    "dtype": ("float32", "float64"),
    "precision": ("float32", "bf16"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one trained network. Defaults are our choices (see the intro)."""

    model: str = "fcn"              # "fcn" (fully connected) or "cnn"
    depth: int = 1                  # number of weight layers
    width: int = 784                # FCN hidden width (paper: 784)
    channels: int = 128             # CNN hidden channels (paper: 128)
    kernel_size: int = 5            # CNN filter size (paper: 5)
    activation: str = "linear"      # "linear" or "relu" between layers
    bias: bool = False              # biases in every layer
    padding: str = "zeros"          # CNN padding mode ("same" size)
    init: str = "xavier_uniform"    # weight initialization scheme
    init_scale: float = 1.0         # every initial weight multiplied by this
    optimizer: str = "gd"           # "gd" (full batch), "sgd" (minibatch) or "adam"
    lr: float = 0.01                # learning rate
    momentum: float = 0.0           # for "gd" and "sgd"
    steps: int = 1000               # optimizer steps (at most; see tol)
    loss_reduction: str = "mean"    # squared error averaged ("mean") or summed ("sum")
    tol: float = 0.0                # stop once the training loss is below this (0: never)
    train_index: int = 15           # MNIST training index of x̂ (15: the first "7")
    n_train: int = 1                # training images: 1 (the paper's setting) or the first n
    batch_size: int = 0             # minibatch size for "sgd" (0: full batch)
    dtype: str = "float32"          # float64 for the theory checks
    seed: int = 0                   # seeds initialization and minibatch order
    precision: str = "float32"      # "bf16": products in bfloat16, about 2x faster (book/runtime.md)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check(f.name, value, f.type)
            if f.type == "float" and not isinstance(value, float):
                object.__setattr__(self, f.name, float(value))   # lr=1 and lr=1.0: one digest
        if self.n_train > 1 and self.train_index != 15:
            raise ConfigError("train_index applies to single-image runs (n_train == 1)")
        if self.precision == "bf16" and self.dtype != "float32":
            raise ConfigError("precision bf16 needs dtype float32 (its weights and loss stay float32)")

    def replace(self, **changes) -> "RunConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Content digest of the trained network: the sorted JSON of the fields, the package and
        torch versions and the source of the modules that train it (:data:`DIGEST_MODULES`), so
        a change to training code never reuses stale networks and a change elsewhere keeps them."""
        import torch

        from . import __version__

        payload = json.dumps(
            {"config": self.to_dict(), "identlib": __version__, "torch": torch.__version__,
             "source": source_digest("network")},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def label(self) -> str:
        """Short human-readable name, e.g. ``fcn-relu-d6-w784``."""
        if self.model == "fcn":
            return f"fcn-{self.activation}-d{self.depth}-w{self.width}"
        return f"cnn-{self.activation}-d{self.depth}-c{self.channels}-k{self.kernel_size}"


# The modules whose source shapes each kind of stored thing. A trained network depends on the data,
# the model and training; a score table (``identlib.sweep``) on the network and on metrics.py; layer
# maps (``identlib.layers``) on the network and on layers.py. The results cache keys each kind on
# the source of its modules, so editing metrics.py recomputes scores but keeps every network, and
# editing code outside these lists (the command line, plotting, the benchmarks) invalidates nothing.
DIGEST_MODULES = {
    "network": ("data.py", "models.py", "train.py"),
    "scores": ("metrics.py",),
    "layers": ("layers.py",),
}


def source_digest(kind: str = "network") -> str:
    """Digest of the source of :data:`DIGEST_MODULES` ``[kind]``.

    >>> source_digest("scores") != source_digest("network")
    True
    """
    if kind not in DIGEST_MODULES:
        raise ValueError(f"kind must be one of {', '.join(DIGEST_MODULES)} (got {kind!r})")
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in DIGEST_MODULES[kind]:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


INT_MIN = {"depth": 1, "width": 1, "channels": 1, "kernel_size": 1, "steps": 1, "train_index": 0,
           "n_train": 1, "batch_size": 0, "seed": 0}


def _check(name: str, value, kind) -> None:
    kind = kind if isinstance(kind, str) else kind.__name__
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ConfigError(f"{name} must be one of {', '.join(CHOICES[name])} (got {value!r})")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < INT_MIN[name]:
            raise ConfigError(f"{name} must be an integer >= {INT_MIN[name]} (got {value!r})")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ConfigError(f"{name} must be a number (got {value!r})")
        if name in ("lr", "init_scale") and not value > 0:
            raise ConfigError(f"{name} must be > 0 (got {value!r})")
        if name in ("tol", "momentum") and not value >= 0:
            raise ConfigError(f"{name} must be >= 0 (got {value!r})")
        if name == "momentum" and not value < 1:
            raise ConfigError(f"momentum must be < 1 (got {value!r})")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False (got {value!r})")
    if name == "kernel_size" and value % 2 == 0:
        raise ConfigError(f"kernel_size must be odd for 'same' padding (got {value})")


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _parse_list(name: str, value) -> list:
    """Sweep axes may arrive from papermill's -p as strings such as "[1, 2, 6]" or "1,2,6"."""
    if isinstance(value, str):
        import yaml

        text = value.strip()
        if not text.startswith("["):
            text = f"[{text}]"
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{name} must be a list such as [1, 2, 6] (got {value!r})") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise ConfigError(f"{name} must be a non-empty list (got {value!r})")
    return list(value)


def check_sweep(name: str, value) -> list:
    """Validate a sweep axis: a list parameter whose name is a config field plus "s"
    (``depths`` sweeps ``depth``), or a named rule below. Returns the parsed list.

    >>> check_sweep("depths", "[1, 2, 6]")
    [1, 2, 6]
    >>> check_sweep("depths", [1, 0])
    Traceback (most recent call last):
    ...
    identlib.config.ConfigError: depths: depth must be an integer >= 1 (got 0)
    """
    items = _parse_list(name, value)
    field = name[:-1] if name.endswith("s") else name
    for item in items:
        if field in FIELDS:
            try:
                _check(field, item, FIELDS[field].type)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        elif name in SWEEP_RULES:
            SWEEP_RULES[name](name, item)
        else:
            raise ConfigError(f"no validation rule for the sweep axis {name!r}")
    return items


def _unit(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name}: every value must be a number in [0, 1] (got {v!r})")


def _int_at_least(least):
    def rule(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name} must be an integer >= {least} (got {v!r})")
    return rule


_positive_int = _int_at_least(1)


# Rules for chapter parameters that are not config fields: scalars, and sweep axes (per element).
def _count(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{name} must be an integer >= 0, 0 to skip (got {v!r})")


SUMMARIES = ("pc", "mean")    # how identlib.layers sums a layer's channels into one map


def _summary(name, v):
    if v not in SUMMARIES:
        raise ConfigError(f"{name} must be one of {', '.join(SUMMARIES)} (got {v!r})")


RULES = {
    "wide_channels": _count,
    "n_probes": _positive_int,
    "n_test": _positive_int,
    "epochs": _positive_int,
    "summary": _summary,             # the layer chapter
    "ring_width": _positive_int,
}
# A chapter section that trains with other settings names them <field><suffix> (lr_60k).
SECTION_SUFFIXES = ("_60k",)
SWEEP_RULES = {
    "rhos": _unit,
    "channel_counts": _positive_int,
    "snapshots": lambda name, v: _int_at_least(0)(f"{name}: every value", v),
}


def validate_parameters(params: dict) -> dict:
    """Validate a chapter's parameters by name: config fields by the config's rules, sweep axes
    element-wise, and the other names by :data:`RULES`. Returns them with sweep axes parsed.

    >>> validate_parameters({"lr": 0.1, "depths": "1,2"})
    {'lr': 0.1, 'depths': [1, 2]}
    """
    out = {}
    for name, value in params.items():
        if name in FIELDS:
            if FIELDS[name].type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            _check(name, value, FIELDS[name].type)
        elif name in SWEEP_RULES or (name.endswith("s") and name[:-1] in FIELDS):
            value = check_sweep(name, value)
        elif name in RULES:
            RULES[name](name, value)
        elif name.endswith(SECTION_SUFFIXES) and name.rsplit("_", 1)[0] in FIELDS:
            field = name.rsplit("_", 1)[0]
            if FIELDS[field].type == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            try:
                _check(field, value, FIELDS[field].type)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        elif "_" in name and name.split("_", 1)[1] in FIELDS.keys() | SWEEP_RULES.keys() | _plurals():
            # a section's own setting, <section>_<field or sweep>: map_lrs, study_depths
            inner = name.split("_", 1)[1]
            try:
                value = validate_parameters({inner: value})[inner]
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        else:
            raise ConfigError(f"no validation rule for parameter {name!r}")
        out[name] = value
    return out


def _plurals() -> set:
    return {f + "s" for f in FIELDS}
