"""The depth search (identlib.phase): bisection against a scan of every depth, on verdict functions
whose boundaries are known, and on trained networks through the results cache."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

import identlib as il
from identlib import phase
from identlib.config import RunConfig

I, C, N = phase.IDENTITY, phase.CONSTANT, "neither"


def _scan(truth, max_depth):
    """d_id and d_mem read off every depth 1..max_depth (what bisection must find)."""
    seen = {d: truth(d) for d in range(1, max_depth + 1)}
    return phase.boundaries(seen, max_depth)


def _monotone(d_id, d_mem):
    return lambda d: I if d <= d_id else C if d >= d_mem else N


def test_bisection_finds_what_a_scan_of_every_depth_finds_for_every_monotone_verdict():
    max_depth = 24
    cases = [(a, b) for a in range(0, max_depth + 1) for b in range(a + 1, max_depth + 3)]
    truths = {case: _monotone(*case) for case in cases}
    seen = phase.search(cases, lambda pairs: [truths[c](d) for c, d in pairs], start=[5, 20],
                        max_depth=max_depth)
    for case in cases:
        got, want = phase.boundaries(seen[case], max_depth), _scan(truths[case], max_depth)
        assert (got["d_id"], got["d_mem_censored"]) == (want["d_id"], want["d_mem_censored"]), case
        assert got["d_mem"] == want["d_mem"] or (math.isnan(got["d_mem"]) and math.isnan(want["d_mem"])), case
        assert got["out_of_order"] == [] and got["d_id_censored"] == (case[0] >= max_depth)
        # at most about two bisections' worth of networks
        assert got["n_evaluated"] <= 2 + 1 + 2 * math.ceil(math.log2(max_depth)), case


def test_a_boundary_beyond_the_search_is_censored_not_guessed():
    seen = phase.search(["a"], lambda pairs: [_monotone(3, 99)(d) for _, d in pairs], start=[5, 20],
                        max_depth=30)["a"]
    b = phase.boundaries(seen, 30)
    assert b["d_id"] == 3 and math.isnan(b["d_mem"]) and b["d_mem_censored"]
    assert max(seen) == 30                       # it looked as deep as it was allowed to


def test_verdicts_out_of_order_are_reported_where_the_search_sees_them():
    truth = {5: I, 20: C, 12: N, 8: I, 16: I, 10: I, 18: C, 11: N, 17: C}
    seen = phase.search(["a"], lambda pairs: [truth[d] for _, d in pairs], start=[5, 20],
                        max_depth=20)["a"]
    b = phase.boundaries(seen, 20)
    assert (b["d_id"], b["d_mem"]) == (10, 17) and b["out_of_order"] == [16]
    # what the bisection does not evaluate it cannot report: here depth 8 breaks the order, but
    # the search goes 12, 16, 14, 13 and never trains it
    truth = {5: I, 20: C, 12: I, 8: N, 16: C, 14: C, 13: C}
    seen = phase.search(["a"], lambda pairs: [truth[d] for _, d in pairs], start=[5, 20],
                        max_depth=20)["a"]
    assert sorted(seen) == [5, 12, 13, 14, 16, 20] and phase.boundaries(seen, 20)["out_of_order"] == []
    # and a constant below a network that is not
    b = phase.boundaries({3: I, 6: C, 9: N, 12: C}, 20)
    assert (b["d_id"], b["d_mem"], b["out_of_order"]) == (3, 12, [6])


def test_random_verdicts_always_end_in_consistent_boundaries():
    rng = random.Random(0)
    for trial in range(200):
        table = {d: rng.choice([I, C, N, "not fitted"]) for d in range(1, 17)}
        seen = phase.search(["a"], lambda pairs: [table[d] for _, d in pairs], start=[4, 12],
                            max_depth=16)["a"]
        b = phase.boundaries(seen, 16)
        depths = sorted(seen)
        assert all(seen[d] == I for d in depths if d <= b["d_id"])
        assert all(seen[d] == C for d in depths if d >= b["d_mem"])
        above = [d for d in depths if d > b["d_id"]]
        assert not above or above[0] == b["d_id"] + 1 or seen.get(b["d_id"] + 1) is not None
        if not math.isnan(b["d_mem"]):
            below = [d for d in depths if d < b["d_mem"]]
            assert not below or below[-1] == b["d_mem"] - 1


def test_bad_start_depths_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"start depths must lie in 1\.\.max_depth=10"):
        phase.search(["a"], lambda pairs: [], start=[5, 20], max_depth=10)


def test_cells_summarize_seeds_with_censored_depths_as_infinite():
    import pandas as pd

    lines = pd.DataFrame([dict(k=k, seed=s, d_id=d, d_mem=m, out_of_order=o) for k, s, d, m, o in
                          [(3, 0, 4, float("nan"), []), (3, 1, 5, float("nan"), []),
                           (5, 0, 6, 12.0, []), (5, 1, 8, 14.0, [9])]])
    c = phase.cells(lines, ["k"]).set_index("k")
    assert c.loc[3, "d_mem_median"] == math.inf and math.isnan(c.loc[3, "d_mem_spread"])
    assert (c.loc[5, "d_mem_median"], c.loc[5, "d_mem_spread"], c.loc[5, "d_id_spread"]) == (13.0, 2.0, 2.0)
    assert c.n_out_of_order.tolist() == [0, 1] and c.n_seeds.tolist() == [2, 2]


def test_depth_search_trains_each_network_once_and_reads_its_outcome():
    base = RunConfig(model="cnn", channels=2, kernel_size=3, activation="relu", bias=True,
                     init="default", optimizer="gd", lr=0.01, momentum=0.9, steps=20)
    x_hat = il.training_image(15)[None]          # (1, 1, 28, 28)
    inputs = torch.cat([x_hat, il.test_images("mnist", 3)])
    bases = [base.replace(seed=s) for s in (0, 1)]
    nets, lines = phase.depth_search(bases, inputs, x_hat=x_hat, start=[2], max_depth=4,
                                     fields=["seed"], family=["train"] + ["MNIST"] * 3)
    assert lines.seed.tolist() == [0, 1]
    # every network evaluated is one row, with an outcome from identlib's verdict or "not fitted"
    assert len(nets) == lines.n_evaluated.sum() and set(nets.outcome) <= {
        "identity", "constant", "neither", "mostly identity", "mostly constant", "not fitted"}
    for line in lines.itertuples():
        mine = nets[nets.seed == line.seed]
        assert sorted(mine.depth) == line.depths
        b = phase.boundaries(dict(zip(mine.depth, mine.outcome)), 4)
        assert b["d_id"] == line.d_id and b["d_mem_censored"] == line.d_mem_censored
    # 20 steps are too few to memorize: no network outputs the "7"
    assert "constant" not in set(nets.outcome) and lines.d_mem_censored.all()
    assert (nets.outcome == "not fitted").any()  # the deepest do not even fit the "7"
    again, _ = phase.depth_search(bases, inputs, x_hat=x_hat, start=[2], max_depth=4,
                                  fields=["seed"], family=["train"] + ["MNIST"] * 3)
    assert again.equals(nets)                    # from the cache
    with pytest.raises(ValueError, match="loss_reduction 'mean'"):
        phase.depth_search([base.replace(loss_reduction="sum")], inputs, x_hat=x_hat, start=[2],
                           max_depth=4)
