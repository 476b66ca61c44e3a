"""The fast path of training: several networks trained at once as one grouped network, and the
precision a run computes in.

Stacking the weights of G networks turns them into one. For CNNs of one width, kernel and
activation, a hidden layer becomes one grouped convolution (``groups=G``), whatever each member's
depth (:class:`GroupedCNN`); for FCNs of one shape a layer becomes one batched matrix product. The
loss is the *sum* of the members' losses, each its own mean or sum, so each member's gradient is
exactly its own; Adam and (momentum) gradient descent act element by element, so each member's
update is its own too, with its own learning rate and momentum under gradient descent
(:class:`_MemberSGD`). Member g's trained weights, loss history and convergence are what training
it alone gives, up to float rounding (``tests/test_engine.py`` checks this); where training is
chaotic (a ReLU switched off by a rounding difference), the two can part, as they do between CPUs.

Grouping pays for small CNNs, whose steps are mostly per-operation overhead (about 2.5 times for
8-channel networks, 1.3 for 16 channels); it is about even for 128 channels and does not pay for
FCNs, whose steps are bound by memory (the Runtime chapter). A grouped CNN of at most
:data:`CHANNELS_LAST_MAX` channels keeps its activations channels-last, where oneDNN's grouped
convolution is faster (bench/memory_format.py); the arithmetic is the same, in another order.
:func:`identlib.run_all` and :func:`identlib.sweep` train CNNs in groups (:func:`group_key`, :func:`fit_configs`), unless
``$IDENTLIB_GROUP=0``; each cached network records its group size.

A member that reaches ``tol``, or its own number of steps, stops where a lone run would stop: its
weights are copied out at that step, and the group trains on until every member has stopped.

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

__all__ = ["GroupedCNN", "GroupedFCN", "stack", "fit_group", "fit_configs", "group_key", "seed_groups",
           "MAX_GROUP"]

MAX_GROUP = 8   # members per grouped network (bounds the memory one group needs)
# The widest member (channels) whose grouped network keeps its activations channels-last (NHWC):
# oneDNN's grouped convolution is 1.5 to 3 times faster so at 4 channels, 1.0 to 1.15 at 8, and
# about even at 16 (bench/memory_format.py)
CHANNELS_LAST_MAX = 8


class _Grouped(nn.Module):
    """G FCNs of one shape as one module. Inputs and outputs are member-first:
    (G, B, 1, 28, 28), or (1, B, 1, 28, 28) for one batch shared by every member (as for
    :class:`GroupedCNN`)."""

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

    def member_rows(self):
        """(parameter, the member of each of its rows) for every parameter: rows are members."""
        params = list(self.weights) + (list(self.biases) if self.biases is not None else [])
        return [(p, torch.arange(self.G)) for p in params]

    def member_state(self, g: int) -> dict:
        """Member g's weights as the state dict of the network it was stacked from."""
        out = {}
        for i, w in enumerate(self.weights):
            out[f"layers.{i}.weight"] = self._member(w, g).detach().clone().contiguous()
            if self.biases is not None:
                out[f"layers.{i}.bias"] = self._member(self.biases[i], g).detach().clone()
        return out


class GroupedCNN(nn.Module):
    """G CNNs of one width, kernel and activation, of any depths, as one network.

    Members are ranked deepest first. Hidden layer i of every member deeper than i + 1 is one
    convolution: ``hidden[i]`` stacks those members' weights ((A_i·c_out, c_in, k, k), A_i members),
    applied with ``groups=A_i``, or as one plain convolution for a shared input at i = 0. Because
    of the ranking, the members still running at layer i are the first A_i, so each one's channels
    are a fixed slice of the activations. A member's last layer (one output channel) is its own
    convolution (``heads``): oneDNN's grouped kernel is many times slower there than G plain ones.
    """

    def __init__(self, members: list[CNN]):
        super().__init__()
        self.G = len(members)
        self.activation = members[0].act
        conv = members[0].layers[0]
        self.k, self.padding_mode = conv.kernel_size[0], conv.padding_mode
        depths = [len(m.layers) for m in members]
        self.order = sorted(range(self.G), key=lambda g: -depths[g])     # rank -> member
        self.rank = {g: r for r, g in enumerate(self.order)}             # member -> rank
        self.depths = [depths[g] for g in self.order]                    # non-increasing
        ranked = [members[g] for g in self.order]
        self.c = ranked[0].layers[0].out_channels if self.depths[0] > 1 else 1
        has_bias = conv.bias is not None

        def stacked(i, attr):
            return nn.Parameter(torch.cat([getattr(m.layers[i], attr).detach() for m, d in
                                           zip(ranked, self.depths) if d > i + 1]))

        n_hidden = self.depths[0] - 1
        self.hidden = nn.ParameterList(stacked(i, "weight") for i in range(n_hidden))
        self.hidden_b = nn.ParameterList(stacked(i, "bias") for i in range(n_hidden)) if has_bias else None
        self.heads = nn.ParameterList(nn.Parameter(m.layers[-1].weight.detach().clone()) for m in ranked)
        self.heads_b = (nn.ParameterList(nn.Parameter(m.layers[-1].bias.detach().clone()) for m in ranked)
                        if has_bias else None)
        self.running = [sum(d > i + 1 for d in self.depths) for i in range(n_hidden)]   # A_i
        order = torch.tensor(self.order)
        self.rows = [order[torch.arange(a).repeat_interleave(self.c)] for a in self.running]
        self.ending = [[r for r, d in enumerate(self.depths) if d == i + 1] for i in range(self.depths[0])]
        self.channels_last = self.c <= CHANNELS_LAST_MAX      # the layout of the hidden activations

    def member_rows(self):
        """(parameter, the member of each of its rows) for every parameter."""
        out = [(w, rows) for w, rows in zip(self.hidden, self.rows)]
        if self.hidden_b is not None:
            out += [(b, rows) for b, rows in zip(self.hidden_b, self.rows)]
        out += [(w, torch.tensor([g])) for w, g in zip(self.heads, self.order)]
        if self.heads_b is not None:
            out += [(b, torch.tensor([g])) for b, g in zip(self.heads_b, self.order)]
        return out

    def member_state(self, g: int) -> dict:
        """Member g's weights as the state dict of the network it was stacked from."""
        r, c = self.rank[g], self.c
        last = self.depths[r] - 1
        out = {}
        for i in range(last):
            out[f"layers.{i}.weight"] = self.hidden[i][r * c:(r + 1) * c].detach().clone().contiguous()
            if self.hidden_b is not None:
                out[f"layers.{i}.bias"] = self.hidden_b[i][r * c:(r + 1) * c].detach().clone()
        out[f"layers.{last}.weight"] = self.heads[r].detach().clone().contiguous()
        if self.heads_b is not None:
            out[f"layers.{last}.bias"] = self.heads_b[r].detach().clone()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x.shape[0] == 1
        if shared:
            h = x[0]                                                        # (B, 1, 28, 28)
        else:                                                               # (B, G, 28, 28), ranked
            h = x.squeeze(2).transpose(0, 1)[:, self.order]
        c, outs = self.c, [None] * self.G
        for i in range(self.depths[0]):
            for r in self.ending[i]:                # members whose last layer this is
                src = h if (i == 0 and shared) else h[:, r:r + 1] if i == 0 else h[:, r * c:(r + 1) * c]
                outs[r] = self._conv(src, self.heads[r], None if self.heads_b is None else self.heads_b[r])
            if i == len(self.running) or self.running[i] == 0:
                break
            a = self.running[i]
            b = None if self.hidden_b is None else self.hidden_b[i]
            if i == 0:
                h = self._conv(h, self.hidden[0], b, 1) if shared else self._conv(h[:, :a], self.hidden[0], b, a)
            else:
                h = self._conv(h[:, :a * c], self.hidden[i], b, a)
            if i == 0 and self.channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
            h = self.activation(h)                                          # (B, A_i·c, 28, 28)
        return torch.stack([outs[self.rank[g]] for g in range(self.G)])     # (G, B, 1, 28, 28)

    def _conv(self, h, w, b, groups=1):
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


def stack(members) -> nn.Module:
    """One grouped network: from CNNs of one width (any depths), or FCNs of one shape."""
    kinds = {type(m) for m in members}
    if kinds == {CNN}:
        return GroupedCNN(members)
    if kinds == {FCN}:
        return GroupedFCN(members)
    raise TypeError(f"can stack only CNNs or only FCNs (got {', '.join(k.__name__ for k in kinds)})")


def fit_group(members, inputs: torch.Tensor, targets: torch.Tensor, *, generators, optimizer: str = "gd",
              lr=0.01, steps: int = 1000, momentum=0.0, loss_reduction="mean",
              tol: float = 0.0, batch_size: int = 0, precision: str = "float32",
              progress: bool | None = None, name: str = "group", callback=None,
              member_steps=None, diverged: str = "raise") -> list:
    """Train ``members`` (networks of one shape) as :func:`identlib.train.train` would train each
    alone, with the same arguments; member g draws its minibatches from ``generators[g]``.

    Returns, per member, its :class:`~identlib.train.TrainResult` and trained state dict. If a
    member diverges (by the rule of ``train``), :class:`~identlib.train.TrainingDiverged` is raised,
    naming the group; train the members alone to find which one. ``callback(t, group)``, if given,
    is called after each step t = 1, 2, ... with the grouped network (the benchmarks time steps
    with it). ``member_steps[g]``, if given, is member g's own number of steps (at most
    ``steps``): its weights are copied out there, as where it reaches ``tol``.

    ``lr``, ``momentum`` and ``loss_reduction`` may also be one value per member. A member's loss
    is then its own reduction of its squared errors, and for "gd" and "sgd" its update uses its own
    learning rate and momentum (:class:`_MemberSGD`, the arithmetic of ``torch.optim.SGD``); Adam
    takes one ``lr``. ``diverged="drop"`` stops a diverging member instead of raising: its entry in
    the result is ``None`` and the others train on (a member's arithmetic never touches another's).
    """
    group = stack(members).to(inputs.device)
    G, n = group.G, len(inputs)
    if diverged not in ("raise", "drop"):
        raise ValueError(f'diverged must be "raise" or "drop" (got {diverged!r})')
    lrs, moms, reductions = (_per_member(v, G, what) for v, what in
                             ((lr, "lr"), (momentum, "momentum"), (loss_reduction, "loss_reduction")))
    if len(set(lrs)) > 1 and optimizer == "adam":
        raise ValueError("Adam trains a group with one lr; group Adam runs by lr")
    member_steps = [steps] * G if member_steps is None else list(member_steps)
    if len(member_steps) != G or not all(1 <= s <= steps for s in member_steps):
        raise ValueError(f"member_steps must give each of the {G} members 1 to {steps} steps")
    ends: dict[int, list[int]] = {}                 # step -> members whose own training ends there
    for g, s in enumerate(member_steps):
        if s < steps:
            ends.setdefault(s, []).append(g)
    full = batch_size <= 0 or batch_size >= n
    if len(set(lrs)) == 1 and len(set(moms)) == 1:
        opt = make_optimizer(optimizer, group.parameters(), lrs[0], moms[0])
    else:
        opt = _MemberSGD(group.member_rows(), lrs, moms)
    numel = targets[0].numel() * (n if full else batch_size)              # squared errors per member
    scale = None if len(set(reductions)) == 1 else torch.tensor(
        [1.0 / numel if r == "mean" else 1.0 for r in reductions], device=inputs.device)
    losses = torch.zeros(steps, G, dtype=torch.float64, device=inputs.device)
    stopped: dict[int, tuple[int, dict]] = {}       # member -> (steps taken, weights) once stopped
    at_steps: set[int] = set()                       # members stopped at their own steps, not tol
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
                idx = orders[:, cursor:cursor + batch_size].to(inputs.device)  # (G, b)
                cursor += batch_size
                x, y = inputs[idx], targets[idx]                               # (G, b, 1, 28, 28)
            with autocast(precision, inputs.device.type):
                out = group(x)                                                 # (G, B, 1, 28, 28)
            err = (out.to(y.dtype) - y).square().flatten(1)                    # (G, B·784)
            if scale is None:
                member_loss = err.mean(1) if reductions[0] == "mean" else err.sum(1)   # (G,)
            else:
                member_loss = err.sum(1) * scale
            opt.zero_grad(set_to_none=True)
            member_loss.sum().backward()
            opt.step()
            losses[step] = member_loss.detach()
            taken = step + 1
            if callback is not None:
                callback(taken, group)
            if taken in ends:
                _check(losses, taken, stopped, name, optimizer, lrs, diverged, ends[taken])
                for g in ends[taken]:
                    if g not in stopped:
                        stopped[g] = (taken, _on_cpu(group.member_state(g)))
                        at_steps.add(g)
                if len(stopped) == G:
                    break
            if taken % CHECK_EVERY == 0 or taken == steps:
                _check(losses, taken, stopped, name, optimizer, lrs, diverged)
                if tol > 0:
                    for g in range(G):
                        if g not in stopped and float(losses[taken - 1, g]) < tol:
                            stopped[g] = (taken, _on_cpu(group.member_state(g)))
                if bar is not None:
                    bar.update(taken - bar.n)
                if len(stopped) == G:
                    break
    finally:
        if bar is not None:
            bar.close()
    out = []
    for g in range(G):
        if stopped.get(g, (0, {}))[1] is None:      # dropped: it diverged
            out.append(None)
            continue
        steps_g, state = stopped.get(g, (taken, None))
        history = losses[:steps_g, g].cpu().numpy()
        converged = (g in stopped and g not in at_steps) or bool(
            tol > 0 and steps_g and math.isfinite(history[-1]) and history[-1] < tol)
        out.append((TrainResult(loss=history, steps=steps_g, converged=converged),
                    state if state is not None else _on_cpu(group.member_state(g))))
    return out


def _on_cpu(state: dict) -> dict:
    """A member's state dict with CPU tensors (a copy where it lived on a GPU)."""
    return {k: v.cpu() for k, v in state.items()}


def _check(losses, taken, stopped, name, optimizer, lrs, diverged="raise", members=None) -> None:
    """Find the members still training (of ``members``, default all) that diverged in the last
    ``CHECK_EVERY`` steps, by the rule of :func:`identlib.train.train`: a NaN or infinite loss, or
    one above ``BLOWUP`` times its first. Raise for the first, or (``diverged="drop"``) stop each."""
    start = max(0, taken - CHECK_EVERY)
    recent = losses[start:taken]                                               # (≤50, G)
    bad_steps = ~torch.isfinite(recent) | (recent > BLOWUP * losses[0])
    for g in range(recent.shape[1]) if members is None else members:
        if g not in stopped and bad_steps[:, g].any():
            if diverged == "drop":
                stopped[g] = (taken, None)
                continue
            bad = int(torch.nonzero(bad_steps[:, g])[0]) + start
            raise TrainingDiverged(f"{name}: member {g} diverged at step {bad} (loss "
                                   f"{float(losses[bad, g])}) with optimizer={optimizer}, lr={lrs[g]}")


def _per_member(value, G: int, what: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * G
    if len(values) != G:
        raise ValueError(f"{what} must be one value or one per member ({G})")
    return values


class _MemberSGD:
    """Gradient descent with momentum, each member with its own learning rate and momentum: the
    arithmetic of ``torch.optim.SGD`` (the momentum buffer starts as the first gradient, then
    ``buf = momentum·buf + grad``; ``w -= lr·buf``), with both as per-row tensors."""

    def __init__(self, rows, lrs, momentums):
        self.items = []
        for p, members in rows:                       # members: the member of each row of p
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = torch.tensor(lrs, dtype=p.dtype)[members].view(shape).to(p.device)
            mu = torch.tensor(momentums, dtype=p.dtype)[members].view(shape).to(p.device)
            self.items.append((p, lr, mu, bool((mu != 0).any())))
        self.buffers: dict[int, torch.Tensor] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p, *_ in self.items:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, (p, lr, mu, has_momentum) in enumerate(self.items):
            d = p.grad
            if has_momentum:
                if i not in self.buffers:
                    self.buffers[i] = d.clone()
                else:
                    self.buffers[i].mul_(mu).add_(d)
                d = self.buffers[i]
            p.sub_(lr * d)


def group_key(config):
    """What configs trained together in one group share: every field but those a member may have
    of its own. Those are where training starts (``seed``, ``init``, ``init_scale``), its loss
    (``loss_reduction``), for CNNs ``depth`` (:class:`GroupedCNN` holds members of any depth), and
    for gradient descent ``lr`` and ``momentum`` (:class:`_MemberSGD`). Not ``steps``: a group
    trains as long as its longest member, so a short member would cost as much as a long one.
    ``None`` for a config that is trained alone: an FCN, whose step reads every weight from memory
    once, grouped or not, so that grouping does not pay (the Runtime chapter).

    >>> from identlib.config import RunConfig
    >>> a = RunConfig(model="cnn", depth=5, seed=1, optimizer="gd", lr=0.01)
    >>> b = RunConfig(model="cnn", depth=9, init="he", optimizer="gd", lr=0.02, momentum=0.9)
    >>> group_key(a) == group_key(b), group_key(b) == group_key(b.replace(optimizer="adam"))
    (True, False)
    >>> group_key(RunConfig(model="fcn")) is None
    True
    """
    if config.model != "cnn":
        return None
    return config.replace(**_free(config))


def _free(config) -> dict:
    """The fields in which members of one group may differ, set to a common value."""
    free = dict(seed=0, init="default", init_scale=1.0, loss_reduction="mean")
    if config.model == "cnn":
        free["depth"] = 1
    if config.optimizer in ("gd", "sgd"):
        free.update(lr=1.0, momentum=0.0)
    return free


def seed_groups(configs) -> list[list]:
    """Run configs split into groups that differ only in ``seed`` (order kept, at most
    :data:`MAX_GROUP` each): the groups of the benchmark's seed cases.

    >>> from identlib.config import RunConfig
    >>> [[c.seed for c in g] for g in seed_groups([RunConfig(seed=s, depth=1 + s % 2) for s in range(4)])]
    [[0, 2], [1, 3]]
    """
    groups: dict = {}
    for c in configs:
        groups.setdefault(c.replace(seed=0), []).append(c)
    return [members[i:i + MAX_GROUP] for members in groups.values()
            for i in range(0, len(members), MAX_GROUP)]


def fit_configs(configs, progress=None, callback=None, diverged: str = "raise") -> list:
    """Configs of one :func:`group_key` (or FCNs of one depth that could share one), trained
    together as one grouped network, each for its own steps: per config the payload
    :func:`identlib.experiments.run` would cache and the initial weights, each member drawn as
    :func:`identlib.train.fit` draws it. ``callback`` and ``diverged`` as in :func:`fit_group`
    (a dropped member's entry is ``None``)."""
    from .data import training_set
    from .models import build_model
    from .runtime import device
    from .train import one_thread

    configs = list(configs)
    c = configs[0]
    if len({m.replace(steps=1, **_free(m)) for m in configs}) > 1:
        raise ValueError("fit_configs trains together only configs that differ in seed, init, "
                         "init_scale, loss_reduction, steps, (for CNNs) depth and (for gd and sgd) "
                         "lr and momentum; train the others in their own groups")
    gens = [torch.Generator().manual_seed(m.seed) for m in configs]
    models = [build_model(m, g) for m, g in zip(configs, gens)]
    init_states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    x = training_set(c).to(device())
    with one_thread():
        trained = fit_group(models, x, x, generators=gens, optimizer=c.optimizer,
                            lr=[m.lr for m in configs], steps=max(m.steps for m in configs),
                            momentum=[m.momentum for m in configs],
                            loss_reduction=[m.loss_reduction for m in configs], tol=c.tol,
                            batch_size=c.batch_size, precision=c.precision, progress=progress,
                            name=_group_name(configs), callback=callback,
                            member_steps=[m.steps for m in configs], diverged=diverged)
    return [None if member is None else
            ({"state_dict": member[1], "loss": torch.from_numpy(member[0].loss),
              "converged": member[0].converged}, init)
            for member, init in zip(trained, init_states)]


def _group_name(configs) -> str:
    """A group's name in messages: its members' labels and seeds."""
    return "group of " + ", ".join(f"{m.label()} seed {m.seed}" for m in configs)
