"""Rewinding layers: a trained network with some of its layers put back to their weights at an
earlier checkpoint (:mod:`identlib.checkpoints`), and how far each layer moved in training.

Rewinding the *last* k layers to step t keeps the first ``depth − k`` layers trained and gives the
last k their weights at t; rewinding the *first* k layers does the opposite. :func:`rewind_scores`
scores every (k, t) on test inputs as the book scores a network (mean correlation of the output
with the input and with the training image, and the verdict), sharing the layers that two
rewound networks have in common, so that all of them cost about half a forward pass each, and
stores the table in the results cache.
:func:`layer_change` is each layer's relative distance from its initial weights.

>>> from identlib.config import RunConfig
>>> from identlib.checkpoints import record
>>> ck = record(RunConfig(model="cnn", depth=3, channels=4, steps=20), [0, 10], cache=False)
>>> x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
>>> df = rewind_scores(ck, x, x[:1], cache=False)
>>> sorted(set(df.k)), sorted(set(df.step)), sorted(set(df.direction))
([1, 2, 3], [0, 10, 20], ['first', 'last'])
>>> layer_change(ck).query("step == 0").change.tolist()
[0.0, 0.0, 0.0]
"""
from __future__ import annotations

import json

import torch
from torch import nn

from .checkpoints import Checkpoints
from .metrics import scores, verdict

__all__ = ["DIRECTIONS", "rewound", "rewind_scores", "layer_change"]

DIRECTIONS = ("last", "first")


def _layers(direction: str, k: int, depth: int) -> range:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    if not 0 <= k <= depth:
        raise ValueError(f"k must lie in 0..{depth}, the network's depth (got {k})")
    return range(depth - k, depth) if direction == "last" else range(k)


def rewound(ck: Checkpoints, k: int, step: int, direction: str = "last") -> nn.Module:
    """The trained network of ``ck`` with its last (or first) ``k`` layers at their weights of
    checkpoint ``step``."""
    net = ck.model()
    early = ck.state(step)
    state = net.state_dict()
    for i in _layers(direction, k, len(net.layers)):
        for name in state:
            if name.startswith(f"layers.{i}."):
                state[name] = early[name]
    net.load_state_dict(state)
    return net


def _params(state: dict, i: int) -> dict:
    prefix = f"layers.{i}."
    return {name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)}


def _apply(net: nn.Module, i: int, params: dict, h: torch.Tensor) -> torch.Tensor:
    out = torch.func.functional_call(net.layers[i], params, (h,))
    return net.act(out) if i < len(net.layers) - 1 else out


def _score(pred: torch.Tensor, images: torch.Tensor, x_hat: torch.Tensor) -> dict:
    s = scores(pred, images, x_hat)
    ci, cc = float(s["corr_identity"].mean()), float(s["corr_constant"].mean())
    return {"corr_identity": ci, "corr_constant": cc, "verdict": verdict(ci, cc)}


def rewind_scores(ck: Checkpoints, images: torch.Tensor, x_hat: torch.Tensor,
                  directions=DIRECTIONS, *, cache: bool = True) -> "pd.DataFrame":
    """One row per direction, k = 1 … depth and checkpoint step: the mean scores on ``images``
    (N, 1, 28, 28) of the network rewound so (:func:`rewound`), and their verdict. The trained
    network's own step gives the trained network's scores for every k; k = depth gives the network
    at that step, in either direction.

    The table is stored beside the network in the results cache, keyed by the checkpoint steps,
    the directions, the images and ``x_hat`` and by the source of the code that computes it
    (``cache=False``: neither read nor written)."""
    import pandas as pd

    from . import cache as store

    directions = list(directions)
    for direction in directions:
        _layers(direction, 0, ck.config.depth)
    key = json.dumps({"steps": ck.steps, "directions": directions}).encode()
    name = store.artifact_name("rewind-scores", "rewind", key + images.float().contiguous().numpy().tobytes()
                               + x_hat.float().contiguous().numpy().tobytes())
    if cache:
        saved = store.read_artifact(ck.config, name, pd.read_pickle)
        if saved is not None:
            return saved
    df = _rewind_scores(ck, images, x_hat, directions)
    if cache:
        store.write_artifact(ck.config, name, lambda f: df.to_pickle(f))
    return df


@torch.no_grad()
def _rewind_scores(ck: Checkpoints, images: torch.Tensor, x_hat: torch.Tensor, directions) -> "pd.DataFrame":
    import pandas as pd

    net = ck.model()
    depth = len(net.layers)
    final = ck.states[-1]
    p = [_params(final, i) for i in range(depth)]
    x = images.flatten(1) if net.__class__.__name__ == "FCN" else images
    x = x.to(next(net.parameters()).dtype)
    inputs = [x]                                   # inputs[i]: what the trained layer i receives
    for i in range(depth):
        inputs.append(_apply(net, i, p[i], inputs[i]))
    trained = _score(inputs[-1], images, x_hat)
    rows = []
    for direction in directions:
        for step in ck.steps:
            q = [_params(ck.states[ck.steps.index(step)], i) for i in range(depth)]
            h = x
            for k in range(1, depth + 1):
                if step == ck.taken:
                    s = trained
                elif direction == "last":
                    g = inputs[depth - k]
                    for i in range(depth - k, depth):
                        g = _apply(net, i, q[i], g)
                    s = _score(g, images, x_hat)
                else:
                    h = _apply(net, k - 1, q[k - 1], h)    # the first k layers at the checkpoint
                    g = h
                    for i in range(k, depth):
                        g = _apply(net, i, p[i], g)
                    s = _score(g, images, x_hat)
                rows.append(dict(direction=direction, k=k, step=step, **s))
    return pd.DataFrame(rows)


def layer_change(ck: Checkpoints) -> "pd.DataFrame":
    """One row per checkpoint step and layer (1 … depth): ‖W_t − W_0‖ / ‖W_0‖, the Frobenius
    distance of the layer's weight matrix at step t from its initial one, relative to the initial
    one (biases left out)."""
    import pandas as pd

    w0 = ck.states[0]
    names = [n for n in w0 if n.endswith(".weight")]
    rows = []
    for step, state in zip(ck.steps, ck.states):
        for layer, name in enumerate(names, start=1):
            change = float((state[name] - w0[name]).double().norm() / w0[name].double().norm())
            rows.append(dict(step=step, layer=layer, change=change))
    return pd.DataFrame(rows)
