"""Closed forms that trained networks must match (paper.md §4; the derivations are ours).

**Linear FCN, one layer.** f(x) = Wx from W₀ = R, gradient descent on the squared error of the
training images X (d × n, identity target). Every gradient is (W X − X) Xᵀ, whose rows lie in the
span of the training images, so W moves only there and converges to

    W∞ = R + (X − R X) X⁺ = Π∥ + R Π⊥,   Π∥ = X X⁺ (projector onto span X), Π⊥ = I − Π∥.

The trained map is the identity on the span of the training images and the *initial random
matrix* on everything orthogonal to it: for one image x̂, f(x) = Π∥x + R Π⊥x.

>>> X = torch.tensor([[1.0], [0.0]], dtype=torch.float64)       # one training "image" e₁
>>> R = torch.tensor([[0.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
>>> linear_fcn_limit(R, X)
tensor([[1., 2.],
        [0., 4.]], dtype=torch.float64)
"""
from __future__ import annotations

import torch

__all__ = ["projectors", "linear_fcn_limit"]


def _columns(X: torch.Tensor) -> torch.Tensor:
    """Training images as the columns of a float64 (d, n) matrix; accepts (n, 1, 28, 28) too."""
    X = X.double()
    return X.flatten(1).T if X.dim() > 2 else X


def projectors(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Π∥, Π⊥): orthogonal projectors onto the span of the training images and its complement."""
    X = _columns(X)
    par = X @ torch.linalg.pinv(X)
    return par, torch.eye(X.shape[0], dtype=X.dtype) - par


def linear_fcn_limit(R: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """W∞ = R + (X − R X) X⁺: where gradient descent from W₀ = R converges on the identity task."""
    X = _columns(X)
    R = R.double()
    return R + (X - R @ X) @ torch.linalg.pinv(X)
