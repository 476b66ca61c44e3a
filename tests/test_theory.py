"""identlib.theory, and the oracle: trained linear FCNs land exactly on the closed form."""
from __future__ import annotations

import pytest
import torch

import identlib
import identlib as il
from identlib import data
from identlib.config import RunConfig
from identlib.theory import linear_fcn_limit, projectors

gen = torch.Generator().manual_seed(0)
X3 = torch.rand(3, 1, 28, 28, generator=gen, dtype=torch.float64)
R = torch.randn(784, 784, generator=gen, dtype=torch.float64) / 28
I = torch.eye(784, dtype=torch.float64)


def test_docstring_example():
    X = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    R2 = torch.tensor([[0.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    assert torch.equal(linear_fcn_limit(R2, X), torch.tensor([[1.0, 2.0], [0.0, 4.0]], dtype=torch.float64))


@pytest.mark.parametrize("X", [X3[:1], X3], ids=["one image", "three images"])
def test_projectors_are_complementary_orthogonal_projectors(X):
    par, perp = projectors(X)
    for P in (par, perp):
        assert torch.allclose(P @ P, P, atol=1e-10)
        assert torch.allclose(P, P.T, atol=1e-12)
    assert torch.allclose(par + perp, I)
    assert torch.allclose(par @ perp, torch.zeros_like(I), atol=1e-10)
    assert round(float(torch.trace(par))) == len(X)           # rank = number of images
    cols = X.flatten(1).T
    assert torch.allclose(par @ cols, cols, atol=1e-10)


@pytest.mark.parametrize("X", [X3[:1], X3], ids=["one image", "three images"])
def test_limit_is_identity_on_span_and_R_on_complement(X):
    W = linear_fcn_limit(R, X)
    cols = X.flatten(1).T
    assert torch.allclose(W @ cols, cols, atol=1e-10)
    par, perp = projectors(X)
    v = perp @ torch.randn(784, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(W @ v, R @ v, atol=1e-10)
    assert torch.allclose(W, par + R @ perp, atol=1e-10)


def test_limit_accepts_columns_or_images():
    cols = X3.flatten(1).T
    assert torch.allclose(linear_fcn_limit(R, cols), linear_fcn_limit(R, X3))


# --- the oracle ----------------------------------------------------------------------------------

def trained_vs_theory(cfg: RunConfig, X: torch.Tensor) -> tuple[float, float]:
    run = identlib.run(cfg, keep_init=True)
    R0 = run.init_state["layers.0.weight"]
    W = run.model.layers[0].weight.detach()
    return run.final_loss, float((W - linear_fcn_limit(R0, X)).abs().max())


def test_oracle_one_image():
    cfg = RunConfig(model="fcn", depth=1, dtype="float64", optimizer="gd", lr=0.005,
                    loss_reduction="sum", steps=300)
    loss, gap = trained_vs_theory(cfg, data.training_image().unsqueeze(0))
    assert loss < 1e-20
    assert gap <= 1e-6


def test_oracle_three_images():
    cfg = RunConfig(model="fcn", depth=1, dtype="float64", optimizer="gd", lr=0.002,
                    loss_reduction="sum", steps=400, n_train=3)
    X = identlib.experiments.training_set(cfg)
    first3 = torch.tensor(data.load("mnist", "train")[0][:3], dtype=torch.float32) / 255
    assert X.shape == (3, 1, 28, 28) and torch.equal(X[:, 0].float(), first3)
    loss, gap = trained_vs_theory(cfg, X)
    assert loss < 1e-20
    assert gap <= 1e-6


def test_oracle_detects_a_wrong_init():
    """The check is not vacuous: the limit from a different R is far from the trained W."""
    cfg = RunConfig(model="fcn", depth=1, dtype="float64", optimizer="gd", lr=0.005,
                    loss_reduction="sum", steps=300)
    run = identlib.run(cfg, keep_init=True)
    W = run.model.layers[0].weight.detach()
    other = identlib.run(cfg.replace(seed=1), keep_init=True).init_state["layers.0.weight"]
    assert float((W - linear_fcn_limit(other, data.training_image().unsqueeze(0))).abs().max()) > 1e-2


def test_end_to_end_is_the_product_of_the_layers():
    from identlib.config import RunConfig
    from identlib.models import build_model
    from identlib.theory import end_to_end

    net = build_model(RunConfig(model="fcn", depth=3, width=16, dtype="float64"),
                      torch.Generator().manual_seed(0))
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    assert torch.allclose(net(x).flatten(1), x.flatten(1) @ end_to_end(net).T)


def test_leftover_rms_matches_the_init_gain_for_random_products():
    from identlib.theory import init_gain, leftover_rms

    g = torch.Generator().manual_seed(0)
    x_hat = torch.rand(1, 1, 28, 28, generator=g, dtype=torch.float64)
    bound = 1 / 784 ** 0.5                        # PyTorch's default: U(-1/sqrt(fan_in), +)
    W = torch.eye(784, dtype=torch.float64)
    for _ in range(3):
        W = (torch.rand(784, 784, generator=g, dtype=torch.float64) * 2 - 1) * bound @ W
    assert leftover_rms(W, x_hat) == pytest.approx(init_gain("default") ** 3, rel=0.05)
    assert leftover_rms(torch.eye(784, dtype=torch.float64), x_hat) == pytest.approx(1.0)


def test_remaining_error_follows_gradient_descent_direction_by_direction():
    from identlib.theory import remaining_error

    g = torch.Generator().manual_seed(0)
    X = torch.zeros(784, 3, dtype=torch.float64)
    X[:3, :3] = torch.diag(torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64))   # spans 3 pixels
    R = torch.randn(784, 784, generator=g, dtype=torch.float64) / 28
    W, eta, steps = R.clone(), 0.1, 20
    for _ in range(steps):                      # gradient descent on the mean over images of ||Wx - x||^2 / 2
        W -= eta * (W @ X - X) @ X.T / X.shape[1]
    lam, left = remaining_error(W, R, X)
    assert torch.allclose(lam[:3], torch.tensor([9.0, 1.0, 0.09], dtype=torch.float64) / 3)
    assert torch.allclose(left[:3], (1 - eta * lam[:3]) ** steps, atol=1e-9)
    assert torch.allclose(left[3:], torch.ones(781, dtype=torch.float64))   # unspanned: still R


def test_input_jacobian_of_a_linear_network_is_its_matrix_and_iterate_applies_it():
    from identlib.config import RunConfig
    from identlib.models import build_model
    from identlib.theory import end_to_end, input_jacobian, iterate

    net = build_model(RunConfig(model="fcn", depth=2, width=32, dtype="float64"), torch.Generator().manual_seed(0))
    x = torch.rand(1, 28, 28, dtype=torch.float64)
    W = end_to_end(net)
    assert torch.allclose(input_jacobian(net, x), W)
    path = iterate(net, x, 2)
    assert path.shape == (3, 1, 28, 28)
    assert torch.allclose(path[2].double().flatten(), W @ W @ x.flatten(), atol=1e-5)


def test_projectors_with_more_images_than_pixels_equal_the_plain_pseudo_inverse():
    """The QR shortcut for n > d against X X⁺ computed directly, on a rank-deficient set like
    MNIST's (some pixels black in every image, so their directions are unspanned)."""
    g = torch.Generator().manual_seed(2)
    X = torch.rand(2000, 1, 28, 28, generator=g, dtype=torch.float64)
    X[..., :3, :] = 0                                         # 84 pixels never lit: rank 700
    X[..., 10, 10] = X[..., 11, 11]                           # and one exact linear dependence
    par, perp = projectors(X)
    cols = X.flatten(1).T
    direct = cols @ torch.linalg.pinv(cols)
    assert torch.allclose(par, direct, atol=1e-10)
    assert round(float(torch.trace(par))) == 784 - 84 - 1
    assert torch.allclose(par @ cols, cols, atol=1e-10)
    assert torch.allclose(par + perp, I)


def test_one_layer_iterates_match_applying_the_map_again_and_again():
    gen = torch.Generator().manual_seed(0)
    d = 30
    X = torch.rand(d, 2, generator=gen, dtype=torch.float64)          # two training images
    R = (torch.rand(d, d, generator=gen, dtype=torch.float64) - 0.5) * 0.4
    W = il.theory.linear_fcn_limit(R, X)
    x = torch.rand(4, d, generator=gen, dtype=torch.float64)
    out = il.theory.one_layer_iterates(R, X, x, [0, 1, 7, 40])
    for i, n in enumerate([0, 1, 7, 40]):
        direct = (torch.linalg.matrix_power(W, n) @ x.T).T
        assert torch.allclose(out["iterates"][i], direct, atol=1e-10)
    assert out["radius"] < 1
    far = (torch.linalg.matrix_power(W, 400) @ x.T).T
    assert torch.allclose(out["limit"], far, atol=1e-10)
    par, _ = il.theory.projectors(X)
    assert torch.allclose(out["limit"] @ par.T, out["limit"], atol=1e-10)   # the limit lies in the span


def test_one_layer_iterates_diverge_off_the_span_when_R_expands():
    gen = torch.Generator().manual_seed(1)
    d = 20
    X = torch.rand(d, 1, generator=gen, dtype=torch.float64)
    R = 3.0 * torch.eye(d, dtype=torch.float64)
    out = il.theory.one_layer_iterates(R, X, torch.rand(d, generator=gen, dtype=torch.float64), [0, 5, 10])
    assert out["limit"] is None and out["radius"] == pytest.approx(3.0)
    _, perp = il.theory.projectors(X)
    off = (out["iterates"] @ perp.T).norm(dim=-1)[:, 0]
    assert off[2] / off[1] == pytest.approx(3.0 ** 5, rel=1e-9)


def test_a_trained_one_layer_network_iterates_as_its_closed_form():
    """The trained float64 network of the linear chapter's recipe, applied 20 times to test
    inputs, follows the closed form built from its own initial matrix R."""
    cfg = il.RunConfig(model="fcn", depth=1, activation="linear", dtype="float64", optimizer="gd",
                       lr=0.0003, loss_reduction="sum", steps=3000, tol=1e-20)
    r = il.run(cfg, cache=False, keep_init=True)
    R = r.init_state["layers.0.weight"]
    X = il.experiments.training_set(cfg)
    inputs = il.test_panel().images[1:4]
    closed = il.theory.one_layer_iterates(R, X, inputs.flatten(1), [20])["iterates"][0]
    numeric = torch.stack([il.theory.iterate(r.model, x, 20)[-1].flatten().double() for x in inputs])
    assert (closed - numeric).abs().max() < 1e-5
