"""Inception-ResNet-v1 (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning"), written from Figures 7, 10-15: stem (Fig. 14), 5 x Inception-ResNet-A,
Reduction-A (k=192, l=192, m=256, n=384), 10 x Inception-ResNet-B, Reduction-B, 5 x Inception-ResNet-C,
average pooling, dropout (keep 0.8). Batch norm follows every convolution but not the summations;
each residual branch is scaled before it is added (sec. 3.3)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.plugins.classify.models import SequentialClassifier, set_residual_scale


class ConvBN(nn.Sequential):
    """Convolution (no bias) + batch norm + ReLU; ``padding="valid"`` is the figures' "V"."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: str = "same") -> None:
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        pad = (k[0] // 2, k[1] // 2) if padding == "same" else 0
        super().__init__(nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=pad, bias=False),
                         nn.BatchNorm2d(out_channels, eps=1e-3), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + scale * up(concat(branches(x))), then ReLU (Figures 10, 11, 13)."""

    def __init__(self, channels: int, branches: list[nn.Module], width: int, scale: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(width, channels, 1)  # "1x1 Conv (... Linear)": no activation
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.up(torch.cat([b(x) for b in self.branches], 1))
        return torch.relu(x + self.scale * branch)


def block_a(scale: float) -> Residual:
    """Inception-ResNet-A on the 35x35x256 grid (Figure 10)."""
    return Residual(256, [ConvBN(256, 32, 1),
                          nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3)),
                          nn.Sequential(ConvBN(256, 32, 1), ConvBN(32, 32, 3), ConvBN(32, 32, 3))], 96, scale)


def block_b(scale: float) -> Residual:
    """Inception-ResNet-B on the 17x17x896 grid (Figure 11)."""
    return Residual(896, [ConvBN(896, 128, 1),
                          nn.Sequential(ConvBN(896, 128, 1), ConvBN(128, 128, (1, 7)), ConvBN(128, 128, (7, 1)))],
                    256, scale)


def block_c(scale: float) -> Residual:
    """Inception-ResNet-C on the 8x8x1792 grid (Figure 13)."""
    return Residual(1792, [ConvBN(1792, 192, 1),
                           nn.Sequential(ConvBN(1792, 192, 1), ConvBN(192, 192, (1, 3)), ConvBN(192, 192, (3, 1)))],
                    384, scale)


class Concat(nn.Module):
    """Parallel branches concatenated along channels (the reduction modules)."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def reduction_a(k: int = 192, l_: int = 192, m: int = 256, n: int = 384) -> Concat:
    """35x35 -> 17x17 (Figure 7): max-pool | 3x3/2 n | 1x1 k -> 3x3 l -> 3x3/2 m (``l_`` is Table 1's l)."""
    return Concat(nn.MaxPool2d(3, 2), ConvBN(256, n, 3, 2, "valid"),
                  nn.Sequential(ConvBN(256, k, 1), ConvBN(k, l_, 3), ConvBN(l_, m, 3, 2, "valid")))


def reduction_b() -> Concat:
    """17x17 -> 8x8 (Figure 12): max-pool | 1x1 -> 3x3/2 384 | 1x1 -> 3x3/2 256 | 1x1 -> 3x3 -> 3x3/2 256."""
    return Concat(nn.MaxPool2d(3, 2),
                  nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 384, 3, 2, "valid")),
                  nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 256, 3, 2, "valid")),
                  nn.Sequential(ConvBN(896, 256, 1), ConvBN(256, 256, 3), ConvBN(256, 256, 3, 2, "valid")))


def stem() -> nn.Sequential:
    """299x299x3 -> 35x35x256 (Figure 14)."""
    return nn.Sequential(ConvBN(3, 32, 3, 2, "valid"), ConvBN(32, 32, 3, padding="valid"), ConvBN(32, 64, 3),
                         nn.MaxPool2d(3, 2), ConvBN(64, 80, 1), ConvBN(80, 192, 3, padding="valid"),
                         ConvBN(192, 256, 3, 2, "valid"))


def inception_resnet_v1(*, num_classes: int = 1000, residual_scale: float | None = None,
                        dropout: float = 0.2) -> nn.Module:
    """Inception-ResNet-v1 (Figure 15). Residual scales default to 0.17 / 0.10 / 0.20 on the
    35/17/8 grids (the published Inception-ResNet-v2 values); ``residual_scale`` sets them all."""
    model = SequentialClassifier([
        ("stem", stem()),
        ("block_a", nn.Sequential(*[block_a(0.17) for _ in range(5)])), ("reduction_a", reduction_a()),
        ("block_b", nn.Sequential(*[block_b(0.10) for _ in range(10)])), ("reduction_b", reduction_b()),
        ("block_c", nn.Sequential(*[block_c(0.20) for _ in range(5)])),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("dropout", nn.Dropout(dropout)),
        ("fc", nn.Linear(1792, num_classes)),
    ], "block_c", 1792, num_classes)
    if residual_scale is not None:
        set_residual_scale(model, residual_scale)
    return model
