"""One frozen config per run, and the rules its values follow. Its fields are the chapters'
parameter names; a run's cache key is a digest of its content. A chapter's other parameters declare
their :class:`Kind` in the chapter (:mod:`identlib.chapters`).

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

__all__ = ["ConfigError", "RunConfig", "Kind", "check_field", "source_digest", "DIGEST_MODULES"]


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
    "precision": ("float32", "bf16", "auto"),
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
    precision: str = "float32"      # "bf16": products in bfloat16, about 2x faster where the
                                    # hardware has bfloat16 instructions (the Runtime chapter);
                                    # "auto": bf16 there, float32 elsewhere, decided when the
                                    # config is made (:func:`identlib.runtime.native_precision`)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "item") and not isinstance(value, (bool, int, float, str)):
                value = value.item()                     # a numpy or torch scalar (from a table)
                object.__setattr__(self, f.name, value)
            _check(f.name, value, f.type)
            if f.type == "float" and not isinstance(value, float):
                object.__setattr__(self, f.name, float(value))   # lr=1 and lr=1.0: one digest
        if self.n_train > 1 and self.train_index != 15:
            raise ConfigError("train_index applies to single-image runs (n_train == 1)")
        if self.precision == "auto":                     # a network's key holds what it computes in
            from .runtime import native_precision

            object.__setattr__(self, "precision",
                               native_precision() if self.dtype == "float32" else "float32")
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
# the model and training, alone or grouped (engine.py); a score table (``identlib.sweep``) on the
# network and on metrics.py; layer maps (``identlib.layers``) on the network and on layers.py;
# checkpoints (``identlib.checkpoints``) on the network and on checkpoints.py, and the scores of
# rewound networks (``identlib.rewind``) on those and on rewind.py and metrics.py; Jacobian spectra
# and basin tables (``identlib.dynamics``) on the network and on dynamics.py, theory.py, metrics.py. The
# results cache keys each kind on the source of its modules, so editing metrics.py recomputes
# scores but keeps every network, and editing code outside these lists (the command line,
# plotting, the benchmarks) invalidates nothing.
DIGEST_MODULES = {
    "network": ("data.py", "models.py", "train.py", "engine.py"),
    "scores": ("metrics.py",),
    "layers": ("layers.py",),
    "checkpoints": ("checkpoints.py",),
    "rewind": ("checkpoints.py", "rewind.py", "metrics.py"),
    "dynamics": ("dynamics.py", "theory.py", "metrics.py"),
}


def source_digest(kind: str = "network") -> str:
    """Digest of the code of :data:`DIGEST_MODULES` ``[kind]`` (their syntax trees: comments and
    docstrings do not count).

    >>> source_digest("scores") != source_digest("network")
    True
    """
    if kind not in DIGEST_MODULES:
        raise ValueError(f"kind must be one of {', '.join(DIGEST_MODULES)} (got {kind!r})")
    here = Path(__file__).parent
    files = tuple(here / name for name in DIGEST_MODULES[kind])
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    if stamp not in _DIGESTS:                     # parsing the modules takes tens of milliseconds
        h = hashlib.sha256()
        for f in files:
            h.update(_code_of(f.read_text()).encode())
        _DIGESTS[stamp] = h.hexdigest()[:12]
    return _DIGESTS[stamp]


_DIGESTS: dict = {}     # source_digest, by the modules' paths, modification times and sizes


def _code_of(source: str) -> str:
    """A module's code without its comments and docstrings (its syntax tree), so that editing
    documentation changes no digest.

    >>> _code_of("x = 1  # one") == _code_of('\"\"\"A module.\"\"\"\\nx = 1')
    True
    >>> _code_of("x = 1") == _code_of("x = 2")
    False
    """
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


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


def check_field(name: str, value, field: str | None = None):
    """``value`` checked by the rule of the config field ``field`` (default: ``name``), with
    integers accepted for float fields; returns it as the field stores it.

    >>> check_field("fine_lr", 1, field="lr")
    1.0
    """
    field = field or name
    if FIELDS[field].type == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        _check(field, value, FIELDS[field].type)
    except ConfigError as err:
        if name == field:
            raise
        raise ConfigError(f"{name}: {err}") from None
    return value


def _parse_list(name: str, value) -> list:
    """Lists may arrive from papermill's -p as strings such as "[1, 2, 6]" or "1,2,6"."""
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


class Kind:
    """The kind of a chapter parameter, declared in the chapter (``[list of depth]`` at the end of
    its comment in the parameters cell). A kind is one of

    - ``FIELD``: a value checked as the config field FIELD (a second learning rate ``fine_lr`` is ``[lr]``);
    - ``int ≥ N`` (or ``int >= N``; in a parameters cell write ≥, since papermill's parser takes an
      ``=`` in a comment for an assignment); ``number in A..B``; ``one of a, b, c``;
    - ``list of K`` for any of those: a non-empty list, each element of kind K (a sweep axis).

    A parameter named after a config field has that field's kind and needs no declaration.

    >>> Kind("list of depth")("depths", "5, 20")
    [5, 20]
    >>> Kind("int >= 1")("n", 0)
    Traceback (most recent call last):
    ...
    identlib.config.ConfigError: n must be an integer >= 1 (got 0)
    """

    def __init__(self, text: str):
        import re

        self.text = text = " ".join(text.split())
        self.is_list = text.startswith("list of ")
        inner = text[len("list of "):] if self.is_list else text
        if inner in FIELDS:
            self._check = lambda name, v: check_field(name, v, field=inner)
        elif m := re.fullmatch(r"int (?:>=|≥) (-?\d+)", inner):
            self._check = _int_at_least(int(m.group(1)))
        elif m := re.fullmatch(r"number in (-?[\d.]+)\.\.(-?[\d.]+)", inner):
            self._check = _number_in(float(m.group(1)), float(m.group(2)))
        elif inner.startswith("one of "):
            options = [o.strip() for o in inner[len("one of "):].split(",")]
            self._check = _one_of(options)
        else:
            raise ConfigError(f"unknown parameter kind [{text}]; kinds: a config field, 'int >= N', "
                              "'number in A..B', 'one of a, b', or 'list of' any of these")

    def __call__(self, name: str, value):
        if not self.is_list:
            if isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a single value, not a list (got {value!r})")
            out = self._check(name, value)
            return value if out is None else out
        items = _parse_list(name, value)
        out = []
        for item in items:
            try:
                checked = self._check(name, item)
            except ConfigError as err:
                text = str(err)
                raise ConfigError(text if text.startswith(f"{name}:") else f"{name}: {text}") from None
            out.append(item if checked is None else checked)
        return out

    def __repr__(self):
        return f"Kind({self.text!r})"


def _int_at_least(least):
    def rule(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ConfigError(f"{name} must be an integer >= {least} (got {v!r})")
    return rule


def _number_in(low, high):
    def rule(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}] (got {v!r})")
    return rule


def _one_of(options):
    def rule(name, v):
        if v not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)} (got {v!r})")
    return rule
