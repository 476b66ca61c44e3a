"""Runs, the results cache and sweeps.

``run(config)`` loads the trained network from the cache if this exact config (by content digest)
was trained before, and trains and stores it otherwise. A sweep is a list of configs from
:func:`grid`; :func:`evaluate` turns trained runs and test inputs into a tidy table (one row per
run × input) that seaborn plots directly.

The cache lives in ``$IDENTLIB_CACHE_DIR/results`` (default ``~/.cache/identlib/results``), one
folder per digest holding ``config.json`` and ``result.pt``. A result is written into a temporary
folder and renamed into place in one step, so an interrupted run never leaves a half-written
result behind.

:func:`run_all` and :func:`sweep` can train their uncached configs in ``workers`` processes of one
thread each, the costliest first: on a small CPU two one-thread processes train about twice as
fast as one process with two threads (small convolutions do not split well over threads, and
threads that wait on each other stall badly when the machine is busy).

Every network that goes into the cache is trained **alone and on one thread** (:func:`one_thread`),
in this process or in a worker. Two threads round differently from one, and so does training
several seeds as one grouped network (:mod:`identlib.engine`; bit for bit at some sizes but not at
all of them), and a deep CNN amplifies such differences into other printed numbers. Trained this way, a
cached network is a function of its config alone: it does not depend on which chapter, sweep or
worker count trained it first, nor on ``$IDENTLIB_THREADS`` (the threads of everything else, such
as evaluation). The grouped engine stays available for benchmarks and for experiments that do not
need that guarantee (:func:`identlib.engine.fit_group`).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data, engine
from .config import RunConfig
from .metrics import scores
from .models import build_model
from .train import TrainingDiverged, train

__all__ = ["Run", "cache_dir", "run", "run_all", "grid", "predict", "evaluate", "sweep",
           "training_set", "one_thread"]

# Trained weights larger than this are not stored (a width-4096 FCN of depth 8 is 500 MB); their
# scores still are, by :func:`sweep`.
MAX_STORED_MB = float(os.environ.get("IDENTLIB_CACHE_MAX_MB", "200"))


@dataclass
class Run:
    config: RunConfig
    model: nn.Module          # trained, in eval mode
    loss: np.ndarray          # training loss history
    converged: bool
    init_state: dict | None = None  # initial weights, kept only when asked for (theory checks)

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])


def cache_dir() -> Path:
    root = Path(os.environ.get("IDENTLIB_CACHE_DIR", "~/.cache/identlib")).expanduser()
    return root / "results"


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread, then restore the thread count.

    Every network stored in the cache is trained inside it, so its weights do not depend on the
    thread count of the process that trained it (see the module docstring).

    >>> n = torch.get_num_threads()
    >>> with one_thread():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == n
    True
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def training_set(config: RunConfig) -> torch.Tensor:
    """The training inputs (= targets) of a config: x̂ alone, or the first n MNIST training images."""
    if config.n_train == 1:
        x = data.training_image(config.train_index).unsqueeze(0)        # (1, 1, 28, 28)
    else:
        images = data.load("mnist", "train")[0]
        if config.n_train > len(images):
            raise ValueError(f"n_train must be <= {len(images)} (got {config.n_train})")
        x = data._to_tensor(images[:config.n_train])
    return x.to(getattr(torch, config.dtype))


def _train(config: RunConfig, progress) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config, gen)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = training_set(config)
    with one_thread():
        out = train(model, x, x, optimizer=config.optimizer, lr=config.lr, steps=config.steps,
                    momentum=config.momentum, loss_reduction=config.loss_reduction, tol=config.tol,
                    batch_size=config.batch_size, generator=gen, precision=config.precision,
                    progress=progress, name=config.label())
    result = {"state_dict": model.state_dict(), "loss": torch.from_numpy(out.loss),
              "converged": out.converged}
    return result, init_state


def _train_group(configs: list[RunConfig], progress) -> list[tuple[dict, dict]]:
    """What :func:`_train` returns for each config, for configs that differ only in ``seed``,
    trained together as one grouped network."""
    c = configs[0]
    gens = [torch.Generator().manual_seed(m.seed) for m in configs]
    models = [build_model(m, g) for m, g in zip(configs, gens)]     # each drawn as _train draws it
    init_states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    x = training_set(c)
    with one_thread():
        trained = engine.fit_group(models, x, x, generators=gens, optimizer=c.optimizer, lr=c.lr,
                                   steps=c.steps, momentum=c.momentum, loss_reduction=c.loss_reduction,
                                   tol=c.tol, batch_size=c.batch_size, precision=c.precision,
                                   progress=progress, name=c.label())
    return [({"state_dict": state, "loss": torch.from_numpy(out.loss), "converged": out.converged}, init)
            for (out, state), init in zip(trained, init_states)]


def _stored_mb(config: RunConfig) -> float:
    """Size of a config's trained weights, from its shape alone."""
    c = config
    if c.model == "fcn":
        sizes = [28 * 28] + [c.width] * (c.depth - 1) + [28 * 28]
        n = sum(a * b + (b if c.bias else 0) for a, b in zip(sizes, sizes[1:]))
    else:
        sizes = [1] + [c.channels] * (c.depth - 1) + [1]
        n = sum(a * b * c.kernel_size ** 2 + (b if c.bias else 0) for a, b in zip(sizes, sizes[1:]))
    return n * (8 if c.dtype == "float64" else 4) / 2**20


def _train_in_workers(configs, keep_init: bool = False, workers: int = 0) -> None:
    """Train the uncached configs in a pool of ``workers`` one-thread processes, the costliest
    first, and store each as :func:`run` would; :func:`run` then loads them. Nothing to do without
    workers (:func:`run` trains each config itself, alike), nor for configs whose weights are too
    large to store. A config that diverges is left to :func:`run`, which retrains and reports it."""
    if workers < 1:
        return
    todo = [c for c in dict.fromkeys(configs)
            if not (cache_dir() / c.digest() / "result.pt").exists() and _stored_mb(c) <= MAX_STORED_MB]
    if not todo:
        return
    todo.sort(key=lambda c: -_step_cost(c))
    ctx = multiprocessing.get_context("spawn")
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx,
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for done in [pool.submit(_train_and_store, c, keep_init) for c in todo]:
                done.result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            "a training worker process died. Networks finished before it are in the cache. Either it "
            "was killed (out of memory: use fewer workers), or the script that called run_all/sweep "
            "with workers lacks an `if __name__ == \"__main__\":` guard (each worker starts by "
            "importing that script); or pass workers=0 to train in this process") from err


def _train_and_store(config: RunConfig, keep_init: bool) -> None:
    """Train one config (in a worker) and store it; a divergence is left to :func:`run`."""
    try:
        result, init_state = _train(config, False)
    except TrainingDiverged:
        return
    _store(cache_dir() / config.digest(), config, result, init_state if keep_init else None)


def _step_cost(c: RunConfig) -> float:
    """Relative cost of training a config (arithmetic per step times steps), to schedule the
    longest jobs first."""
    if c.model == "fcn":
        per_step = c.depth * c.width ** 2 * max(1, c.batch_size or c.n_train)
    else:
        per_step = c.depth * (c.channels ** 2 + 32) * c.kernel_size ** 2   # + per-layer overhead
    return float(per_step * c.steps)


def _store(path: Path, config: RunConfig, result: dict, init_state: dict | None) -> None:
    """Write into a temporary sibling folder, then rename it into place (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=1, sort_keys=True))
        payload = dict(result)
        if init_state is not None:
            payload["init_state"] = init_state
        torch.save(payload, tmp / "result.pt")
        if path.exists():                            # enriching an entry (e.g. adding init_state)
            os.replace(tmp / "result.pt", path / "result.pt")
        else:
            try:
                os.rename(tmp, path)
            except OSError:
                if not (path / "result.pt").exists():   # not a concurrent writer's finished result
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(config: RunConfig, *, cache: bool = True, keep_init: bool = False,
        progress: bool | None = None) -> Run:
    """The trained network of ``config``: from the cache if present, else trained (and stored).

    ``keep_init`` also returns (and stores) the initial weights, for comparisons with theory.
    """
    path = cache_dir() / config.digest()
    payload = None
    if cache and (path / "result.pt").exists():
        payload = torch.load(path / "result.pt", weights_only=True)
        if keep_init and "init_state" not in payload:
            payload = None                                   # retrain to recover the init
    if payload is None:
        result, init_state = _train(config, progress)
        payload = dict(result, init_state=init_state)
        size_mb = sum(v.numel() * v.element_size() for v in result["state_dict"].values()) / 2**20
        if cache and size_mb <= MAX_STORED_MB:
            _store(path, config, result, init_state if keep_init else None)
    model = build_model(config, torch.Generator().manual_seed(config.seed))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Run(config, model, payload["loss"].numpy(), bool(payload["converged"]),
               payload.get("init_state") if keep_init else None)


def grid(base: RunConfig, **axes) -> list[RunConfig]:
    """Every combination of the axes, as configs derived from ``base``.

    >>> [c.depth for c in grid(RunConfig(), depth=[1, 2], seed=[0, 1])]
    [1, 1, 2, 2]
    """
    names = list(axes)
    return [base.replace(**dict(zip(names, values)))
            for values in itertools.product(*(axes[n] for n in names))]


def run_all(configs, *, cache: bool = True, keep_init: bool = False,
            progress: bool | None = None, workers: int = 0) -> list[Run]:
    """``run`` over a sweep, in order (each one cached): ``run_all(cs)[i]`` is ``run(cs[i])``, bit
    for bit. With ``workers`` >= 1 the uncached configs are first trained in that many one-thread
    processes (:func:`_train_in_workers`).

    >>> runs = run_all(grid(RunConfig(depth=1, steps=5), seed=[0, 1]))
    >>> [r.config.seed for r in runs], len(runs[1].loss)
    ([0, 1], 5)
    """
    configs = list(configs)
    if cache:
        _train_in_workers(configs, keep_init, workers)
    return [run(c, cache=cache, keep_init=keep_init, progress=progress) for c in configs]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The model's outputs on ``images`` (N, 1, 28, 28), float32, in eval mode."""
    dtype = next(model.parameters()).dtype
    outs = [model(images[i:i + batch].to(dtype)).float() for i in range(0, len(images), batch)]
    return torch.cat(outs)


def evaluate(runs, inputs: torch.Tensor, *, x_hat: torch.Tensor | None = None, fields=None,
             **columns) -> "pd.DataFrame":
    """Tidy table of scores: one row per run × input image.

    ``columns`` are per-input labels (e.g. ``name=panel.names, family=panel.families`` or
    ``rho=rhos``); ``fields`` the config fields to include (default: those that differ between the
    runs, plus ``depth``). ``x_hat`` defaults to each run's training image.
    """
    import pandas as pd

    runs = list(runs)
    frames = [_score_frame(r, inputs, x_hat, columns) for r in runs]
    return _with_fields([r.config for r in runs], frames, fields)


def _score_frame(r: Run, inputs, x_hat, columns) -> "pd.DataFrame":
    import pandas as pd

    target = x_hat if x_hat is not None else data.training_image(r.config.train_index)
    s = scores(predict(r.model, inputs), inputs, target)
    df = pd.DataFrame({k: list(v) for k, v in columns.items()})
    for k, v in s.items():
        df[k] = v.numpy()
    df["final_loss"] = r.final_loss        # training loss at the end, to tell converged runs apart
    return df


def _with_fields(configs, frames, fields) -> "pd.DataFrame":
    """Prefix each run's score table with its label and the config fields of interest."""
    import pandas as pd

    if fields is None:
        dicts = [c.to_dict() for c in configs]
        fields = [k for k in dicts[0] if k == "depth" or len({d[k] for d in dicts}) > 1]
    out = []
    for c, df in zip(configs, frames):
        df = df.copy()
        for f in reversed(fields):
            df.insert(0, f, getattr(c, f))
        df.insert(0, "label", c.label())
        out.append(df)
    return pd.concat(out, ignore_index=True)


def _inputs_key(inputs: torch.Tensor, x_hat, columns: dict) -> str:
    import hashlib

    h = hashlib.sha256(inputs.float().contiguous().numpy().tobytes())
    if x_hat is not None:
        h.update(x_hat.float().contiguous().numpy().tobytes())
    h.update(json.dumps({k: [str(v) for v in vals] for k, vals in columns.items()},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def sweep(configs, inputs: torch.Tensor, *, x_hat: torch.Tensor | None = None, fields=None,
          progress: bool | None = None, workers: int = 0, diverged: str = "raise",
          **columns) -> "pd.DataFrame":
    """Train (or load) every config and score it on ``inputs``: the tidy table of
    :func:`evaluate`, with each run's scores cached beside its result, keyed by the content of the
    inputs. A cached sweep needs neither training nor the stored weights. ``workers`` as in
    :func:`run_all`.

    ``diverged="report"`` turns a run whose training diverges into rows with missing scores and
    ``diverged`` True (the outcome is cached too) instead of raising :class:`TrainingDiverged`:
    for maps of settings where divergence is one of the outcomes.
    """
    if diverged not in ("raise", "report"):
        raise ValueError(f'diverged must be "raise" or "report" (got {diverged!r})')
    import pandas as pd

    configs = list(configs)
    key = _inputs_key(inputs, x_hat, columns)
    _train_in_workers([c for c in configs if not (cache_dir() / c.digest() / f"scores-{key}.pkl").exists()
                       and not (diverged == "report" and (cache_dir() / c.digest() / "diverged.txt").exists())],
                      workers=workers)
    frames = []
    for c in configs:
        folder = cache_dir() / c.digest()
        path = folder / f"scores-{key}.pkl"
        if path.exists():
            frames.append(pd.read_pickle(path))
            continue
        marker = folder / "diverged.txt"
        if diverged == "report" and marker.exists():
            frames.append(_diverged_frame(len(inputs), columns))
            continue
        try:
            df = _score_frame(run(c, progress=progress), inputs, x_hat, columns)
        except TrainingDiverged as err:
            if diverged == "raise":
                raise
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(marker, lambda f: f.write(str(err).encode()))
            frames.append(_diverged_frame(len(inputs), columns))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "config.json").exists():
            _atomic_write(folder / "config.json",
                          lambda f: f.write(json.dumps(c.to_dict(), indent=1, sort_keys=True).encode()))
        _atomic_write(path, lambda f: df.to_pickle(f))
        frames.append(df)
    if diverged == "report":
        frames = [f if "diverged" in f else f.assign(diverged=False) for f in frames]
    return _with_fields(configs, frames, fields)


def _diverged_frame(n: int, columns: dict) -> "pd.DataFrame":
    import pandas as pd

    df = pd.DataFrame({k: list(v) for k, v in columns.items()}, index=range(n))
    for m in ("corr_identity", "corr_constant", "mse_identity", "mse_constant", "final_loss"):
        df[m] = np.nan
    df["diverged"] = True
    return df


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
