"""identlib: the package behind *Identity Crisis, the executable book*.

Zhang, Bengio, Hardt, Mozer & Singer (ICLR 2020) train networks on a single MNIST "7" to map
their input to itself and ask which function they learn: the identity or the constant "7".

Modules, one concern each: :mod:`~identlib.data` (datasets, the training image, test inputs),
:mod:`~identlib.models`, :mod:`~identlib.train`, :mod:`~identlib.metrics`,
:mod:`~identlib.theory`, :mod:`~identlib.config` (run configs), :mod:`~identlib.experiments`
(cache and sweeps), :mod:`~identlib.engine` (seeds trained together as one grouped network, for benchmarks),
:mod:`~identlib.layers` (inside a CNN, layer by layer),
:mod:`~identlib.plot`, :mod:`~identlib.chapters` (parameters and the command line's notebook
runner).
"""
__version__ = "0.1.0"

from .config import ConfigError, RunConfig, check_sweep, validate_parameters
from .data import DataError, Panel, first_index, load, patterns, probes, test_images, test_panel, training_image
from .experiments import Run, cache_dir, evaluate, grid, predict, run, run_all, sweep
from . import engine, layers, plot
from .metrics import pearson, scores, summarize, verdict
from .models import CNN, FCN, build_model, n_weights
from .runtime import setup
from .theory import end_to_end, init_gain, input_jacobian, iterate, leftover_rms, linear_fcn_limit, projectors
from .train import TrainingDiverged, TrainResult, train

__all__ = [
    "__version__", "ConfigError", "RunConfig", "check_sweep", "validate_parameters", "DataError",
    "Panel", "first_index", "load", "patterns", "probes", "test_images", "test_panel",
    "training_image", "Run", "cache_dir", "evaluate", "grid", "predict", "run", "run_all", "sweep",
    "pearson", "scores", "summarize", "verdict", "plot", "engine", "layers", "CNN", "FCN", "build_model", "n_weights", "setup", "linear_fcn_limit",
    "projectors", "end_to_end", "init_gain", "leftover_rms", "input_jacobian", "iterate", "TrainingDiverged", "TrainResult", "train",
]
