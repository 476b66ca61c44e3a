"""Training, model-agnostic: any module, inputs and targets in, loss history and a trained module
out (:func:`train`); and :func:`fit`, the one place where a run config becomes a trained network. Nothing here draws or prints except an optional progress bar (on stderr, off unless asked for
or stderr is a terminal; ``IDENTLIB_PROGRESS=0/1`` overrides).

>>> net = torch.nn.Linear(3, 3, bias=False)
>>> x = torch.ones(1, 3)
>>> out = train(net, x, x, optimizer="gd", lr=0.1, steps=200, tol=1e-10)
>>> out.converged, bool(out.loss[-1] < 1e-10)
(True, True)
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TrainingDiverged", "TrainResult", "train", "fit", "one_thread", "make_optimizer", "autocast",
           "PRECISIONS", "fcn_gd_step"]

CHECK_EVERY = 50  # steps between host synchronizations (divergence and convergence checks)
BLOWUP = 1e3      # a loss this many times its starting value counts as diverged
PRECISIONS = ("float32", "bf16")


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite. The message names the run and suggests a smaller lr."""


@dataclass(frozen=True)
class TrainResult:
    loss: np.ndarray      # training loss before each step taken, float64
    steps: int            # optimizer steps taken
    converged: bool       # stopped because the loss fell below tol


def make_optimizer(name: str, params, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """ "gd" and "sgd" are plain (momentum) gradient steps; they differ only in batching.

    The fused implementations update every parameter in one pass over memory: the same arithmetic
    (SGD bit for bit, Adam to within float rounding) at a third of the optimizer's time (the Runtime chapter).
    """
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, fused=True)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    raise ValueError(f"unknown optimizer {name!r}; use gd, sgd or adam")


def autocast(precision: str = "float32", device_type: str = "cpu"):
    """The context a forward pass runs in: nothing for "float32"; for "bf16", autocast on
    ``device_type`` ("cpu" or "cuda"), which runs convolutions and matrix products in bfloat16
    while the weights, the optimizer state and the loss stay float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")


def _progress_enabled(progress) -> bool:
    if progress is not None:
        return bool(progress)
    env = os.environ.get("IDENTLIB_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "False")
    return sys.stderr.isatty()


def train(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, optimizer: str = "gd",
          lr: float = 0.01, steps: int = 1000, momentum: float = 0.0, loss_reduction: str = "mean",
          tol: float = 0.0, batch_size: int = 0, generator: torch.Generator | None = None,
          precision: str = "float32", progress: bool | None = None, name: str = "run",
          callback=None) -> TrainResult:
    """Minimize the squared error between ``model(inputs)`` and ``targets``.

    ``loss_reduction`` "mean" is ``F.mse_loss``; "sum" sums the squared errors. ``batch_size`` 0
    uses every input each step; otherwise minibatches are drawn in an order set by ``generator``.
    Training stops after ``steps`` steps, or earlier once the loss is below ``tol`` (checked every
    few steps, so the host does not wait on every step). A NaN or infinite loss, or one above
    ``BLOWUP`` times the first, raises :class:`TrainingDiverged`. ``precision`` "bf16" runs the forward pass under :func:`autocast`.
    ``callback(t, model)``, if given, is called after each step t = 1, 2, ... (for example to keep
    snapshots of the weights); it must not change the model.

    A bias-free FCN trained by plain float32 gradient steps (``gd`` or ``sgd`` without momentum:
    the FCN chapters' recipe) takes its steps by hand (:func:`fcn_gd_step`); every other network,
    optimizer or precision steps through autograd and :func:`make_optimizer`.
    """
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum)
    by_hand = _steps_by_hand(model, optimizer, momentum, precision, loss_reduction)
    n = len(inputs)
    full = batch_size <= 0 or batch_size >= n
    losses = torch.zeros(steps, dtype=torch.float64, device=inputs.device)  # read every few steps
    order, cursor = None, n
    bar = None
    if _progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=name, leave=False, file=sys.stderr)
    model.train()
    taken, converged = 0, False
    try:
        for step in range(steps):
            if full:
                x, y = inputs, targets
            else:
                if cursor + batch_size > n:
                    order, cursor = torch.randperm(n, generator=generator), 0
                idx = order[cursor:cursor + batch_size].to(inputs.device)
                cursor += batch_size
                x, y = inputs[idx], targets[idx]
            if by_hand is not None:
                loss = fcn_gd_step(*by_hand, x, y, lr=lr, loss_reduction=loss_reduction)
            else:
                with autocast(precision, inputs.device.type):
                    loss = F.mse_loss(model(x), y, reduction=loss_reduction)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            losses[step] = loss.detach()
            taken = step + 1
            if callback is not None:
                callback(taken, model)
            if taken % CHECK_EVERY == 0 or taken == steps:
                recent = losses[max(0, taken - CHECK_EVERY):taken]
                bad_steps = ~torch.isfinite(recent) | (recent > BLOWUP * losses[0])
                if bad_steps.any():
                    bad = int(torch.nonzero(bad_steps)[0]) + max(0, taken - CHECK_EVERY)
                    raise TrainingDiverged(
                        f"{name}: training diverged at step {bad} (loss {float(losses[bad])}) with "
                        f"optimizer={optimizer}, lr={lr}; try a smaller lr (e.g. lr={lr / 10:g})."
                    )
                if bar is not None:
                    bar.update(taken - bar.n)
                    bar.set_postfix(loss=f"{float(losses[taken - 1]):.3g}")
                if tol > 0 and float(losses[taken - 1]) < tol:
                    converged = True
                    break
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    history = losses[:taken].cpu().numpy()
    if not converged and tol > 0 and taken and math.isfinite(history[-1]):
        converged = bool(history[-1] < tol)
    return TrainResult(loss=history, steps=taken, converged=converged)


def _steps_by_hand(model: nn.Module, optimizer: str, momentum: float, precision: str,
                   loss_reduction: str):
    """``(weights, relu)`` for :func:`fcn_gd_step` if ``model`` is an FCN without biases trained
    by plain float32 gradient steps (no momentum); otherwise None (autograd and the optimizer)."""
    from .models import FCN

    if not (isinstance(model, FCN) and optimizer in ("gd", "sgd") and momentum == 0
            and precision == "float32" and loss_reduction in ("sum", "mean")
            and isinstance(model.act, (nn.ReLU, nn.Identity))
            and all(layer.bias is None for layer in model.layers)):
        return None
    return [layer.weight for layer in model.layers], isinstance(model.act, nn.ReLU)


def fcn_gd_step(weights: list[torch.Tensor], relu: bool, x: torch.Tensor, y: torch.Tensor, *,
                lr: float, loss_reduction: str = "mean") -> torch.Tensor:
    """One gradient step of a bias-free FCN (layer weights ``weights``, ReLU between layers if
    ``relu``) on the squared error of ``x`` against ``y``, taken by hand; returns the loss before it.

    The forward pass keeps each layer's input; the backward pass takes each layer's gradient
    with respect to its input before updating its weights in place, ``W -= lr * g.T @ a`` (one
    ``addmm_``), so no gradient tensor is allocated and no optimizer reads one back: each step
    passes over the weights three times instead of five or more. It is the same step as autograd
    and ``torch.optim.SGD`` to float rounding (the tests compare the trained functions), and
    faster at batch 1, where a step is bound by memory (the Runtime chapter measures both).

    >>> w = [torch.eye(2).requires_grad_()]
    >>> x = torch.tensor([[1.0, 0.0]])
    >>> float(fcn_gd_step(w, False, x, 2 * x, lr=0.25, loss_reduction="sum")), w[0].tolist()
    (1.0, [[1.5, 0.0], [0.0, 1.0]])
    """
    last = len(weights) - 1
    with torch.no_grad():
        h = x.flatten(1)
        inputs = []
        for i, w in enumerate(weights):
            inputs.append(h)
            h = torch.mm(h, w.t())
            if relu and i < last:
                h = h.clamp_min_(0)
        diff = h - y.flatten(1)
        loss = diff.square().sum()
        scale = 2.0
        if loss_reduction == "mean":
            loss = loss / diff.numel()
            scale = 2.0 / diff.numel()
        g = diff.mul_(scale)
        for i in range(last, -1, -1):
            a = inputs[i]
            g_in = torch.mm(g, weights[i]) if i else None
            weights[i].addmm_(g.t(), a, alpha=-lr)
            if i:
                g = g_in.mul_(a > 0) if relu else g_in
    return loss


@contextlib.contextmanager
def one_thread():
    """Run the block on one torch thread, then restore the thread count.

    Every network :func:`fit` trains is trained inside it, so its weights do not depend on the
    thread count of the process that trained it.

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


def fit(config, *, progress: bool | None = None, steps: int | None = None, tol: float | None = None,
        callback=None) -> tuple[nn.Module, TrainResult, dict]:
    """Train the network of a :class:`~identlib.config.RunConfig` on its training set, alone and
    on one thread: ``(model, result, init_state)``, with ``init_state`` the initial weights.

    ``steps`` and ``tol`` override the config's (the layer chapter stops early to record
    snapshots); ``callback`` as in :func:`train` (it sees the model on the training device). The
    model is drawn on the CPU from a generator seeded with ``config.seed``, which then orders the
    minibatches; it trains on :func:`identlib.runtime.device` and is returned on the CPU.

    >>> from identlib.config import RunConfig
    >>> model, out, init = fit(RunConfig(depth=1, steps=3))
    >>> out.steps, sorted(init)
    (3, ['layers.0.weight'])
    """
    from .data import training_set
    from .models import build_model
    from .runtime import device

    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config, gen)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    dev = device()
    x = training_set(config).to(dev)
    model.to(dev)
    with one_thread():
        out = train(model, x, x, optimizer=config.optimizer, lr=config.lr,
                    steps=config.steps if steps is None else steps, momentum=config.momentum,
                    loss_reduction=config.loss_reduction, tol=config.tol if tol is None else tol,
                    batch_size=config.batch_size, generator=gen, precision=config.precision,
                    progress=progress, name=config.label(), callback=callback)
    return model.to("cpu"), out, init_state
