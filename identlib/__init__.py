"""identlib: the package behind *Identity Crisis, the executable book*.

Zhang, Bengio, Hardt, Mozer & Singer (ICLR 2020) train networks on a single MNIST "7" to map
their input to itself and ask which function they learn: the identity or the constant "7".

Modules, one concern each: :mod:`~identlib.data` (datasets, the training image, test inputs),
:mod:`~identlib.models`, :mod:`~identlib.train`, :mod:`~identlib.metrics`,
:mod:`~identlib.theory`, :mod:`~identlib.config` (run configs), :mod:`~identlib.experiments`
(cache and sweeps), :mod:`~identlib.engine` (networks trained together as one grouped network),
:mod:`~identlib.layers` (inside a CNN, layer by layer), :mod:`~identlib.dynamics` (a network applied
again and again: orbits, basins), :mod:`~identlib.checkpoints` (weights kept along training),
:mod:`~identlib.rewind` (layers put back to a checkpoint; how far each layer moved),
:mod:`~identlib.phase` (where along depth the identity breaks: bisection over depth), :mod:`~identlib.reference` (the plain PyTorch loop,
the yardstick of the tests and benchmarks), :mod:`~identlib.timings` (the Runtime chapter's tables),
:mod:`~identlib.cache` (the results cache), :mod:`~identlib.claims` (a chapter's checked claims
and glued numbers), :mod:`~identlib.plot`, :mod:`~identlib.chapters` (parameters and the command line's notebook
runner), :mod:`~identlib.paper` (the chapters stored at the paper's scale).
"""
__version__ = "0.1.0"

import importlib
import sys
import types

# Names are imported from their modules on first use (PEP 562), so that ``import identlib`` and the
# command line's notebook runner (``identlib refresh``) do not pay for torch and matplotlib.
_FROM = {
    "claims": ["Claims", "ClaimFailed", "glue"],
    "chapters": ["chapter"],
    "config": ["ConfigError", "RunConfig", "Kind"],
    "data": ["DataError", "Panel", "first_index", "load", "patterns", "probes", "test_images", "test_panel",
             "training_image"],
    "experiments": ["Run", "cache_dir", "evaluate", "grid", "predict", "run", "run_all", "sweep"],
    "metrics": ["pearson", "scores", "summarize", "verdict"],
    "models": ["CNN", "FCN", "build_model", "n_weights"],
    "runtime": ["setup"],
    "theory": ["end_to_end", "init_gain", "input_jacobian", "iterate", "leftover_rms", "linear_fcn_limit",
               "projectors"],
    "train": ["TrainingDiverged", "TrainResult", "train"],
}
_MODULE_OF = {name: module for module, names in _FROM.items() for name in names}
_SUBMODULES = {"cache", "chapters", "checkpoints", "claims", "cli", "config", "data", "dynamics", "engine", "experiments", "layers",
               "metrics", "models", "rewind",
               "paper", "phase", "plot", "reference", "runtime", "theory", "timings", "train"}


def __getattr__(name: str):
    if name in _SUBMODULES and name not in _MODULE_OF:
        return importlib.import_module(f".{name}", __name__)
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF) | _SUBMODULES)


class _Package(types.ModuleType):
    """``identlib.train`` is the function :func:`identlib.train.train`, as when this package
    imported every name eagerly: importing the submodule ``identlib.train`` must not replace it
    (the submodule stays in ``sys.modules`` and ``from identlib.train import ...`` works)."""

    def __setattr__(self, name, value):
        if name in _MODULE_OF and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "__version__", "Claims", "ClaimFailed", "glue", "cache", "claims", "chapter", "ConfigError", "RunConfig", "Kind", "DataError",
    "Panel", "first_index", "load", "patterns", "probes", "test_images", "test_panel",
    "training_image", "Run", "cache_dir", "evaluate", "grid", "predict", "run", "run_all", "sweep",
    "pearson", "scores", "summarize", "verdict", "plot", "paper", "dynamics", "engine", "layers", "reference", "timings", "CNN", "FCN", "build_model", "n_weights", "setup", "linear_fcn_limit",
    "projectors", "end_to_end", "init_gain", "leftover_rms", "input_jacobian", "iterate", "TrainingDiverged", "TrainResult", "train",
]
