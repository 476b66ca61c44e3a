"""identlib.train: convergence, reductions, optimizers, minibatches, divergence, progress."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from identlib.train import TrainingDiverged, TrainResult, make_optimizer, train


def linear(dim=4, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, dim, bias=False)


def inputs(n=3, dim=4, seed=0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_converges_on_a_tiny_linear_problem():
    x = inputs()
    out = train(linear(), x, x, lr=0.2, steps=5000, tol=1e-8, progress=False)
    assert isinstance(out, TrainResult)
    assert out.converged and out.steps < 5000
    assert out.steps % 50 == 0                    # tol is checked every 50 steps
    assert out.loss[-1] < 1e-8
    assert len(out.loss) == out.steps and out.loss.dtype == np.float64


def test_without_tol_runs_every_step_and_does_not_claim_convergence():
    x = inputs()
    out = train(linear(), x, x, lr=0.2, steps=120, progress=False)
    assert out.steps == 120 and len(out.loss) == 120 and not out.converged


def test_converged_when_tol_reached_on_last_step():
    x = inputs()
    out = train(linear(), x, x, lr=0.2, steps=30, tol=1e3, progress=False)
    assert out.converged and out.steps == 30


def test_loss_history_is_the_loss_before_each_step():
    x = inputs()
    net = linear()
    first = float(((net(x) - x) ** 2).mean().detach())
    out = train(net, x, x, lr=0.1, steps=60, progress=False)
    assert out.loss[0] == pytest.approx(first, rel=1e-6)
    assert out.loss[-1] < out.loss[0]
    assert not net.training                       # left in eval mode


def test_sum_reduction_is_mean_times_element_count():
    x = inputs(n=3, dim=4)
    net = linear()
    mean = train(copy.deepcopy(net), x, x, steps=1, loss_reduction="mean", progress=False)
    total = train(copy.deepcopy(net), x, x, steps=1, loss_reduction="sum", progress=False)
    assert total.loss[0] == pytest.approx(12 * mean.loss[0], rel=1e-6)


def test_sum_reduction_takes_larger_steps():
    x = inputs(n=3, dim=4)
    net = linear()
    mean = train(copy.deepcopy(net), x, x, lr=0.01, steps=2, loss_reduction="mean", progress=False)
    total = train(copy.deepcopy(net), x, x, lr=0.01, steps=2, loss_reduction="sum", progress=False)
    drop = lambda r: (r.loss[0] - r.loss[1]) / r.loss[0]
    assert drop(total) > drop(mean) > 0


@pytest.mark.parametrize("optimizer, lr, batch_size", [("sgd", 0.2, 2), ("sgd", 0.2, 3), ("adam", 0.01, 2),
                                                       ("adam", 0.01, 0), ("gd", 0.2, 0)])
def test_optimizers_reduce_loss_on_several_inputs(optimizer, lr, batch_size):
    x = inputs(n=8)
    out = train(linear(), x, x, optimizer=optimizer, lr=lr, steps=300, batch_size=batch_size,
                generator=torch.Generator().manual_seed(0), progress=False)
    assert out.steps == 300
    assert out.loss[-20:].mean() < 0.1 * out.loss[0]


def test_minibatch_order_follows_generator():
    x = inputs(n=8)
    net = linear()

    def losses(seed):
        return train(copy.deepcopy(net), x, x, optimizer="sgd", lr=0.1, steps=20, batch_size=2,
                     generator=torch.Generator().manual_seed(seed), progress=False).loss

    assert np.array_equal(losses(0), losses(0))
    assert not np.array_equal(losses(0), losses(1))


def test_minibatch_losses_are_on_batches_not_full_set():
    x = inputs(n=8)
    net = linear()
    full = train(copy.deepcopy(net), x, x, optimizer="sgd", steps=1, progress=False)
    batch = train(copy.deepcopy(net), x, x, optimizer="sgd", steps=1, batch_size=2,
                  generator=torch.Generator().manual_seed(0), progress=False)
    assert full.loss[0] != batch.loss[0]


def test_momentum_changes_the_trajectory():
    x = inputs()
    net = linear()
    plain = train(copy.deepcopy(net), x, x, lr=0.05, steps=10, progress=False)
    heavy = train(copy.deepcopy(net), x, x, lr=0.05, steps=10, momentum=0.9, progress=False)
    assert plain.loss[1] == heavy.loss[1]         # the first step is the same
    assert plain.loss[-1] != heavy.loss[-1]


def test_huge_lr_raises_training_diverged_naming_run():
    x = inputs()
    with pytest.raises(TrainingDiverged) as err:
        train(linear(), x, x, lr=1e6, steps=200, name="fcn-linear-d1-w784", progress=False)
    msg = str(err.value)
    assert "smaller lr" in msg and "fcn-linear-d1-w784" in msg and "lr=1000000.0" in msg
    assert isinstance(err.value, FloatingPointError)


def test_divergence_in_last_partial_window_is_caught():
    x = inputs()
    with pytest.raises(TrainingDiverged):
        train(linear(), x, x, lr=1e6, steps=30, progress=False)


def test_unknown_optimizer_raises():
    with pytest.raises(ValueError, match="rmsprop"):
        make_optimizer("rmsprop", linear().parameters(), lr=0.1)


def test_progress_false_prints_nothing(capsys):
    x = inputs()
    train(linear(), x, x, steps=60, progress=False, name="quiet-run")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_true_writes_bar_to_stderr(capsys):
    x = inputs()
    train(linear(), x, x, steps=60, progress=True, name="loud-run")
    captured = capsys.readouterr()
    assert "loud-run" in captured.err and captured.out == ""


def test_progress_env_variable(capsys, monkeypatch):
    x = inputs()
    monkeypatch.setenv("IDENTLIB_PROGRESS", "1")
    train(linear(), x, x, steps=10, name="env-run")
    assert "env-run" in capsys.readouterr().err
    monkeypatch.setenv("IDENTLIB_PROGRESS", "0")
    train(linear(), x, x, steps=10, name="env-run")
    assert capsys.readouterr().err == ""


def test_a_loss_that_explodes_without_nan_counts_as_diverged():
    from identlib.train import TrainingDiverged, train

    net = torch.nn.Linear(4, 4, bias=False)
    x = torch.ones(1, 4)
    with pytest.raises(TrainingDiverged, match="smaller lr"):
        train(net, x, x, optimizer="gd", lr=2.0, steps=100, name="spike")   # error x(-3) a step


def test_callback_sees_every_step_and_changes_nothing():
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    seen = {}
    train(a, x, x, optimizer="gd", lr=0.05, momentum=0.9, steps=7)
    train(b, x, x, optimizer="gd", lr=0.05, momentum=0.9, steps=7,
          callback=lambda t, m: seen.setdefault(t, m.weight.detach().clone()))
    assert sorted(seen) == list(range(1, 8))
    assert torch.equal(a.weight, b.weight) and torch.equal(seen[7], b.weight)
