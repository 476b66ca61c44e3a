"""The one-layer CNN theory (identlib.theory, paper.md §4) against torch and against trained
networks: the patch matrix is torch's convolution, δ is the identity, and gradient descent lands
on cnn_limit (and follows cnn_after_steps on the way)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from identlib.config import RunConfig
from identlib.experiments import run
from identlib.models import CNN
from identlib.theory import (cnn_after_steps, cnn_error_bound, cnn_heavy_ball, cnn_limit, patch_norms,
                             cnn_test_error, identity_filter, patch_matrix, patch_rank)
from identlib.train import train


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_patch_matrix_is_torch_conv2d(k):
    g = torch.Generator().manual_seed(k)
    for _ in range(3):
        x = torch.rand(1, 1, 28, 28, generator=g, dtype=torch.float64)
        w = torch.randn(1, 1, k, k, generator=g, dtype=torch.float64)
        conv = F.conv2d(x, w, padding=k // 2)
        assert torch.allclose(patch_matrix(x, k) @ w.flatten(), conv.flatten(), atol=1e-12)
        net = CNN(depth=1, kernel_size=k, activation="linear").double()    # identlib's own layer
        with torch.no_grad():
            net.layers[0].weight.copy_(w)
        assert torch.allclose(net(x).flatten(), conv.flatten(), atol=1e-12)


def test_patch_matrix_shape_and_identity_filter():
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    for k in (3, 7, 29):
        P = patch_matrix(x, k)
        assert P.shape == (784, k * k) and P.dtype == torch.float64
        assert torch.equal(P @ identity_filter(k).flatten(), x.flatten().double())
    with pytest.raises(ValueError, match="odd"):
        patch_matrix(x, 4)


def test_patch_rank_is_capped_by_the_number_of_pixels():
    x = torch.rand(28, 28, generator=torch.Generator().manual_seed(0))
    assert patch_rank(x, 5) == 25
    assert patch_rank(x, 29) == 784                          # 841 taps, 784 pixels
    corner = torch.zeros(28, 28)
    corner[0, 0] = 1.0
    assert patch_rank(corner, 5) == 9                        # only the taps that can see (0, 0)


@pytest.mark.parametrize("k", [3, 29])
def test_cnn_limit_fits_x_hat_and_keeps_w0_on_the_null_space(k, data_dir):
    from identlib.data import training_image

    x_hat = training_image(15)
    w0 = torch.randn(k, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w_inf = cnn_limit(w0, x_hat)
    P = patch_matrix(x_hat, k)
    assert torch.allclose(P @ w_inf.flatten(), x_hat.flatten().double(), atol=1e-10)
    null = torch.eye(k * k, dtype=torch.float64) - torch.linalg.pinv(P) @ P     # Π_N
    assert torch.allclose(null @ w_inf.flatten(), null @ w0.flatten(), atol=1e-10)
    if k * k <= 784:                                         # full rank: exactly δ, whatever w0
        assert torch.allclose(w_inf, identity_filter(k), atol=1e-10)
    else:
        assert (w_inf - identity_filter(k)).norm() > 0.1


# --- the oracle: trained one-layer float64 CNNs without bias -----------------------------------

@pytest.mark.parametrize("k", [3, 5])
def test_trained_cnn_matches_cnn_limit(k, data_dir):
    from identlib.data import training_image

    x_hat = training_image(15)
    lr, momentum = cnn_heavy_ball(x_hat, k)
    config = RunConfig(model="cnn", depth=1, kernel_size=k, dtype="float64", optimizer="gd", lr=lr,
                       momentum=momentum, loss_reduction="sum", steps=3000, tol=1e-24)
    trained = run(config, keep_init=True)
    assert trained.converged
    w0 = trained.init_state["layers.0.weight"]
    w = trained.model.layers[0].weight.detach()[0, 0]
    assert (w - cnn_limit(w0, x_hat)).abs().max() <= 1e-6
    assert (w - identity_filter(k)).abs().max() <= 1e-6          # full rank: w∞ = δ


def test_trained_cnn_matches_cnn_limit_when_the_patches_lose_rank():
    """A 3 × 3 random blob in the corner of the frame: a 7 × 7 filter's taps in the last row and
    column never see it, so P(x̂) has rank < 49 and w∞ keeps w₀ there."""
    g = torch.Generator().manual_seed(0)
    x_hat = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    x_hat[0, 0, :3, :3] = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.5
    k = 7
    assert patch_rank(x_hat, k) < k * k - 12
    net = CNN(depth=1, kernel_size=k, activation="linear").double()
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.randn(1, 1, k, k, generator=g, dtype=torch.float64) / k)
    w0 = net.layers[0].weight.detach().clone()
    lr, momentum = cnn_heavy_ball(x_hat, k)
    out = train(net, x_hat, x_hat, optimizer="gd", lr=lr, momentum=momentum, steps=5000,
                loss_reduction="sum", tol=1e-26, progress=False)
    assert out.converged
    w = net.layers[0].weight.detach()[0, 0]
    w_inf = cnn_limit(w0, x_hat)
    assert (w - w_inf).abs().max() <= 1e-6
    assert torch.equal(w[-1], w0[0, 0, -1]) and torch.equal(w[:, -1], w0[0, 0, :, -1])  # never moved
    assert (w_inf - identity_filter(k)).abs().max() > 0.1      # and it is not δ


def test_trained_cnn_follows_cnn_after_steps_at_a_rank_deficient_kernel(data_dir):
    """k = 29 > 28: P(x̂) is 784 × 841, so N has 57 dimensions. Plain gradient descent is far from
    w∞ after 60 steps, but its filter is the closed form w_t, and its part in N is still w₀'s."""
    from identlib.data import training_image

    x_hat = training_image(15)
    k, steps, lr = 29, 60, 1e-4
    config = RunConfig(model="cnn", depth=1, kernel_size=k, dtype="float64", optimizer="gd", lr=lr,
                       loss_reduction="sum", steps=steps)
    trained = run(config, keep_init=True)
    w0 = trained.init_state["layers.0.weight"]
    w = trained.model.layers[0].weight.detach()[0, 0]
    assert (w - cnn_after_steps(w0, x_hat, lr, steps)).abs().max() <= 1e-10
    P = patch_matrix(x_hat, k)
    null = torch.eye(k * k, dtype=torch.float64) - torch.linalg.pinv(P) @ P
    assert (null @ (w.flatten() - cnn_limit(w0, x_hat).flatten())).abs().max() <= 1e-10
    assert patch_rank(x_hat, k) == 784


def test_cnn_after_steps_tends_to_cnn_limit_and_handles_mean_loss(data_dir):
    from identlib.data import training_image

    x_hat = training_image(15)
    w0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    s = torch.linalg.svdvals(patch_matrix(x_hat, 3))
    lr = float(1 / (s[0] ** 2 + s[-1] ** 2))
    assert torch.allclose(cnn_after_steps(w0, x_hat, lr, 0), w0)
    assert torch.allclose(cnn_after_steps(w0, x_hat, lr, 100_000), cnn_limit(w0, x_hat), atol=1e-12)
    assert torch.allclose(cnn_after_steps(w0, x_hat, 784 * lr, 50, "mean"),
                          cnn_after_steps(w0, x_hat, lr, 50, "sum"))


def test_test_error_is_the_patch_matrix_residual_and_within_the_bound(data_dir):
    from identlib.data import test_panel

    panel = test_panel(15)
    x_hat, tests = panel.images[:1], panel.images[1:4]
    k = 29
    w0 = torch.randn(k, k, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / k
    w_inf = cnn_limit(w0, x_hat)
    err = cnn_test_error(w_inf, tests)
    direct = torch.stack([(patch_matrix(x, k) @ (w_inf - identity_filter(k)).flatten()).norm()
                          for x in tests])
    assert torch.allclose(err, direct, atol=1e-10)
    assert (err > 0.01 * tests.flatten(1).norm(dim=1)).all()         # rank-deficient: not the identity
    assert (err <= cnn_error_bound(w0, x_hat, tests) + 1e-12).all()
    w0_small = torch.randn(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert cnn_error_bound(w0_small, x_hat, tests).max() < 1e-10      # full rank: no error at all


def test_the_initial_filter_of_a_run_is_build_models_draw(data_dir):
    """The chapter draws initial filters with build_model and a generator seeded by config.seed,
    as :func:`identlib.run` does, instead of training to get them."""
    from identlib.models import build_model

    config = RunConfig(model="cnn", depth=1, kernel_size=7, dtype="float64", steps=1, seed=4)
    drawn = build_model(config, torch.Generator().manual_seed(config.seed)).layers[0].weight
    assert torch.equal(run(config, keep_init=True).init_state["layers.0.weight"], drawn.detach())


def test_patch_norms_equal_the_spectral_norm_of_each_patch_matrix():
    """The batched Gram-eigenvalue shortcut against one SVD per image, on both sides of k² = 784
    (PᵀP is the smaller Gram below it, PPᵀ above)."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 1, 28, 28, generator=g)
    images[2] = 0
    images[2, 0, 3:9, 20:24] = 1                                      # sparse, like the "7"
    for k in (3, 13, 29, 31):
        exact = torch.stack([torch.linalg.matrix_norm(patch_matrix(x, k), ord=2) for x in images])
        torch.testing.assert_close(patch_norms(images, k), exact, rtol=1e-12, atol=0)
