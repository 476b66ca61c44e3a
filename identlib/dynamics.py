"""A trained network as a map applied again and again: x, f(x), f(f(x)), ...

Radhakrishnan, Yang, Belkin and Uhler (2018) call a training image *memorized* when it attracts
these iterates: a network contractive near the image (its input Jacobian there of spectral radius
below 1) pulls nearby inputs onto it. This module computes the orbits of a batch of inputs, their
distances to the training images, which training image (if any) each orbit ends at (its *basin*),
and the Jacobian's spectrum at a point. The one-layer linear network's orbits have a closed form,
:func:`identlib.theory.one_layer_iterates`.

>>> import torch
>>> x_hat = torch.full((1, 28, 28), 0.5)
>>> class Halfway(torch.nn.Module):                      # f(x) = x̂ + (x − x̂) / 2: x̂ attracts
...     def __init__(self):
...         super().__init__()
...         self.w = torch.nn.Parameter(torch.zeros(()))
...     def forward(self, x):
...         return x_hat + 0.5 * (x - x_hat) + 0 * self.w
>>> path = orbits(Halfway(), torch.zeros(3, 1, 28, 28), 10)
>>> tuple(path.shape), basins(path, x_hat[None], eps=1e-3).tolist()
((11, 3, 1, 28, 28), [0, 0, 0])
>>> round(jacobian_spectrum(Halfway(), x_hat)["radius"], 6)
0.5
"""
from __future__ import annotations

import torch

__all__ = ["orbits", "distances", "basins", "rays", "nearest", "jacobian_spectrum"]


@torch.no_grad()
def orbits(model, inputs: torch.Tensor, steps: int, batch: int = 512) -> torch.Tensor:
    """x, f(x), …, fˢᵗᵉᵖˢ(x) for each of ``inputs`` (N, 1, 28, 28): (steps + 1, N, 1, 28, 28),
    float32 on the CPU, computed on the model's device in its dtype. An orbit that overflows
    stays NaN or infinite from there on (the distances then say so)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0 (got {steps})")
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = [inputs.float().cpu()]
        h = inputs.to(p.device, p.dtype)
        for _ in range(steps):
            h = torch.cat([model(h[i:i + batch]) for i in range(0, len(h), batch)])
            out.append(h.float().cpu())
    finally:
        model.train(was_training)
    return torch.stack(out)


def distances(path: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Root-mean-square pixel distance of every iterate of ``path`` ((S, N, ...), from
    :func:`orbits`) to each of ``targets`` ((T, ...): training images, or one image): (S, N, T)."""
    flat = path.flatten(2).double()                                # (S, N, d)
    t = targets.reshape(len(targets), -1).double()                 # (T, d)
    # one target at a time: exact near 0, where the expanded |a|² − 2a·b + |b|² cancels
    return torch.stack([(flat - row).square().mean(-1).sqrt() for row in t], dim=-1)


def basins(path: torch.Tensor, train_images: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """For each orbit of ``path``, the index of the training image its last iterate lies within
    ``eps`` (root-mean-square pixel distance) of, or -1 if none: (N,) int64. With several within
    ``eps``, the nearest."""
    last = distances(path[-1:], train_images)[0]                   # (N, T)
    best, index = last.min(dim=1)
    return torch.where(best <= eps, index, torch.full_like(index, -1))


def rays(path: torch.Tensor, train_images: torch.Tensor, min_cosine: float = 0.99) -> torch.Tensor:
    """For each orbit of ``path``, the index of the training image whose *ray* {c x̂ⱼ : c > 0} its
    last iterate points along (cosine similarity at least ``min_cosine``; the most similar if
    several), or -1 if none: (N,) int64. The basins of a network without biases, positively
    homogeneous (f(cx) = c f(x) for c > 0): where x̂ⱼ is a fixed point, so is every c x̂ⱼ, and an
    orbit can end anywhere on the ray. An orbit that overflowed points nowhere (-1).

    >>> X = torch.eye(2).reshape(2, 1, 1, 2)                     # two "images", e₁ and e₂
    >>> ends = torch.tensor([[3.0, 0.1], [0.0, 0.5], [1.0, 1.0]]).reshape(1, 3, 1, 1, 2)
    >>> rays(ends, X).tolist()
    [0, 1, -1]
    """
    last = path[-1].flatten(1).double()
    t = train_images.reshape(len(train_images), -1).double()
    cos = (last @ t.T) / (last.norm(dim=1, keepdim=True) * t.norm(dim=1) + 1e-300)
    cos = torch.nan_to_num(cos, nan=-1.0)
    best, index = cos.max(dim=1)
    return torch.where(best >= min_cosine, index, torch.full_like(index, -1))


def nearest(inputs: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """The index of the training image nearest to each input (root-mean-square distance): (N,)."""
    return distances(inputs[None], train_images)[0].argmin(dim=1)


def jacobian_spectrum(model, x: torch.Tensor, top: int = 10) -> dict:
    """The input Jacobian J = ∂f/∂x at ``x`` (1, 28, 28) (:func:`identlib.theory.input_jacobian`):
    its spectral radius (largest |eigenvalue|: below 1, the point is locally attracting for the
    iterates once they are near it), its ``top`` largest singular values, and ‖J − I‖₂ (0 for
    the identity). Float64 numbers and a (top,) tensor."""
    from .theory import input_jacobian

    J = input_jacobian(model, x)
    eig = torch.linalg.eigvals(J).abs()
    s = torch.linalg.svdvals(J)
    eye = torch.eye(len(J), dtype=J.dtype)
    return {"radius": float(eig.max()), "singular": s[:top],
            "from_identity": float(torch.linalg.matrix_norm(J - eye, 2))}
