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

__all__ = ["projectors", "linear_fcn_limit", "end_to_end", "leftover_rms", "init_gain"]


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


def end_to_end(model) -> torch.Tensor:
    """The matrix W_L ⋯ W_1 (float64) of a linear FCN without biases: f(x) = W x."""
    W = None
    for layer in model.layers:
        if layer.bias is not None:
            raise ValueError("end_to_end needs a network without biases")
        w = layer.weight.detach().double()
        W = w if W is None else w @ W
    return W


def leftover_rms(W: torch.Tensor, X: torch.Tensor) -> float:
    """Root-mean-square singular value of W Π⊥: how strongly a linear map passes on what is
    orthogonal to the training images. Any linear network that fits x̂ exactly computes
    f(x) = Π∥x + W Π⊥x, so this number alone separates depths and inits.

    >>> X = torch.zeros(784, 1, dtype=torch.float64); X[0] = 1
    >>> round(leftover_rms(torch.eye(784, dtype=torch.float64), X), 6)
    1.0
    """
    _, perp = projectors(X)
    rank = int(round(float(torch.trace(perp))))
    return float(torch.linalg.matrix_norm(W.double() @ perp) / rank ** 0.5)


INIT_VARIANCE = {  # Var(w) · fan_in of each scheme for a square layer (ReLU gain for "he")
    "xavier_uniform": 1.0, "xavier_normal": 1.0, "orthogonal": 1.0, "he": 2.0, "default": 1.0 / 3.0,
}


def init_gain(scheme: str, scale: float = 1.0) -> float:
    """Expected factor by which one square random layer scales the norm of a vector:
    √(fan_in · Var w) · scale. A depth-L product of such layers scales it by gain^L.

    >>> round(init_gain("default"), 4), init_gain("xavier_uniform", 0.5)
    (0.5774, 0.5)
    """
    return (INIT_VARIANCE[scheme] ** 0.5) * scale
