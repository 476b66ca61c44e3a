"""Where along depth a CNN stops being the identity and starts to memorize: for one setting and
seed (a *line*), ``d_id``, the largest depth up to which every network is the identity, and
``d_mem``, the smallest depth from which every network outputs the "7".

The depths are found by bisection over depth, not by a dense grid (:func:`next_depths`): every
line starts from a few depths, and each round evaluates the midpoint of each gap that still hides
a boundary, so a line costs a handful of networks instead of one per depth. The verdict need not
be monotone in depth; the depths that break the order (an identity deeper than a network that is
not, a "7" shallower than one that is not) are reported (:func:`boundaries`), though bisection only
sees those it happens to evaluate. :func:`search` runs the rounds for many lines at once, so that
each round trains its networks together (grouped, in the results cache, reusable by any chapter).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

__all__ = ["IDENTITY", "CONSTANT", "scale_key", "span", "next_depths", "boundaries", "search", "outcome",
           "depth_search", "cells", "receptive_field", "within", "fit_field"]

IDENTITY, CONSTANT = "identity", "constant"   # the verdicts of identlib.verdict that set d_id, d_mem


def _d_id(seen: dict[int, str]) -> int:
    """The largest depth up to which every evaluated depth is the identity (0: not even the
    shallowest)."""
    d_id = 0
    for d in sorted(seen):
        if seen[d] != IDENTITY:
            break
        d_id = d
    return d_id


def _d_mem(seen: dict[int, str]) -> float:
    """The smallest depth from which every evaluated depth is the constant (nan: not the deepest)."""
    d_mem = math.nan
    for d in sorted(seen, reverse=True):
        if seen[d] != CONSTANT:
            break
        d_mem = d
    return d_mem


def next_depths(seen: dict[int, str], max_depth: int) -> list[int]:
    """The depths one line evaluates next, given the verdict at each depth it has ``seen``: the
    midpoint of the gap above ``d_id`` (below the shallowest evaluated depth, down to depth 1),
    the midpoint of the gap below ``d_mem``, and ``max_depth`` while the deepest evaluated depth
    is neither the constant nor ``max_depth``. Empty once both boundaries are exact (or lie
    beyond ``max_depth``).

    >>> next_depths({5: "identity", 20: "constant"}, 30)
    [12]
    >>> next_depths({5: "identity", 12: "neither", 20: "constant"}, 30)
    [8, 16]
    >>> next_depths({5: "identity", 6: "neither", 7: "constant"}, 30)
    []
    >>> next_depths({5: "neither", 20: "neither"}, 30)
    [2, 30]
    """
    if not seen:
        raise ValueError("next_depths needs at least one evaluated depth (the search's start)")
    depths = sorted(seen)
    want = set()
    d_id = _d_id(seen)
    above = [d for d in depths if d > d_id]
    if above and above[0] - d_id > 1:
        want.add((d_id + above[0]) // 2 or 1)
    elif not above and d_id < max_depth:
        want.add(max_depth)
    if seen[depths[-1]] != CONSTANT:
        if depths[-1] < max_depth:
            want.add(max_depth)
    else:
        d_mem = int(_d_mem(seen))
        below = [d for d in depths if d < d_mem]
        low = below[-1] if below else 0
        if d_mem - low > 1:
            want.add((low + d_mem) // 2 or 1)
    return sorted(want - set(seen))


def boundaries(seen: dict[int, str], max_depth: int) -> dict:
    """One line's result: ``d_id`` and ``d_mem`` (nan where no evaluated depth up to
    ``max_depth`` memorizes), whether each is censored (``d_id`` at ``max_depth``, ``d_mem``
    beyond it), the evaluated depths, and ``out_of_order``: the evaluated depths whose verdict
    breaks the monotone picture (the identity above a depth that is not, or the constant below a
    depth that is not).

    >>> r = boundaries({1: "identity", 5: "identity", 7: "neither", 9: "identity", 12: "constant"}, 20)
    >>> r["d_id"], r["d_mem"], r["out_of_order"]
    (5, 12, [9])
    """
    d_id, d_mem = _d_id(seen), _d_mem(seen)
    out = [d for d in sorted(seen)
           if (d > d_id and seen[d] == IDENTITY) or (not d >= d_mem and seen[d] == CONSTANT)]
    return {"d_id": d_id, "d_mem": d_mem, "d_id_censored": d_id >= max_depth,
            "d_mem_censored": math.isnan(d_mem), "n_evaluated": len(seen),
            "depths": sorted(seen), "out_of_order": out}


def search(lines: Iterable, evaluate: Callable[[list], list[str]], *, start: Iterable[int],
           max_depth: int, max_rounds: int = 32) -> dict:
    """Bisect every line at once. ``lines`` are hashable keys (for example configs without a
    depth); ``evaluate`` takes a list of ``(line, depth)`` pairs and returns their verdicts, in
    order (one call per round, so that a round's networks train together). Returns, per line, the
    verdict at each depth it evaluated (``{line: {depth: verdict}}``); :func:`boundaries` reads
    the depths from it.

    >>> truth = lambda d: "identity" if d <= 6 else "constant" if d >= 11 else "neither"
    >>> calls = []
    >>> def evaluate(pairs):
    ...     calls.append(len(pairs))
    ...     return [truth(d) for _, d in pairs]
    >>> seen = search(["a"], evaluate, start=[5, 20], max_depth=24)
    >>> b = boundaries(seen["a"], 24)
    >>> b["d_id"], b["d_mem"], b["n_evaluated"], len(calls)
    (6, 11, 8, 5)
    """
    start = sorted({int(d) for d in start})
    if not start or start[0] < 1 or start[-1] > max_depth:
        raise ValueError(f"search: start depths must lie in 1..max_depth={max_depth} (got {start})")
    seen: dict = {line: {} for line in dict.fromkeys(lines)}
    todo = [(line, d) for line in seen for d in start]
    for _ in range(max_rounds):
        if not todo:
            return seen
        for (line, d), verdict in zip(todo, evaluate(todo), strict=True):
            seen[line][d] = verdict
        todo = [(line, d) for line in seen for d in next_depths(seen[line], max_depth)]
    raise RuntimeError(f"search: still bisecting after {max_rounds} rounds; raise max_rounds")


def receptive_field(depth: int, kernel_size: int) -> int:
    """Pixels across that one output pixel of a ``depth``-layer CNN with ``kernel_size`` filters
    sees: ``depth (kernel_size - 1) + 1``.

    >>> receptive_field(20, 5)
    81
    """
    return depth * (kernel_size - 1) + 1


def outcome(rows, x_hat) -> str:
    """One network's verdict from its rows of a score table (:func:`identlib.sweep`, with
    ``diverged="report"``): "diverged"; "not fitted" (its final training loss per pixel above half
    the variance of the training image: it did not learn even that); otherwise
    :func:`identlib.verdict` of its mean correlations over the inputs."""
    from .metrics import verdict

    if "diverged" in rows and bool(rows.diverged.iloc[0]):
        return "diverged"
    if rows.final_loss.iloc[0] > 0.5 * x_hat.var().item():
        return "not fitted"
    return verdict(rows.corr_identity.mean(), rows.corr_constant.mean())


def depth_search(bases, inputs, *, x_hat, start, max_depth: int, fields=(), **columns):
    """:func:`search` over trained CNNs: each of ``bases`` (run configs, their depth ignored) is a
    line, and each round trains (or loads) and scores its networks with one :func:`identlib.sweep`
    on ``inputs`` (``columns`` label them, as in :func:`identlib.sweep`). Returns the table of
    every evaluated network (one row per network: ``fields``, ``depth``, the mean correlations,
    the final loss and :func:`outcome`) and the table of lines (``fields`` and
    :func:`boundaries`). The mean squared error loss is per pixel (``loss_reduction`` "mean")."""
    import pandas as pd

    from .experiments import sweep

    bases = list(dict.fromkeys(b.replace(depth=1) for b in bases))
    if any(b.loss_reduction != "mean" for b in bases):
        raise ValueError("depth_search reads the final loss per pixel: use loss_reduction 'mean'")
    rows = []

    def evaluate(pairs):
        configs = [line.replace(depth=d) for line, d in pairs]
        table = sweep(configs, inputs, x_hat=x_hat, diverged="report", **columns)
        out = []
        per_net = table.groupby(table.index // len(inputs), sort=True)     # in the configs' order
        for c, (_, net) in zip(configs, per_net, strict=True):
            out.append(outcome(net, x_hat))
            rows.append({**{f: getattr(c, f) for f in fields}, "depth": c.depth,
                         "corr_identity": net.corr_identity.mean(),
                         "corr_constant": net.corr_constant.mean(),
                         "final_loss": net.final_loss.iloc[0], "outcome": out[-1]})
        return out

    seen = search(bases, evaluate, start=start, max_depth=max_depth)
    lines = pd.DataFrame([{**{f: getattr(b, f) for f in fields}, **boundaries(seen[b], max_depth)}
                          for b in bases])
    nets = pd.DataFrame(rows).sort_values([*fields, "depth"], ignore_index=True)
    return nets, lines


def cells(lines, by) -> "pd.DataFrame":
    """Per cell of ``by`` (for example channels and kernel size), over its seeds: the median,
    least and largest ``d_id`` and ``d_mem``, with a ``d_mem`` beyond the search counted as
    infinite (so a median or maximum may be ``inf``), each boundary's spread (largest − least),
    the seeds and how many lines had depths out of order.

    >>> import pandas as pd
    >>> lines = pd.DataFrame({"k": [3, 3, 3], "d_id": [5, 6, 8], "d_mem": [9.0, float("nan"), 12.0],
    ...                       "out_of_order": [[], [7], []]})
    >>> columns = ["d_id_median", "d_mem_median", "d_mem_max", "d_mem_spread", "n_out_of_order"]
    >>> cells(lines, ["k"])[columns].values.tolist()
    [[6.0, 12.0, inf, inf, 1.0]]
    """
    import numpy as np

    lines = lines.assign(d_mem=lines.d_mem.fillna(np.inf), n_out=lines.out_of_order.map(len).gt(0))
    g = lines.groupby(list(by))
    out = g.d_id.agg(d_id_median="median", d_id_min="min", d_id_max="max")
    out = out.join(g.d_mem.agg(d_mem_median="median", d_mem_min="min", d_mem_max="max"))
    out["d_id_spread"] = out.d_id_max - out.d_id_min
    out["d_mem_spread"] = out.d_mem_max - out.d_mem_min     # inf: some seeds beyond the search;
                                                            # nan: all of them
    out["n_seeds"] = g.size()
    out["n_out_of_order"] = g.n_out.sum().astype(int)
    return out.reset_index()


def scale_key(init_scale: float) -> str:
    """The part of a glue name that names a scale of the initial weights (a glue name holds no dot).

    >>> [scale_key(s) for s in (0.5, 1.0, 2.0)]
    ['s05', 's1', 's2']
    """
    return f"s{init_scale:g}".replace(".", "")


def span(depths, max_depth: int | None = None) -> str:
    """How the prose gives one boundary over several seeds: the depth, or "least to largest". A
    ``d_mem`` beyond the search (NaN) is left out, and where every seed's is, the span is
    "> max_depth".

    >>> span([6, 6]), span([17, 19, 18]), span([12, float("nan")], 20), span([float("nan")], 20)
    ('6', '17 to 19', '12', '> 20')
    """
    import pandas as pd

    d = pd.Series(depths, dtype=float).dropna()
    if d.empty:
        return f"> {max_depth}"
    return f"{d.min():g}" if d.min() == d.max() else f"{d.min():g} to {d.max():g}"


def within(kernel_size: int, size: int = 28) -> int:
    """The largest depth whose :func:`receptive_field` is still smaller than an image of ``size``
    pixels across: deeper, an output pixel at the centre sees the image's border.

    >>> within(5), within(7), within(3)
    (6, 4, 13)
    """
    return -(-(size - 1) // (kernel_size - 1)) - 1


def fit_field(depths, kernel_sizes) -> float:
    """The receptive field R for which ``depth ≈ (R − 1) / (kernel_size − 1)`` fits ``depths``
    best (least squares in depth): a boundary that sits at one receptive field, whatever the
    filter size.

    >>> fit_field([19, 9.5], [5, 9])             # both at R = 77
    77.0
    """
    import numpy as np

    d, x = np.asarray(depths, float), 1.0 / (np.asarray(kernel_sizes, float) - 1)
    return float(1 + (d * x).sum() / (x * x).sum())
