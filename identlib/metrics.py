"""How close a prediction is to the identity (the input) and to the constant (the training image).

>>> x_hat = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
>>> x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
>>> s = scores(x, x, x_hat)              # the identity function
>>> [round(v, 3) for v in s["corr_identity"].tolist()], float(s["mse_identity"].max())
([1.0, 1.0, 1.0], 0.0)
"""
from __future__ import annotations

import torch

__all__ = ["pearson", "scores", "score_frame", "verdict", "summarize", "METRICS"]

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


def score_frame(pred: torch.Tensor, inputs: torch.Tensor, x_hat: torch.Tensor, columns: dict | None = None,
                final_loss: float | None = None) -> "pd.DataFrame":
    """:func:`scores` as a table, one row per input, after the per-input label ``columns``; with
    ``final_loss`` (the network's training loss at the end) as a last column."""
    import pandas as pd

    df = pd.DataFrame({k: list(v) for k, v in (columns or {}).items()}, index=range(len(inputs)))
    for k, v in scores(pred, inputs, x_hat).items():
        df[k] = v.numpy()
    if final_loss is not None:
        df["final_loss"] = final_loss
    return df


def verdict(corr_identity: float, corr_constant: float) -> str:
    """Which reference function a prediction resembles, from its two correlations.

    "identity" or "constant" at correlation ≥ 0.9; "mostly identity" / "mostly constant" when the
    larger of the two is ≥ 0.6; otherwise "neither".

    >>> verdict(0.97, 0.2), verdict(0.1, 0.95), verdict(0.3, 0.7), verdict(0.2, 0.3)
    ('identity', 'constant', 'mostly constant', 'neither')
    """
    if corr_identity >= 0.9 and corr_identity >= corr_constant:
        return "identity"
    if corr_constant >= 0.9:
        return "constant"
    best, name = max((corr_identity, "identity"), (corr_constant, "constant"))
    return f"mostly {name}" if best >= 0.6 else "neither"


def summarize(df, by, exclude_family: str | None = "train"):
    """Mean scores per group (e.g. per depth) over the test inputs, with a verdict per group.

    ``df`` is a tidy table from :func:`identlib.evaluate`; rows of family ``exclude_family`` (the
    training image) are left out when a ``family`` column exists.
    """
    if exclude_family is not None and "family" in df:
        df = df[df["family"] != exclude_family]
    cols = [m for m in METRICS if m in df]
    out = df.groupby(by, sort=False)[cols].mean()
    out["verdict"] = [verdict(a, b) for a, b in zip(out["corr_identity"], out["corr_constant"])]
    return out
