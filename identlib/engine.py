"""The fast path of training: several seeds of one config trained at once as one grouped network,
and the precision a run computes in.

Configs that differ only in ``seed`` have networks of identical shapes. Stacking their weights
turns G networks into one: a hidden CNN layer becomes one grouped convolution (``groups=G``), an
FCN layer one batched matrix product. The loss is the *sum* of the members' losses, so each
member's gradient is exactly its own; Adam and (momentum) gradient descent act element by element,
so each member's update is its own too. Member g's trained weights, loss history and convergence
are what training it alone gives, up to float rounding (``tests/test_engine.py`` checks this);
where training is chaotic (a ReLU switched off by a rounding difference), the two can part.
Grouping pays for small networks, whose steps are mostly per-operation overhead; for 128-channel
CNNs it is about even (the Runtime chapter). Because of that rounding, the results cache never holds a
grouped member (:mod:`identlib.experiments` trains each cached network alone, on one thread): the
benchmarks use this module directly, and so can an experiment that does not need bit-identical
reruns.

A member that reaches ``tol`` stops where a lone run would stop: its weights are copied out at that
step, and the group trains on until every member has stopped.

>>> import torch
>>> from identlib.models import CNN
>>> nets = [CNN(3, channels=4) for _ in range(2)]
>>> group = stack(nets)
>>> tuple(group(torch.zeros(1, 5, 1, 28, 28)).shape)    # (1 shared input, B, 1, 28, 28) -> (G, B, 1, 28, 28)
(2, 5, 1, 28, 28)
>>> torch.equal(group.member_state(1)["layers.0.weight"], nets[1].layers[0].weight)
True
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

from .models import CNN, FCN
from .train import (BLOWUP, CHECK_EVERY, TrainingDiverged, TrainResult, _progress_enabled, autocast,
                    make_optimizer)

__all__ = ["GroupedCNN", "GroupedFCN", "stack", "fit_group", "seed_groups", "MAX_GROUP"]

MAX_GROUP = 8   # members per grouped network (bounds the memory one group needs)


class _Grouped(nn.Module):
    """G networks of one shape as one module. Inputs and outputs are member-first:
    (G, B, 1, 28, 28), or (1, B, 1, 28, 28) for one batch shared by every member."""

    def __init__(self, members):
        super().__init__()
        self.G = len(members)
        self.activation = members[0].act
        # weights[i]: every member's weight of layer i, stacked; biases[i] likewise (or absent)
        self.weights = nn.ParameterList(self._stack([m.layers[i].weight for m in members])
                                        for i in range(len(members[0].layers)))
        has_bias = members[0].layers[0].bias is not None
        self.biases = nn.ParameterList(self._stack([m.layers[i].bias for m in members])
                                       for i in range(len(members[0].layers))) if has_bias else None

    def member_state(self, g: int) -> dict:
        """Member g's weights as the state dict of the network it was stacked from."""
        out = {}
        for i, w in enumerate(self.weights):
            out[f"layers.{i}.weight"] = self._member(w, g).detach().clone().contiguous()
            if self.biases is not None:
                out[f"layers.{i}.bias"] = self._member(self.biases[i], g).detach().clone()
        return out


class GroupedCNN(_Grouped):
    """G CNNs as one: layer weights (G·c_out, c_in, k, k), applied with ``groups=G``."""

    def __init__(self, members: list[CNN]):
        super().__init__(members)
        conv = members[0].layers[0]
        self.k, self.padding_mode = conv.kernel_size[0], conv.padding_mode

    @staticmethod
    def _stack(tensors):
        return nn.Parameter(torch.cat([t.detach() for t in tensors]))          # (G·c_out, ...)

    def _member(self, w, g):
        n = len(w) // self.G
        return w[g * n:(g + 1) * n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x.shape[0] == 1
        h = x[0] if shared else x.squeeze(2).transpose(0, 1)               # (B, 1 or G, 28, 28)
        G, last = self.G, len(self.weights) - 1
        for i, w in enumerate(self.weights):
            b = None if self.biases is None else self.biases[i]
            if i == 0 and shared:          # one input for every member: one convolution to G·c_out
                h = self._conv(h, w, b, groups=1)
            elif i == last:                # one output channel per member: oneDNN's grouped kernel
                c = h.shape[1] // G        # is many times slower there than G plain convolutions
                h = torch.cat([self._conv(h[:, g * c:(g + 1) * c], w[g:g + 1],
                                          None if b is None else b[g:g + 1], groups=1) for g in range(G)], 1)
            else:
                h = self._conv(h, w, b, groups=G)
            if i < last:
                h = self.activation(h)             # (B, G·c, 28, 28)
        return h.transpose(0, 1).unsqueeze(2)      # (B, G, 28, 28) -> (G, B, 1, 28, 28)

    def _conv(self, h, w, b, groups):
        pad = self.k // 2
        if self.padding_mode == "zeros":
            return F.conv2d(h, w, b, padding=pad, groups=groups)
        return F.conv2d(F.pad(h, (pad,) * 4, mode=self.padding_mode), w, b, groups=groups)  # as nn.Conv2d


class _BatchedLinear(torch.autograd.Function):
    """y = h Wᵀ per member, as ``F.linear`` computes it for one. Autograd's own backward of
    ``h @ W.transpose(1, 2)`` returns the weight gradient as a transposed view, which costs a full
    copy per step; this one returns it in the weight's layout."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")       # under bf16 autocast, as torch.matmul would be
    def forward(ctx, h, w):                        # h (1 or G, B, in), w (G, out, in)
        ctx.save_for_backward(h, w)
        return torch.matmul(h, w.transpose(1, 2))  # (G, B, out)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):                       # grad (G, B, out)
        h, w = ctx.saved_tensors
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.bmm(grad, w)                                        # (G, B, in)
            if h.shape[0] == 1:
                grad_h = grad_h.sum(0, keepdim=True)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(grad.transpose(1, 2), h.expand(len(w), -1, -1))  # (G, out, in)
        return grad_h, grad_w


class GroupedFCN(_Grouped):
    """G FCNs as one: layer weights (G, out, in), applied with one batched matrix product."""

    @staticmethod
    def _stack(tensors):
        return nn.Parameter(torch.stack([t.detach() for t in tensors]))        # (G, out, in)

    def _member(self, w, g):
        return w[g]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G, B = self.G, x.shape[1]
        h = x.flatten(2)                                    # (1 or G, B, 784)
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            h = _BatchedLinear.apply(h, w)                  # (G, B, in) -> (G, B, out)
            if self.biases is not None:
                h = h + self.biases[i].unsqueeze(1)
            if i < last:
                h = self.activation(h)
        return h.view(G, B, *x.shape[2:])                   # (G, B, 784) -> (G, B, 1, 28, 28)


def stack(members) -> _Grouped:
    """One grouped network from networks of one shape (all :class:`CNN` or all :class:`FCN`)."""
    kinds = {type(m) for m in members}
    if kinds == {CNN}:
        return GroupedCNN(members)
    if kinds == {FCN}:
        return GroupedFCN(members)
    raise TypeError(f"can stack only CNNs or only FCNs (got {', '.join(k.__name__ for k in kinds)})")


def fit_group(members, inputs: torch.Tensor, targets: torch.Tensor, *, generators, optimizer: str = "gd",
              lr: float = 0.01, steps: int = 1000, momentum: float = 0.0, loss_reduction: str = "mean",
              tol: float = 0.0, batch_size: int = 0, precision: str = "float32",
              progress: bool | None = None, name: str = "group",
              callback=None) -> list[tuple[TrainResult, dict]]:
    """Train ``members`` (networks of one shape) as :func:`identlib.train.train` would train each
    alone, with the same arguments; member g draws its minibatches from ``generators[g]``.

    Returns, per member, its :class:`~identlib.train.TrainResult` and trained state dict. If a
    member diverges (by the rule of ``train``), :class:`~identlib.train.TrainingDiverged` is raised,
    naming the group; train the members alone to find which one. ``callback(t, group)``, if given,
    is called after each step t = 1, 2, ... with the grouped network (the benchmarks time steps
    with it).
    """
    group = stack(members)
    G, n = group.G, len(inputs)
    full = batch_size <= 0 or batch_size >= n
    opt = make_optimizer(optimizer, group.parameters(), lr, momentum)
    losses = torch.zeros(steps, G, dtype=torch.float64)
    stopped: dict[int, tuple[int, dict]] = {}       # member -> (steps taken, weights) once below tol
    orders, cursor = None, n
    bar = None
    if _progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"{name} ×{G}", leave=False, file=sys.stderr)
    group.train()
    taken = 0
    try:
        for step in range(steps):
            if full:
                x, y = inputs.unsqueeze(0), targets.unsqueeze(0)               # (1, n, 1, 28, 28)
            else:
                if cursor + batch_size > n:                                    # one order per member
                    orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
                    cursor = 0
                idx = orders[:, cursor:cursor + batch_size]                    # (G, b)
                cursor += batch_size
                x, y = inputs[idx], targets[idx]                               # (G, b, 1, 28, 28)
            with autocast(precision):
                out = group(x)                                                 # (G, B, 1, 28, 28)
            err = (out.to(y.dtype) - y).square().flatten(1)                    # (G, B·784)
            member_loss = err.mean(1) if loss_reduction == "mean" else err.sum(1)   # (G,)
            opt.zero_grad(set_to_none=True)
            member_loss.sum().backward()
            opt.step()
            losses[step] = member_loss.detach()
            taken = step + 1
            if callback is not None:
                callback(taken, group)
            if taken % CHECK_EVERY == 0 or taken == steps:
                _check(losses, taken, stopped, name, optimizer, lr)
                if tol > 0:
                    for g in range(G):
                        if g not in stopped and float(losses[taken - 1, g]) < tol:
                            stopped[g] = (taken, group.member_state(g))
                if bar is not None:
                    bar.update(taken - bar.n)
                if len(stopped) == G:
                    break
    finally:
        if bar is not None:
            bar.close()
    out = []
    for g in range(G):
        steps_g, state = stopped.get(g, (taken, None))
        history = losses[:steps_g, g].numpy()
        converged = g in stopped or bool(tol > 0 and steps_g and math.isfinite(history[-1])
                                          and history[-1] < tol)
        out.append((TrainResult(loss=history, steps=steps_g, converged=converged),
                    state if state is not None else group.member_state(g)))
    return out


def _check(losses, taken, stopped, name, optimizer, lr) -> None:
    """Raise if a member still training has diverged since the last check, by the rule of
    :func:`identlib.train.train`: a NaN or infinite loss, or one above ``BLOWUP`` times its first."""
    start = max(0, taken - CHECK_EVERY)
    recent = losses[start:taken]                                               # (≤50, G)
    bad_steps = ~torch.isfinite(recent) | (recent > BLOWUP * losses[0])
    for g in range(recent.shape[1]):
        if g not in stopped and bad_steps[:, g].any():
            bad = int(torch.nonzero(bad_steps[:, g])[0]) + start
            raise TrainingDiverged(f"{name}: member {g} diverged at step {bad} (loss "
                                   f"{float(losses[bad, g])}) with optimizer={optimizer}, lr={lr}")


def seed_groups(configs) -> list[list]:
    """Run configs split into groups that differ only in ``seed`` (order kept, at most
    :data:`MAX_GROUP` each).

    >>> from identlib.config import RunConfig
    >>> [[c.seed for c in g] for g in seed_groups([RunConfig(seed=s, depth=1 + s % 2) for s in range(4)])]
    [[0, 2], [1, 3]]
    """
    groups: dict = {}
    for c in configs:
        groups.setdefault(c.replace(seed=0), []).append(c)
    return [members[i:i + MAX_GROUP] for members in groups.values()
            for i in range(0, len(members), MAX_GROUP)]


def fit_configs(configs, progress=None, callback=None) -> list[tuple[dict, dict]]:
    """For configs that differ only in ``seed``, trained together as one grouped network: per
    config the payload :func:`identlib.experiments.run` would cache and the initial weights, each
    member drawn as :func:`identlib.train.fit` draws it. ``callback`` as in :func:`fit_group`."""
    from .data import training_set
    from .models import build_model
    from .train import one_thread

    c = configs[0]
    gens = [torch.Generator().manual_seed(m.seed) for m in configs]
    models = [build_model(m, g) for m, g in zip(configs, gens)]
    init_states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    x = training_set(c)
    with one_thread():
        trained = fit_group(models, x, x, generators=gens, optimizer=c.optimizer, lr=c.lr,
                            steps=c.steps, momentum=c.momentum, loss_reduction=c.loss_reduction,
                            tol=c.tol, batch_size=c.batch_size, precision=c.precision,
                            progress=progress, name=c.label(), callback=callback)
    return [({"state_dict": state, "loss": torch.from_numpy(out.loss), "converged": out.converged}, init)
            for (out, state), init in zip(trained, init_states)]
