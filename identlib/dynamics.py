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

__all__ = ["orbits", "distances", "basins", "rays", "nearest", "jacobian_spectrum", "Summary", "summary",
           "basin_table"]

BLOWN_UP = 10.0     # an orbit this far (RMS) from the training image has blown up


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


class Summary:
    """What :func:`summary` finds: ``row`` (the network's numbers), ``curve`` (one dict per
    iteration: median distance to x̂, fractions at x̂ and on its ray) and ``path``, the orbits
    (iterations + 1, N, 1, 28, 28), computed when first asked for (a cached summary needs none)."""

    def __init__(self, row: dict, curve: list, orbit):
        self.row, self.curve, self._orbit, self._path = row, curve, orbit, None

    @property
    def path(self) -> torch.Tensor:
        if self._path is None:
            self._path = self._orbit()
        return self._path


def _cached(config, stem: str, key: bytes, compute):
    """``compute()``, stored beside ``config``'s network in the results cache under ``stem`` and
    ``key`` (what it was computed from) and the source of this module's kind; without a config,
    just ``compute()``."""
    if config is None:
        return compute()
    import pickle

    from . import cache

    name = cache.artifact_name(stem, "dynamics", key)
    saved = cache.read_artifact(config, name, lambda p: pickle.loads(p.read_bytes()))
    if saved is not None:
        return saved
    value = compute()
    cache.write_artifact(config, name, lambda f: pickle.dump(value, f))
    return value


def _key(*tensors, **values) -> bytes:
    import json

    return json.dumps(values, sort_keys=True).encode() + b"".join(
        t.float().contiguous().numpy().tobytes() for t in tensors)


def summary(model, starts: torch.Tensor, x_hat: torch.Tensor, iterations: int, tests: torch.Tensor, *,
            eps: float = 0.05, min_cosine: float = 0.99, config=None) -> Summary:
    """A network trained on the one image ``x_hat`` (1, 1, 28, 28) as an iterated map: its orbits
    from ``starts`` and, in ``row``, its verdict on ``tests`` (the book's scores), its Jacobian's
    spectral radius ``radius``, top two singular values ``sigma_1``, ``sigma_2`` and
    ``from_identity`` (‖J − I‖₂) at ``x_hat``, its fit error ‖f(x̂) − x̂‖ (RMS), and the fractions of
    the starts whose orbit ends within ``eps`` of ``x_hat`` (``at_seven``), on its ray
    (``on_ray``, cosine at least ``min_cosine``) or more than :data:`BLOWN_UP` away or overflowed
    (``blown_up``). With the network's ``config``, ``row`` and ``curve`` are stored beside it in
    the results cache, keyed by the inputs and settings, and so is ``path`` once it is asked for
    (a warm chapter then iterates no network)."""
    orbit = lambda: orbits(model, starts, iterations)
    row, curve = _cached(config, "orbit-summary",
                         _key(starts, x_hat, tests, iterations=iterations, eps=eps, min_cosine=min_cosine),
                         lambda: _summary(model, orbit(), x_hat, iterations, tests, eps, min_cosine))
    return Summary(row, curve, lambda: _cached(config, "orbit-path", _key(starts, iterations=iterations), orbit))


def _summary(model, path, x_hat, iterations, tests, eps, min_cosine):
    from .metrics import scores, verdict
    from .models import predict

    to_seven = distances(path, x_hat)[..., 0]                              # (iterations + 1, N)
    on_ray = torch.stack([rays(path[: t + 1], x_hat, min_cosine) == 0 for t in range(iterations + 1)])
    s = scores(predict(model, tests), tests, x_hat)
    spec = jacobian_spectrum(model, x_hat[0], top=3)
    row = dict(
        verdict=verdict(float(s["corr_identity"].mean()), float(s["corr_constant"].mean())),
        radius=spec["radius"], sigma_1=float(spec["singular"][0]), sigma_2=float(spec["singular"][1]),
        from_identity=spec["from_identity"],
        fit_error=float(distances(predict(model, x_hat)[None], x_hat)[0, 0, 0]),
        at_seven=float((to_seven[-1] <= eps).double().mean()),
        on_ray=float(on_ray[-1].double().mean()),
        blown_up=float((~torch.isfinite(to_seven[-1]) | (to_seven[-1] > BLOWN_UP)).double().mean()))
    curve = [dict(iteration=t, to_seven=float(to_seven[t].median()),
                  at_seven=float((to_seven[t] <= eps).double().mean()),
                  on_ray=float(on_ray[t].double().mean())) for t in range(iterations + 1)]
    return row, curve


def basin_table(model, train_images: torch.Tensor, tests: torch.Tensor, iterations: int, *,
                homogeneous: bool, generator: torch.Generator, eps: float = 0.05,
                min_cosine: float = 0.99, noise: float = 0.05, config=None) -> tuple[dict, "pd.DataFrame"]:
    """A network trained on several images ``train_images`` (n, 1, 28, 28) as an iterated map.

    The *attractor* of training image j is where its own orbit ends: its ray for a ``homogeneous``
    network (no biases), the point reached otherwise. A test image is in j's *basin* when its
    orbit ends at j's attractor (on the ray, or within ``eps`` of the point). Returns the numbers
    of one row and the crosstab of nearest training image against basin reached (-1: none). The
    row: the smallest correlation of an attractor with its image (``limit_corr_min``), the largest
    RMS distance between them (``limit_to_image_max``), the smallest distance between two
    attractors (``limits_apart_min``), the fraction of training images whose noisy copies (``noise``
    Gaussian noise from ``generator``, clipped to [0, 1]) come back to their own attractor
    (``images_attracting``), the fractions of the ``tests`` that reach some attractor
    (``reach_one``) and their nearest image's (``reach_nearest``), the largest basin's share
    (``largest_basin``) and how many basins are reached (``basins_used``). With the network's
    ``config`` the result is stored beside it in the results cache, keyed by the images, the
    settings and the noise drawn (``generator`` advances as if it were computed)."""
    noise_draw = noise * torch.randn(train_images.shape, generator=generator)
    return _cached(config, "basin-table",
                   _key(train_images, tests, noise_draw, iterations=iterations, homogeneous=homogeneous,
                        eps=eps, min_cosine=min_cosine),
                   lambda: _basin_table(model, train_images, tests, iterations, homogeneous, noise_draw,
                                        eps, min_cosine))


def _basin_table(model, train_images, tests, iterations, homogeneous, noise_draw, eps, min_cosine):
    import pandas as pd

    from .metrics import pearson

    X, n = train_images, len(train_images)
    limits = orbits(model, X, iterations)[-1]
    if homogeneous:
        ends = lambda path: rays(path, X, min_cosine)
    else:
        ends = lambda path: basins(path, limits, eps)
    reached = ends(orbits(model, tests, iterations))
    noisy = (X + noise_draw).clamp(0, 1)
    back = ends(orbits(model, noisy, iterations))
    near = nearest(tests, X)
    apart = distances(limits[None], limits)[0].masked_fill(torch.eye(n, dtype=bool), float("inf"))
    row = dict(
        limit_corr_min=float(torch.nan_to_num(pearson(limits, X), -1).min()),
        limit_to_image_max=float(distances(limits[None], X)[0].diagonal().max()),
        limits_apart_min=float(apart.min()),
        images_attracting=float((back == torch.arange(n)).double().mean()),
        reach_one=float((reached >= 0).double().mean()),
        reach_nearest=float((reached == near).double().mean()),
        largest_basin=float(torch.bincount(reached[reached >= 0], minlength=n).max() / len(tests)),
        basins_used=int(len(set(reached[reached >= 0].tolist()))))
    confusion = pd.crosstab(pd.Series(near.numpy(), name="nearest training image"),
                            pd.Series(reached.numpy(), name="reached"))
    return row, confusion
