"""The plain PyTorch training loop, as a reader would write it: the yardstick for identlib's own.

The tests check that :func:`identlib.train.train` trains the function this loop trains (bit for bit
or to float rounding, as each test states), and the benchmarks time every other way of training
against it in the same run. It uses PyTorch's default, unfused optimizers and reads the loss
every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def optimizer(config, params) -> torch.optim.Optimizer:
    """The config's optimizer, built as PyTorch's documentation builds it."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)


def plain_loop(model, x: torch.Tensor, config, steps: int | None = None,
               generator: torch.Generator | None = None, on_step=None) -> list[float]:
    """Train ``model`` to map ``x`` to itself for ``steps`` (default ``config.steps``) steps.

    Minibatches of ``config.batch_size`` (0: every image each step) are drawn in an order set by
    ``generator``, as :func:`identlib.train.train` draws them. ``on_step()``, if given, is called
    after each step (the benchmarks time steps with it). Returns the loss of every step.
    """
    opt = optimizer(config, model.parameters())
    steps = config.steps if steps is None else steps
    b = config.batch_size if 0 < config.batch_size < len(x) else 0
    order, cursor, losses = None, len(x), []
    for _ in range(steps):
        batch = x
        if b:
            if cursor + b > len(x):
                order, cursor = torch.randperm(len(x), generator=generator), 0
            batch = x[order[cursor:cursor + b]]
            cursor += b
        loss = F.mse_loss(model(batch), batch, reduction=config.loss_reduction)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step()
    return losses
