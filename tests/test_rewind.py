"""Checkpoints along training (identlib.checkpoints) and networks with some layers rewound to them
(identlib.rewind), checked against training a network plainly and against rebuilding each
rewound network whole."""
from __future__ import annotations

import pytest
import torch

import identlib as il
from identlib import cache, checkpoints, rewind
from identlib.config import RunConfig, source_digest

CNN = RunConfig(model="cnn", depth=4, channels=4, steps=30, lr=0.01, momentum=0.9, bias=True)
FCN = RunConfig(depth=3, width=32, steps=400, optimizer="gd", lr=3e-4, loss_reduction="sum", tol=1e-3)


def _images(n, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_checkpoints_are_the_weights_of_plain_training_at_those_steps():
    ck = checkpoints.record(CNN, [0, 10, 20])
    assert ck.steps == [0, 10, 20, 30] and ck.taken == 30
    assert all(torch.equal(ck.state(0)[k], v) for k, v in il.build_model(CNN).state_dict().items())
    shorter = il.experiments.fit(CNN.replace(steps=10))[0].state_dict()    # the same draw, 10 steps
    assert all(torch.equal(ck.state(10)[k], v) for k, v in shorter.items())
    trained = il.run(CNN)                           # stored by record(): not trained again
    assert all(torch.equal(ck.states[-1][k], v) for k, v in trained.model.state_dict().items())
    assert len(ck.loss) == 30 and float(ck.loss[-1]) == pytest.approx(trained.final_loss)


def test_checkpoints_come_back_from_the_cache_without_training(monkeypatch):
    first = checkpoints.record(CNN, [0, 15])
    monkeypatch.setattr(checkpoints, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = checkpoints.record(CNN, [15, 0])        # the same steps, in another order
    assert again.steps == first.steps and torch.equal(again.states[1]["layers.0.weight"],
                                                      first.states[1]["layers.0.weight"])
    assert any(p.name.startswith("checkpoints-") and source_digest("checkpoints") in p.name
               for p in cache.entry(CNN).iterdir())


def test_a_training_that_stops_early_keeps_its_final_weights_for_later_steps():
    ck = checkpoints.record(FCN, [0, 50, 399], cache=False)
    assert ck.taken < 399 and ck.steps == [0, 50, ck.taken]          # converged: step 399 not kept
    assert ck.state(399) is ck.states[-1] and ck.state(FCN.steps) is ck.states[-1]
    with pytest.raises(ValueError, match="was not recorded"):
        ck.state(7)


@pytest.mark.parametrize("at", [[-1, 5], [0, 31], []])
def test_steps_outside_training_are_refused_in_one_line(at):
    with pytest.raises(ValueError, match=r"checkpoint steps must lie in 0\.\.30"):
        checkpoints.record(CNN, at)


def test_record_all_in_worker_processes_matches_recording_here(monkeypatch):
    configs = [CNN.replace(seed=s) for s in (0, 1)]
    pooled = checkpoints.record_all(configs, [0, 10], workers=2)
    for c, ck in zip(configs, pooled):
        here = checkpoints.record(c, [0, 10], cache=False)
        assert ck.config == c and ck.steps == here.steps
        for a, b in zip(ck.states, here.states):
            assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("config", [CNN, FCN.replace(tol=0.0, steps=20)])
def test_rewind_scores_equal_scoring_each_rewound_network_whole(config):
    ck = checkpoints.record(config, [0, 5, 10], cache=False)
    x = _images(6)
    x_hat = _images(1, 1)
    df = rewind.rewind_scores(ck, x, x_hat)
    depth = config.depth
    assert len(df) == 2 * depth * len(ck.steps)
    for row in df.itertuples():
        net = rewind.rewound(ck, row.k, row.step, row.direction)
        s = il.scores(il.predict(net, x), x, x_hat)
        assert row.corr_identity == pytest.approx(float(s["corr_identity"].mean()), abs=1e-5)
        assert row.corr_constant == pytest.approx(float(s["corr_constant"].mean()), abs=1e-5)
        assert row.verdict == il.verdict(row.corr_identity, row.corr_constant)
    # k = depth is the network at that checkpoint, whichever end is rewound
    whole = df[df.k == depth].pivot(index="step", columns="direction", values="corr_identity")
    assert (whole["first"] - whole["last"]).abs().max() < 1e-9


def test_rewound_replaces_exactly_the_chosen_layers():
    ck = checkpoints.record(CNN, [0], cache=False)
    net = rewind.rewound(ck, 1, 0, "last")
    state, trained, initial = net.state_dict(), ck.states[-1], ck.state(0)
    for name in state:
        expected = initial if name.startswith(f"layers.{CNN.depth - 1}.") else trained
        assert torch.equal(state[name], expected[name]), name
    first = rewind.rewound(ck, 2, 0, "first").state_dict()
    assert torch.equal(first["layers.1.bias"], initial["layers.1.bias"])
    assert torch.equal(first["layers.2.weight"], trained["layers.2.weight"])
    with pytest.raises(ValueError, match="direction must be one of last, first"):
        rewind.rewound(ck, 1, 0, "middle")
    with pytest.raises(ValueError, match=r"k must lie in 0\.\.4"):
        rewind.rewound(ck, 5, 0)


def test_layer_change_is_the_relative_distance_from_the_initial_weights():
    ck = checkpoints.record(CNN, [0, 10], cache=False)
    df = rewind.layer_change(ck)
    assert sorted(set(df.step)) == [0, 10, 30] and sorted(set(df.layer)) == [1, 2, 3, 4]
    assert (df[df.step == 0].change == 0).all()
    w0, w = ck.state(0)["layers.2.weight"], ck.states[-1]["layers.2.weight"]
    expected = float((w - w0).double().norm() / w0.double().norm())
    assert df[(df.step == 30) & (df.layer == 3)].change.item() == pytest.approx(expected)


def test_rewind_scores_are_cached_beside_the_network(monkeypatch):
    ck = checkpoints.record(CNN, [0, 10])
    x, x_hat = _images(4), _images(1, 1)
    first = rewind.rewind_scores(ck, x, x_hat)
    monkeypatch.setattr(rewind, "_rewind_scores", lambda *a: pytest.fail("scored again"))
    assert rewind.rewind_scores(ck, x, x_hat).equals(first)
    monkeypatch.undo()
    other = rewind.rewind_scores(ck, _images(4, 2), x_hat)          # other images: scored anew
    assert not other.equals(first)
    with pytest.raises(ValueError, match="direction must be one of last, first"):
        rewind.rewind_scores(ck, x, x_hat, ["down"])
