"""identlib.models: architectures, parameter counts, seeded initialization."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from identlib.config import CHOICES, RunConfig
from identlib.models import CNN, FCN, build_model, n_weights

x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def build(seed=0, **kw) -> nn.Module:
    defaults = {"width": 32, "channels": 4}
    return build_model(RunConfig(**{**defaults, **kw}), torch.Generator().manual_seed(seed))


def weights(net) -> list[torch.Tensor]:
    return [layer.weight.detach() for layer in net.layers]


@pytest.mark.parametrize("model", ["fcn", "cnn"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_output_has_input_shape_and_depth_layers(model, depth):
    net = build(model=model, depth=depth, activation="relu")
    assert net(x).shape == (2, 1, 28, 28)
    assert len(net.layers) == depth
    out, hidden = net(x, return_hidden=True)
    assert len(hidden) == depth and torch.equal(hidden[-1].view_as(out), out)


def test_fcn_hidden_width():
    net = build(model="fcn", depth=3, width=32)
    assert [(l.in_features, l.out_features) for l in net.layers] == [(784, 32), (32, 32), (32, 784)]


def test_cnn_hidden_channels_and_kernel():
    net = build(model="cnn", depth=3, channels=4, kernel_size=3)
    assert [(l.in_channels, l.out_channels) for l in net.layers] == [(1, 4), (4, 4), (4, 1)]
    assert all(l.kernel_size == (3, 3) and l.padding == (1, 1) for l in net.layers)


def test_cnn_depth_1_is_one_single_channel_conv():
    net = build(model="cnn", depth=1, kernel_size=5)
    (conv,) = net.layers
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (1, 1, 5, 5)
    assert n_weights(net) == 25


@pytest.mark.parametrize("model", ["fcn", "cnn"])
def test_no_bias_by_default(model):
    assert all(l.bias is None for l in build(model=model, depth=3).layers)


def test_relu_between_layers_but_not_after_last():
    net = build(model="fcn", depth=3, activation="relu")
    out, hidden = net(x, return_hidden=True)
    assert all((h >= 0).all() for h in hidden[:-1])
    assert (out < 0).any()


def test_linear_fcn_is_product_of_its_matrices():
    net = build(model="fcn", depth=3, dtype="float64")
    w1, w2, w3 = weights(net)
    xd = x.double()
    assert torch.allclose(net(xd).flatten(1), xd.flatten(1) @ (w3 @ w2 @ w1).T)


@pytest.mark.parametrize("padding", CHOICES["padding"])
def test_cnn_padding_modes_keep_size(padding):
    net = build(model="cnn", depth=2, padding=padding)
    assert net(x).shape == x.shape


def test_circular_cnn_commutes_with_shifts():
    net = build(model="cnn", depth=3, padding="circular", activation="relu", dtype="float64")
    xd = x.double()
    shifted = torch.roll(xd, shifts=(3, -5), dims=(2, 3))
    assert torch.allclose(net(shifted), torch.roll(net(xd), shifts=(3, -5), dims=(2, 3)))


# --- parameter counts ----------------------------------------------------------------------------

def fcn_count(depth, width):
    return 784 * 784 if depth == 1 else 2 * 784 * width + (depth - 2) * width ** 2


def cnn_count(depth, channels, k):
    return k * k if depth == 1 else k * k * (2 * channels + (depth - 2) * channels ** 2)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_n_weights_matches_formula(depth):
    assert n_weights(build(model="fcn", depth=depth, width=16)) == fcn_count(depth, 16)
    assert n_weights(build(model="cnn", depth=depth, channels=4, kernel_size=3)) == cnn_count(depth, 4, 3)


def test_n_weights_counts_biases():
    net = build(model="fcn", depth=2, width=16, bias=True)
    assert n_weights(net) == fcn_count(2, 16) + 16 + 784


def test_paper_cnn_has_78_694_400_weights():
    assert cnn_count(5, 1024, 5) == 78_694_400
    with torch.device("meta"):                    # shapes only, no memory
        net = CNN(depth=5, channels=1024, kernel_size=5)
    assert n_weights(net) == 78_694_400


def test_three_layer_cnn_count_by_hand():
    # 1*8*25 + 8*8*25 + 8*1*25 (the models.py docstring says 1800; the sum is 2000)
    assert n_weights(build(model="cnn", depth=3, channels=8)) == 2000


# --- initialization ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["fcn", "cnn"])
def test_same_seed_same_weights_other_seed_different(model):
    a, b, c = build(0, model=model, depth=3), build(0, model=model, depth=3), build(1, model=model, depth=3)
    assert all(torch.equal(u, v) for u, v in zip(weights(a), weights(b)))
    assert not any(torch.equal(u, w) for u, w in zip(weights(a), weights(c)))


def test_initialization_ignores_global_rng():
    torch.manual_seed(123)
    a = build(0, model="cnn", depth=2)
    torch.manual_seed(456)
    b = build(0, model="cnn", depth=2)
    assert all(torch.equal(u, v) for u, v in zip(weights(a), weights(b)))


@pytest.mark.parametrize("scheme", CHOICES["init"])
def test_init_scale_multiplies_weights(scheme):
    one = build(0, model="fcn", depth=2, init=scheme)
    three = build(0, model="fcn", depth=2, init=scheme, init_scale=3.0)
    assert all(torch.allclose(3 * u, v) for u, v in zip(weights(one), weights(three)))


@pytest.mark.parametrize("model", ["fcn", "cnn"])
@pytest.mark.parametrize("scheme", CHOICES["init"])
def test_every_init_scheme_gives_finite_nonzero_weights_and_zero_biases(model, scheme):
    net = build(model=model, depth=3, init=scheme, bias=True)
    for layer in net.layers:
        assert torch.isfinite(layer.weight).all() and layer.weight.std() > 0
        if scheme != "default":
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_xavier_uniform_bound():
    w = weights(build(model="fcn", depth=2, width=32))[0]
    bound = math.sqrt(6 / (784 + 32))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound


def test_orthogonal_init_has_orthonormal_rows():
    w = weights(build(model="fcn", depth=2, width=32, init="orthogonal", dtype="float64"))[0]
    assert torch.allclose(w @ w.T, torch.eye(32, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("model, fan_in", [("fcn", 784), ("cnn", 25)])
def test_default_init_with_bias_gives_nonzero_biases_in_pytorch_bound(model, fan_in):
    net = build(model=model, depth=2, init="default", bias=True)
    bias = net.layers[0].bias
    assert (bias != 0).all()
    assert float(bias.detach().abs().max()) <= 1 / math.sqrt(fan_in)


@pytest.mark.parametrize("model", ["fcn", "cnn"])
def test_float64_dtype(model):
    net = build(model=model, depth=2, dtype="float64")
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert net(x.double()).dtype == torch.float64


def test_fcn_and_cnn_constructors_default_to_relu():
    assert isinstance(FCN(2, 8).act, nn.ReLU) and isinstance(CNN(2, 2).act, nn.ReLU)
    assert isinstance(build(activation="linear").act, nn.Identity)
