"""Runs, the results cache and sweeps.

``run(config)`` loads the trained network from the cache if this exact config (by content digest)
was trained before, and trains and stores it otherwise. A sweep is a list of configs from
:func:`grid`; :func:`evaluate` turns trained runs and test inputs into a tidy table (one row per
run × input) that seaborn plots directly.

The cache lives in ``$IDENTLIB_CACHE_DIR/results`` (default ``~/.cache/identlib/results``), one
folder per digest holding ``config.json`` and ``result.pt``. A result is written into a temporary
folder and renamed into place in one step, so an interrupted run never leaves a half-written
result behind.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data
from .config import RunConfig
from .metrics import scores
from .models import build_model
from .train import train

__all__ = ["Run", "cache_dir", "run", "run_all", "grid", "predict", "evaluate", "training_set"]


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
    out = train(model, x, x, optimizer=config.optimizer, lr=config.lr, steps=config.steps,
                momentum=config.momentum, loss_reduction=config.loss_reduction, tol=config.tol,
                batch_size=config.batch_size, generator=gen, progress=progress, name=config.label())
    result = {"state_dict": model.state_dict(), "loss": torch.from_numpy(out.loss),
              "converged": out.converged}
    return result, init_state


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
        if cache:
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


def run_all(configs, **kwargs) -> list[Run]:
    """``run`` over a sweep, in order (each one cached)."""
    return [run(c, **kwargs) for c in configs]


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
    if fields is None:
        dicts = [r.config.to_dict() for r in runs]
        fields = [k for k in dicts[0] if k == "depth" or len({d[k] for d in dicts}) > 1]
    frames = []
    for r in runs:
        target = x_hat if x_hat is not None else data.training_image(r.config.train_index)
        s = scores(predict(r.model, inputs), inputs, target)
        df = pd.DataFrame({k: v.numpy() for k, v in s.items()})
        for k, v in columns.items():
            df.insert(0, k, list(v))
        for f in reversed(fields):
            df.insert(0, f, getattr(r.config, f))
        df.insert(0, "label", r.config.label())
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
