"""identlib.layers: layer maps, their fairness, where a pattern is, snapshots over training."""
from __future__ import annotations

import pytest
import torch

from identlib import experiments, layers
from identlib.config import RunConfig
from identlib.models import build_model

gen = torch.Generator().manual_seed(0)
images = torch.rand(3, 1, 28, 28, generator=gen)
SMALL = RunConfig(model="cnn", depth=4, channels=4, activation="relu", bias=True, init="default",
                  optimizer="gd", momentum=0.9, lr=0.01, steps=6, seed=0)


def net(config=SMALL):
    return build_model(config, torch.Generator().manual_seed(config.seed))


def test_hidden_states_end_with_the_output():
    model = net()
    hs = layers.hidden_states(model, images)
    assert [tuple(h.shape) for h in hs] == [(3, 4, 28, 28)] * 3 + [(3, 1, 28, 28)]
    assert torch.equal(hs[-1], model(images).detach())


def test_principal_component_captures_at_least_the_mean_and_is_the_top_eigenvalue():
    h = layers.hidden_states(net(), images)[1]                        # (3, 4, 28, 28)
    pc_map, pc = layers.channel_summary(h, "pc")
    mean_map, mean = layers.channel_summary(h, "mean")
    x = h.permute(0, 2, 3, 1).reshape(-1, 4).double()
    eig = torch.linalg.eigvalsh(torch.cov(x.T, correction=0))
    assert pc == pytest.approx(float(eig[-1] / eig.sum()), rel=1e-9)
    assert pc >= mean - 1e-12
    assert torch.allclose(mean_map, h.mean(1), atol=1e-6)
    assert float((pc_map.flatten() @ torch.ones(3 * 784))) > 0     # signed towards the activations


def test_unknown_summary_is_refused():
    with pytest.raises(ValueError, match="summary must be one of pc, mean"):
        layers.channel_summary(torch.rand(1, 2, 28, 28), "max")


def test_input_share_and_spatial_std_limits():
    same = torch.rand(1, 2, 28, 28, generator=gen).expand(5, 2, 28, 28)
    assert layers.input_share(same) == 0.0
    assert layers.spatial_std(torch.full((2, 3, 28, 28), 7.0)) == 0.0
    assert layers.spatial_std(same) > 0


def test_ring_measures_locate_a_frame():
    frame = torch.zeros(28, 28)
    frame[:2, :] = 1.0                                                # structure within 2 px of the border
    assert layers.border_distance()[frame.bool()].max() == 1
    prof = layers.ring_profile(frame, width=2)
    assert prof[0] == 1.0 and prof[1:].abs().max() == 0
    target = torch.rand(28, 28, generator=gen)
    corr = layers.ring_correlation(torch.stack([target, -target]), target, width=2)
    assert corr.shape == (2, 7)
    assert torch.allclose(corr[0], torch.ones(7, dtype=corr.dtype)) and torch.allclose(corr[1], -torch.ones(7, dtype=corr.dtype))
    blank = torch.zeros(28, 28)
    blank[14, 14] = 1.0                                               # uniform in every band but the centre
    assert torch.isnan(layers.ring_correlation(target[None], blank, width=2)[0, :-1]).all()


def test_training_maps_match_a_run_and_are_cached(monkeypatch):
    snaps = layers.training_maps(SMALL, [0, 3, 6], images)
    assert sorted(snaps) == [0, 3, 6]
    assert torch.equal(snaps[0].maps, layers.layer_maps(net(), images).maps)          # step 0: the init
    run = experiments.run(SMALL)                                      # stored by training_maps, not retrained
    monkeypatch.setattr(experiments, "_train", lambda *a, **k: pytest.fail("retrained"))
    assert torch.allclose(snaps[6].maps, layers.layer_maps(experiments.run(SMALL).model, images).maps)
    assert torch.allclose(snaps[6].maps, layers.layer_maps(run.model, images).maps)
    monkeypatch.setattr(layers, "fit", lambda *a, **k: pytest.fail("not cached"))
    again = layers.training_maps(SMALL, [6, 3, 0], images)
    assert all(torch.equal(again[t].maps, snaps[t].maps) for t in (0, 3, 6))


def test_training_maps_equal_an_ordinary_run_trained_from_scratch():
    snaps = layers.training_maps(SMALL, [SMALL.steps], images)
    fresh = experiments.run(SMALL.replace(seed=0), cache=False)
    assert torch.allclose(snaps[SMALL.steps].maps, layers.layer_maps(fresh.model, images).maps, atol=1e-6)


def test_recorded_steps_must_lie_in_training():
    with pytest.raises(ValueError, match="steps to record"):
        layers.training_maps(SMALL, [0, SMALL.steps + 1], images)
