"""Inside a CNN: one 28 × 28 map per layer, where in the image a pattern appears, and how the
maps change over training.

A hidden layer of a CNN holds ``channels`` maps per input; :func:`layer_maps` summarizes them as
one, either by the channel mean or by the top principal component of the channels (computed per
layer over every pixel of every input given). Each summary comes with the fraction of the layer's
channel variance it captures, which says how much of the layer one map can show.
:func:`ring_correlation` measures where a pattern is present: its correlation with each map,
restricted to the pixels at a given distance from the image border. :func:`training_maps`
records the layer maps at chosen steps of a training run (cached).

>>> from identlib.config import RunConfig
>>> from identlib.models import build_model
>>> net = build_model(RunConfig(model="cnn", depth=3, channels=4, activation="relu"), torch.Generator().manual_seed(0))
>>> lm = layer_maps(net, torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
>>> tuple(lm.maps.shape), tuple(lm.captured.shape)    # (layers, inputs, 28, 28), (layers,)
((3, 2, 28, 28), (3,))
>>> float(lm.captured[-1])                             # the output layer has a single channel
1.0
>>> tuple(border_distance()[[0, 13, 27], [0, 13, 5]].tolist())
(0, 13, 0)
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from . import cache
from .config import RunConfig
from .models import build_model
from .train import fit

SUMMARIES = ("pc", "mean")    # how a layer's channels are summed into one map

__all__ = ["SUMMARIES", "LayerMaps", "hidden_states", "channel_summary", "layer_maps", "input_share",
           "spatial_std", "border_distance", "ring_correlation", "ring_profile", "training_maps"]

SIDE = 28


@dataclass(frozen=True)
class LayerMaps:
    maps: torch.Tensor       # (L, N, 28, 28): one map per layer and input; the last is the output
    captured: torch.Tensor   # (L,): fraction of each layer's channel variance the map captures
    summary: str             # "pc" or "mean"


@torch.no_grad()
def hidden_states(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's output on ``images`` (N, 1, 28, 28): hidden layers after their activation,
    then the network's output; a list of L tensors (N, C, 28, 28), float32 on the CPU, computed
    where the model is (during training, on the training device)."""
    p = next(model.parameters())                        # on the device the model is on
    _, hidden = model(images.to(p.device, p.dtype), return_hidden=True)
    return [h.float().cpu() for h in hidden]


def channel_summary(h: torch.Tensor, summary: str = "pc") -> tuple[torch.Tensor, float]:
    """One map per input from a layer's channels (N, C, H, W), and the fraction of the channel
    variance (over all pixels of all inputs) along the direction that makes the map.

    "pc": the projection on the top principal component of the channels, signed so that its
    average over the pixels is positive (the component points towards the activations, not
    towards the 7 or anything else). "mean": the channel mean. A single channel is its own map.

    >>> h = torch.stack([torch.ones(28, 28), 2 * torch.eye(28)])[None]   # (1, 2, 28, 28)
    >>> m, frac = channel_summary(h, "pc")
    >>> round(frac, 3), bool(m[0, 0, 0] > m[0, 0, 1])        # all variance in channel 2
    (1.0, True)
    >>> round(channel_summary(h, "mean")[1], 3)               # the mean direction gets half
    0.5
    """
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {', '.join(SUMMARIES)} (got {summary!r})")
    n, c, height, width = h.shape
    x = h.permute(0, 2, 3, 1).reshape(-1, c).double()        # (N·H·W, C): one row per pixel
    if c == 1:
        return x.reshape(n, height, width).float(), 1.0
    centred = x - x.mean(0)
    cov = centred.T @ centred / len(x)                        # (C, C)
    if summary == "mean":
        u = torch.full((c,), c ** -0.5, dtype=x.dtype)
    else:
        u = torch.linalg.eigh(cov).eigenvectors[:, -1]        # largest eigenvalue last
        if u @ x.mean(0) < 0:
            u = -u
    total = float(torch.trace(cov))
    captured = float(u @ cov @ u) / total if total > 0 else 1.0
    scale = c ** -0.5 if summary == "mean" else 1.0           # x @ (1/√C) · 1/√C = channel mean
    return (x @ u * scale).reshape(n, height, width).float(), captured


def layer_maps(model: torch.nn.Module, images: torch.Tensor, summary: str = "pc") -> LayerMaps:
    """One map per layer and input: :func:`channel_summary` of every layer of ``model`` on
    ``images`` (N, 1, 28, 28). The principal components are computed from these inputs, so the
    maps of one call share one direction per layer."""
    outs = [channel_summary(h, summary) for h in hidden_states(model, images)]
    return LayerMaps(torch.stack([m for m, _ in outs]), torch.tensor([f for _, f in outs]), summary)


def input_share(h: torch.Tensor) -> float:
    """How much a layer depends on its input: the share of its variance (over inputs, pixels and
    channels; h is (N, C, H, W)) that lies between the inputs, i.e. in how each pixel and channel
    differs from its mean over the inputs. 0: every input gives the same activations.

    >>> same = torch.rand(1, 3, 28, 28).expand(4, 3, 28, 28)
    >>> input_share(same), round(input_share(torch.rand(64, 3, 28, 28)), 1)
    (0.0, 1.0)
    """
    h = h.double()
    total = float(((h - h.mean((0, 2, 3), keepdim=True)) ** 2).sum())
    between = float(((h - h.mean(0, keepdim=True)) ** 2).sum())
    return between / total if total > 0 else 0.0


def spatial_std(h: torch.Tensor) -> float:
    """How much a layer varies across the image: the standard deviation over the pixels of each
    channel of each input (h is (N, C, H, W)), root-mean-squared over channels and inputs. 0: every
    channel is uniform over the image.

    >>> spatial_std(torch.ones(2, 3, 28, 28)), round(spatial_std(torch.eye(28).expand(1, 1, 28, 28)), 3)
    (0.0, 0.186)
    """
    return float(h.double().flatten(2).var(2, correction=0).mean().sqrt())


def border_distance(side: int = SIDE) -> torch.Tensor:
    """(side, side) integers: each pixel's distance from the nearest image edge, 0 on the border
    and ``side // 2 - 1`` in the centre."""
    i = torch.arange(side)
    d = torch.minimum(i, side - 1 - i)
    return torch.minimum(d[:, None], d[None, :])


def ring_correlation(maps: torch.Tensor, target: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Correlation of each map with ``target`` (28 × 28) within each band of ``width`` rings at
    the same distance from the border: (..., 28, 28) maps in, (..., bands) out, band b covering
    distances ``b·width`` to ``b·width + width − 1``. A band where ``target`` is uniform gives NaN;
    a band where a map is uniform gives 0.

    >>> seven = torch.rand(28, 28, generator=torch.Generator().manual_seed(0))
    >>> ring_correlation(seven[None], seven, width=7).round(decimals=3).tolist()
    [[1.0, 1.0]]
    """
    from .metrics import pearson

    bands = border_distance(maps.shape[-1]) // width
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = []
    for b in range(int(bands.max()) + 1):
        mask = bands == b
        t = target.reshape(maps.shape[-2:])[mask]
        if float(t.std()) == 0.0:
            out.append(torch.full((len(flat),), float("nan"), dtype=torch.float64))
        else:
            out.append(pearson(flat[:, mask], t[None]))
    return torch.stack(out, -1).reshape(*lead, -1)


def ring_profile(maps: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Where a map has structure: per band of ``width`` rings (as in :func:`ring_correlation`),
    the root-mean-square difference between the map and its value at the centre of the image (the
    mean of the innermost band), as a fraction of the largest such value over the bands.
    (..., 28, 28) in, (..., bands) out, each row in [0, 1]; a uniform map gives zeros.

    >>> frame = torch.zeros(28, 28); frame[0, :] = 1.0             # structure on the border only
    >>> ring_profile(frame, width=7).tolist()
    [1.0, 0.0]
    """
    bands = border_distance(maps.shape[-1]) // width
    flat = maps.reshape(-1, *maps.shape[-2:]).double()
    centre = flat[:, bands == bands.max()].mean(1)
    rms = torch.stack([((flat[:, bands == b] - centre[:, None]) ** 2).mean(1).sqrt()
                       for b in range(int(bands.max()) + 1)], -1)
    top = rms.max(-1, keepdim=True).values
    out = torch.where(top > 0, rms / top.clamp_min(1e-300), torch.zeros_like(rms))
    return out.reshape(*maps.shape[:-2], -1)


def _maps_name(at, images: torch.Tensor, summary: str) -> str:
    key = json.dumps({"at": list(at), "summary": summary}).encode()
    return cache.artifact_name("layer-maps", "layers", key + images.float().contiguous().numpy().tobytes(),
                               suffix=".pt")


def training_maps(config: RunConfig, at, images: torch.Tensor, summary: str = "pc") -> dict[int, LayerMaps]:
    """:func:`layer_maps` of ``config``'s network at each step in ``at`` of its training (0: the
    random init), trained exactly as :func:`identlib.run` trains it, up to ``max(at)`` steps.

    The maps are cached beside the run's result, keyed by ``at``, ``summary`` and the images; a
    run trained to ``config.steps`` here is also stored in the results cache, so
    :func:`identlib.run` does not train it again. Raises :class:`~identlib.TrainingDiverged` as
    training does.
    """
    at = sorted({int(t) for t in at})
    if at[0] < 0 or at[-1] > config.steps:
        raise ValueError(f"steps to record must lie in 0..{config.steps} (got {at})")
    name = _maps_name(at, images, summary)
    saved = cache.read_artifact(config, name, lambda p: torch.load(p, weights_only=True))
    if saved is not None:
        return {t: LayerMaps(m, f, summary) for t, m, f in zip(saved["at"], saved["maps"], saved["captured"])}
    recorded = {}

    def record(t, net):
        if t in at:
            recorded[t] = layer_maps(net, images, summary)

    record(0, build_model(config))                            # the draw fit() starts from
    model, out, _ = fit(config, steps=max(at[-1], 1), tol=0.0, callback=record)
    if at[-1] == config.steps and config.tol == 0 and not cache.has(config):
        cache.store_result(config, {"state_dict": model.state_dict(), "loss": torch.from_numpy(out.loss),
                                    "converged": out.converged})
    payload = {"at": at, "maps": [recorded[t].maps for t in at], "captured": [recorded[t].captured for t in at]}
    cache.write_artifact(config, name, lambda f: torch.save(payload, f))
    return {t: recorded[t] for t in at}
