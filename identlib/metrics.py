"""How close a prediction is to the identity (the input) and to the constant (the training image).

>>> x_hat = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
>>> x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
>>> s = scores(x, x, x_hat)              # the identity function
>>> [round(v, 3) for v in s["corr_identity"].tolist()], float(s["mse_identity"].max())
([1.0, 1.0, 1.0], 0.0)
"""
from __future__ import annotations

import torch

__all__ = ["pearson", "scores", "METRICS"]

METRICS = ("corr_identity", "corr_constant", "mse_identity", "mse_constant")


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation per image of two (N, ...) batches (b may be a single image).

    A prediction with no variance (a flat image) has correlation 0 with everything.
    """
    a = a.flatten(1).double()
    b = b.flatten(1).double().expand_as(a)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))


def scores(pred: torch.Tensor, inputs: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: correlation and mean squared error of ``pred`` with the input (identity) and
    with ``x_hat`` (constant)."""
    flat = pred.flatten(1).double()
    x = inputs.flatten(1).double()
    t = x_hat.flatten().double().unsqueeze(0)
    return {
        "corr_identity": pearson(flat, x),
        "corr_constant": pearson(flat, t),
        "mse_identity": ((flat - x) ** 2).mean(1),
        "mse_constant": ((flat - t) ** 2).mean(1),
    }
