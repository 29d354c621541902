"""The image transformation network of Johnson et al. (2016) for fast feed-forward stylizing.

Two stride-2 downsampling convolutions, residual blocks, two upsampling stages (nearest
neighbour + convolution, which avoids checkerboard artefacts), instance normalisation
throughout, reflection padding and a scaled tanh at the end. Images go in and come out as RGB
in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
    if norm:
        layers += [nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), nn.ReflectionPad2d(1),
                                  nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a convolution with instance norm and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network (``width`` channels at full resolution)."""

    def __init__(self, width: int = 32, blocks: int = 5) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv(3, width, 9), _conv(width, 2 * width, 3, 2), _conv(2 * width, 4 * width, 3, 2))
        self.res = nn.Sequential(*(ResidualBlock(4 * width) for _ in range(blocks)))
        self.up = nn.Sequential(Upsample(4 * width, 2 * width), Upsample(2 * width, width),
                                _conv(width, 3, 9, norm=False))

    def forward(self, x: Tensor) -> Tensor:
        y = self.up(self.res(self.down(x)))
        if y.shape[-2:] != x.shape[-2:]:  # sizes that are not multiples of 4
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (torch.tanh(y) + 1) / 2  # the paper's scaled tanh: pixels in [0, 1]


def transformer_net(*, width: int = 32, blocks: int = 5, num_classes: int | None = None) -> TransformerNet:
    """The fast-style network; ``num_classes`` is ignored (an image comes out)."""
    return TransformerNet(width=width, blocks=blocks)
