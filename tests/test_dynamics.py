"""Orbits of a trained network applied again and again (identlib.dynamics), on maps whose
orbits are known."""
from __future__ import annotations

import pytest
import torch

import identlib as il
from identlib import dynamics
from identlib.models import build_model


class Map(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.w = f, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.f(x) + 0 * self.w


def _images(n, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_a_contraction_pulls_every_orbit_onto_its_fixed_point():
    x_hat = _images(1, 0)[0]
    f = Map(lambda x: x_hat + 0.5 * (x - x_hat))
    path = dynamics.orbits(f, _images(5, 1), 30)
    d = dynamics.distances(path, x_hat[None])[..., 0]            # (31, 5)
    assert torch.all(d[1:] <= d[:-1] + 1e-12) and d[-1].max() < 1e-6       # float32 rounding floor
    assert torch.allclose(d[1] / d[0], torch.full((5,), 0.5, dtype=d.dtype))
    assert dynamics.basins(path, x_hat[None]).tolist() == [0] * 5
    spec = dynamics.jacobian_spectrum(f, x_hat)
    assert spec["radius"] == pytest.approx(0.5) and spec["from_identity"] == pytest.approx(0.5)


def test_the_identity_attracts_nothing():
    train = _images(2, 2)
    f = Map(lambda x: x)
    starts = _images(3, 3)
    path = dynamics.orbits(f, starts, 5)
    assert torch.equal(path[-1], starts)
    assert dynamics.basins(path, train).tolist() == [-1, -1, -1]
    spec = dynamics.jacobian_spectrum(f, train[0])
    assert spec["radius"] == pytest.approx(1.0) and spec["from_identity"] == pytest.approx(0.0, abs=1e-12)


def test_each_orbit_ends_in_the_basin_of_its_nearest_training_image_under_a_nearest_image_map():
    train = _images(3, 4)

    def snap(x):                                                  # one step to the nearest image
        idx = dynamics.nearest(x, train)
        return train[idx]

    starts = _images(20, 5)
    path = dynamics.orbits(Map(snap), starts, 3)
    assert torch.equal(dynamics.basins(path, train), dynamics.nearest(starts, train))


def test_an_expanding_map_leaves_every_basin():
    f = Map(lambda x: 4.0 * x + 1.0)
    path = dynamics.orbits(f, _images(2, 6), 80)                   # overflows to inf in float32
    assert not torch.isfinite(path[-1]).all()
    assert dynamics.basins(path, _images(1, 7)).tolist() == [-1, -1]


def test_a_one_layer_network_orbits_as_its_closed_form():
    cfg = il.RunConfig(model="fcn", depth=1, activation="linear", dtype="float64")
    net = build_model(cfg, torch.Generator().manual_seed(0))
    R = net.layers[0].weight.detach().clone()
    X = _images(1, 8).double()
    with torch.no_grad():
        net.layers[0].weight.copy_(il.theory.linear_fcn_limit(R, X))
    starts = _images(4, 9).double()
    path = dynamics.orbits(net, starts, 12)
    closed = il.theory.one_layer_iterates(R, X, starts.flatten(1), range(13))["iterates"]
    assert (path.flatten(2).double() - closed).abs().max() < 1e-5     # float32 storage of the orbit


def test_steps_must_not_be_negative():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        dynamics.orbits(Map(lambda x: x), _images(1, 0), -1)


def test_a_homogeneous_map_ends_on_the_ray_of_its_fixed_point_not_at_it():
    """f(x) = relu(⟨x, u⟩) u, u = x̂/|x̂|: positively homogeneous with x̂ fixed, as a network
    without biases that fits x̂. Every orbit lands on the ray of x̂ at its own scale: the distance
    basins miss it, the ray basins find it; an input pointing away from x̂ goes to 0, on no ray."""
    train = _images(2, 6)
    u = train[0].flatten() / train[0].norm()
    f = Map(lambda x: torch.relu(x.flatten(1) @ u)[:, None, None, None] * u.reshape(1, 1, 28, 28))
    starts = torch.stack([2 * train[0], 0.5 * train[0] + 0.1 * train[1]])
    ortho = train[1] - (train[1].flatten() @ u + 0.01) * u.reshape(1, 28, 28)   # ⟨ortho, u⟩ < 0
    path = dynamics.orbits(f, torch.cat([starts, ortho[None]]), 4)
    assert dynamics.basins(path, train, eps=0.01).tolist() == [-1, -1, -1]
    assert dynamics.rays(path, train).tolist() == [0, 0, -1]
    assert dynamics.rays(path, train, min_cosine=1.01).tolist() == [-1, -1, -1]


def test_summary_of_a_contraction_and_of_the_identity():
    x_hat = _images(1, 0)
    starts, tests = _images(4, 1), _images(3, 2)
    pull = Map(lambda x: x_hat + 0.5 * (x - x_hat))
    o = dynamics.summary(pull, starts, x_hat, 30, tests, eps=0.01)
    assert tuple(o.path.shape) == (31, 4, 1, 28, 28) and len(o.curve) == 31
    assert o.row["radius"] == pytest.approx(0.5) and o.row["at_seven"] == 1.0
    assert o.row["fit_error"] == pytest.approx(0.0, abs=1e-7) and o.row["blown_up"] == 0.0
    assert o.curve[0]["at_seven"] == 0.0 and o.curve[-1]["to_seven"] < 1e-6
    same = dynamics.summary(Map(lambda x: x), starts, x_hat, 5, tests)
    assert same.row["verdict"] == "identity" and same.row["radius"] == pytest.approx(1.0)
    assert same.row["at_seven"] == 0.0 and same.row["from_identity"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("homogeneous", [False, True])
def test_basin_table_of_the_map_to_the_nearest_training_image(homogeneous):
    X = _images(3, 3)
    to_nearest = Map(lambda x: X[dynamics.nearest(x, X)])
    tests = _images(40, 4)
    row, confusion = dynamics.basin_table(to_nearest, X, tests, 3, homogeneous=homogeneous,
                                          generator=torch.Generator().manual_seed(0))
    assert row["limit_corr_min"] == pytest.approx(1.0) and row["limit_to_image_max"] == 0.0
    assert row["images_attracting"] == 1.0 and row["reach_one"] == 1.0 and row["reach_nearest"] == 1.0
    assert row["basins_used"] == len(set(dynamics.nearest(tests, X).tolist()))
    assert int(confusion.values.trace()) == len(tests)          # every test image on the diagonal


def test_a_networks_summary_and_basins_are_cached_beside_it(monkeypatch):
    config = il.RunConfig(model="cnn", depth=2, channels=2, steps=5)
    r = il.run(config)
    x_hat, starts, X = _images(1, 0), _images(3, 1), _images(2, 5)
    first = dynamics.summary(r.model, starts, x_hat, 3, starts, config=config)
    row, table = dynamics.basin_table(r.model, X, starts, 3, homogeneous=False,
                                      generator=torch.Generator().manual_seed(0), config=config)
    path = first.path                                           # the orbits, iterated when asked for
    assert torch.equal(path, dynamics.orbits(r.model, starts, 3))
    with monkeypatch.context() as m:
        m.setattr(dynamics, "jacobian_spectrum", lambda *a, **k: pytest.fail("computed again"))
        m.setattr(dynamics, "orbits", lambda *a, **k: pytest.fail("iterated again"))
        m.setattr(dynamics, "_basin_table", lambda *a, **k: pytest.fail("computed again"))
        cached = dynamics.summary(r.model, starts, x_hat, 3, starts, config=config)
        assert cached.row == first.row and cached.curve == first.curve
        assert torch.equal(cached.path, path)                   # ... and stored once they were
        gen = torch.Generator().manual_seed(0)
        again, table2 = dynamics.basin_table(r.model, X, starts, 3, homogeneous=False, generator=gen,
                                             config=config)
        assert again == row and table2.equals(table)
    ref = torch.Generator().manual_seed(0)                      # the noise was drawn all the same
    torch.randn(X.shape, generator=ref)
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=ref))
