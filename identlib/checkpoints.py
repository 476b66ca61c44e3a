"""A network's weights at chosen steps of its training (checkpoints), cached beside the network.

:func:`record` trains a config exactly as :func:`identlib.run` trains it alone (:func:`identlib.train.fit`)
and keeps its weights at the steps asked for, 0 being the initial draw; the last checkpoint is
always the trained network. Training that stops early (a loss below the config's ``tol``) keeps its
final weights from then on, so a step after the last one taken is the trained network too and is
not stored twice. The checkpoints are an artifact of the results-cache entry of the config, keyed
by the steps and by the source of this module, and the trained network is stored as
:func:`identlib.run` stores it if it is not there yet. :func:`record_all` records several configs in
worker processes.

>>> from identlib.config import RunConfig
>>> ck = record(RunConfig(depth=2, width=16, steps=4), [0, 2], cache=False)
>>> ck.steps, ck.taken, sorted(ck.state(2))
([0, 2, 4], 4, ['layers.0.weight', 'layers.1.weight'])
>>> bool((ck.model(4).layers[0].weight == ck.states[-1]["layers.0.weight"]).all())
True
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import cache
from .config import RunConfig
from .models import build_model
from .train import fit

__all__ = ["Checkpoints", "record", "record_all"]


@dataclass(frozen=True)
class Checkpoints:
    config: RunConfig
    steps: list[int]        # recorded steps, ascending; the last is ``taken``, the trained network
    states: list[dict]      # the weights (state dicts) at those steps
    taken: int              # optimizer steps training took (fewer than config.steps if it converged)
    loss: np.ndarray        # training loss before each step taken

    def state(self, step: int) -> dict:
        """The weights at ``step``: a recorded step, or any step from ``taken`` on (the trained network)."""
        step = min(int(step), self.taken)
        if step not in self.steps:
            raise ValueError(f"step {step} was not recorded (recorded: {self.steps})")
        return self.states[self.steps.index(step)]

    def model(self, step: int | None = None) -> nn.Module:
        """The network with its weights at ``step`` (default: the trained network), in eval mode."""
        net = build_model(self.config)
        net.load_state_dict(self.state(self.taken if step is None else step))
        return net.eval()


def _check(config: RunConfig, at) -> list[int]:
    at = sorted({int(t) for t in at})
    if not at or at[0] < 0 or at[-1] > config.steps:
        raise ValueError(f"checkpoint steps must lie in 0..{config.steps}, the config's steps (got {at})")
    return at


def _name(at: list[int]) -> str:
    return cache.artifact_name("checkpoints", "checkpoints", json.dumps(list(at)), suffix=".pt")


def _load(config: RunConfig, payload: dict) -> Checkpoints:
    return Checkpoints(config, list(payload["steps"]), list(payload["states"]), int(payload["taken"]),
                       payload["loss"].numpy())


def record(config: RunConfig, at, *, cache: bool = True) -> Checkpoints:
    """The checkpoints of ``config``'s network at the steps ``at`` (in 0..``config.steps``), from
    the results cache or trained and stored (``cache=False``: neither read nor written). Raises
    :class:`~identlib.TrainingDiverged` as training does."""
    from . import cache as store
    from .experiments import _trace

    at = _check(config, at)
    _trace(config)                                  # the chapter benchmark's record of what is used
    name = _name(at)
    if cache:
        saved = store.read_artifact(config, name, lambda p: torch.load(p, weights_only=True))
        if saved is not None:
            return _load(config, saved)
    kept = {}

    def keep(t, net):
        if t in at:
            kept[t] = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}

    keep(0, build_model(config))                    # the draw fit() starts from
    model, out, _ = fit(config, callback=keep)
    kept[out.steps] = {k: v.clone() for k, v in model.state_dict().items()}
    steps = sorted(kept)
    payload = {"steps": steps, "states": [kept[t] for t in steps], "taken": out.steps,
               "loss": torch.from_numpy(out.loss)}
    if cache:
        if not store.has(config):
            store.store_result(config, {"state_dict": payload["states"][-1], "loss": payload["loss"],
                                        "converged": out.converged})
        store.write_artifact(config, name, lambda f: torch.save(payload, f))
    return _load(config, payload)


def _record_and_store(config: RunConfig, at) -> None:
    record(config, at)


def record_all(configs, at, *, workers: int | None = None) -> list[Checkpoints]:
    """:func:`record` of every config, in order. Those not in the cache are trained first, in
    ``workers`` one-thread processes (default :func:`identlib.runtime.workers`; 0 or 1: here);
    what finished before an interrupt or a dead worker stays in the cache."""
    from .experiments import _step_cost, in_pool
    from .runtime import workers as runtime_workers

    configs = list(configs)
    for c in configs:
        _check(c, at)
    todo = [c for c in dict.fromkeys(configs) if not (cache.entry(c) / _name(_check(c, at))).exists()]
    workers = runtime_workers() if workers is None else workers
    if len(todo) > 1 and workers > 1:
        todo.sort(key=_step_cost, reverse=True)            # the longest first
        in_pool(_record_and_store, [(c, at) for c in todo], workers)
    return [record(c, at) for c in configs]
