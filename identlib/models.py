"""The two architectures of the paper, built from a :class:`~identlib.config.RunConfig`.

A ``depth``-layer FCN has ``depth`` linear layers (784 → width → … → width → 784); a
``depth``-layer CNN has ``depth − 1`` hidden convolutions with ``channels`` channels and a final
linear convolution to one channel (paper.md §3). Stride 1, no pooling, "same" padding, activation
between layers and none after the last.

>>> from identlib.config import RunConfig
>>> net = build_model(RunConfig(model="cnn", depth=3, channels=8), torch.Generator().manual_seed(0))
>>> tuple(net(torch.zeros(2, 1, 28, 28)).shape)
(2, 1, 28, 28)
>>> n_weights(net)   # 1·8·25 + 8·8·25 + 8·1·25
2000
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import RunConfig

__all__ = ["FCN", "CNN", "build_model", "initialize", "n_weights", "layer_sizes", "predict"]

DIM = 28 * 28


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Identity()


class FCN(nn.Module):
    def __init__(self, depth: int, width: int = 784, activation: str = "relu", bias: bool = False):
        super().__init__()
        sizes = layer_sizes(RunConfig(model="fcn", depth=depth, width=width))
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:]))
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        shape = x.shape
        h = x.flatten(1)                         # (B, 1, 28, 28) -> (B, 784)
        hidden = []
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
            hidden.append(h)
        out = h.view(shape)                      # (B, 784) -> (B, 1, 28, 28)
        return (out, hidden) if return_hidden else out


class CNN(nn.Module):
    def __init__(self, depth: int, channels: int = 128, kernel_size: int = 5, activation: str = "relu",
                 bias: bool = False, padding: str = "zeros"):
        super().__init__()
        sizes = layer_sizes(RunConfig(model="cnn", depth=depth, channels=channels))
        self.layers = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2, padding_mode=padding, bias=bias)
            for a, b in zip(sizes, sizes[1:])
        )
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        h, hidden = x, []                        # (B, 1, 28, 28) -> (B, C, 28, 28) -> ... -> (B, 1, 28, 28)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
            hidden.append(h)
        return (h, hidden) if return_hidden else h


def initialize(model: nn.Module, scheme: str, scale: float, generator: torch.Generator) -> None:
    """Re-initialize every weight in place, drawing only from ``generator``; biases start at zero
    except for "default", which reproduces PyTorch's own layer initialization."""
    for layer in model.layers:
        w = layer.weight
        fan_in = w[0].numel()
        with torch.no_grad():
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(w, generator=generator)
            elif scheme == "xavier_normal":
                nn.init.xavier_normal_(w, generator=generator)
            elif scheme == "he":
                nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
            elif scheme == "orthogonal":
                nn.init.orthogonal_(w, generator=generator)
            elif scheme == "default":            # PyTorch's reset_parameters(), made explicit
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            w.mul_(scale)
            if layer.bias is not None:
                if scheme == "default":
                    bound = 1.0 / math.sqrt(fan_in)
                    layer.bias.uniform_(-bound, bound, generator=generator)
                else:
                    layer.bias.zero_()


def build_model(config: RunConfig, generator: torch.Generator | None = None) -> nn.Module:
    """The network a config describes, initialized from ``generator`` (default: a generator seeded
    with ``config.seed``, the draw :func:`identlib.run` trains from), in the config's dtype."""
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    if config.model == "fcn":
        net = FCN(config.depth, config.width, config.activation, config.bias)
    else:
        net = CNN(config.depth, config.channels, config.kernel_size, config.activation, config.bias,
                  config.padding)
    net = net.to(getattr(torch, config.dtype))
    initialize(net, config.init, config.init_scale, generator)
    return net


def n_weights(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_sizes(config: RunConfig) -> list[int]:
    """Features between the layers: 784, width, ..., 784 for an FCN; channels 1, channels, ..., 1
    for a CNN (``depth + 1`` numbers).

    >>> layer_sizes(RunConfig(model="cnn", depth=3, channels=8))
    [1, 8, 8, 1]
    """
    if config.model == "fcn":
        return [DIM] + [config.width] * (config.depth - 1) + [DIM]
    return [1] + [config.channels] * (config.depth - 1) + [1]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The model's outputs on ``images`` (N, 1, 28, 28), float32 on the CPU, in eval mode,
    computed on :func:`identlib.runtime.device` (the model is moved there and back)."""
    from .runtime import device

    p = next(model.parameters())
    home, dev = p.device, device()
    model.to(dev)
    try:
        outs = [model(images[i:i + batch].to(dev, p.dtype)).float().cpu()
                for i in range(0, len(images), batch)]
    finally:
        model.to(home)
    return torch.cat(outs)
