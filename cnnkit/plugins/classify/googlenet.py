"""GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions"), written from Table 1 and
section 5: no batch norm, LRN after the first pool and conv2, 5x5 branches, two auxiliary
classifiers on 4a and 4d that exist only while training (the loss weights them by 0.3). The
paper gives no LRN constants: they are those of Caffe's reference model (:func:`caffe_lrn`)."""

from __future__ import annotations

import torch
from torch import nn


def caffe_lrn() -> nn.LocalResponseNorm:
    """The LRN of Caffe's reference GoogLeNet (bvlc_googlenet's train_val.prototxt: local_size 5,
    alpha 1e-4, beta 0.75, Caffe's k of 1): b = a / (1 + 1e-4/5 * sum_{5 neighbours} a^2)^0.75.
    Caffe divides alpha by the size as PyTorch does, so alpha is 1e-4 here (AlexNet's k=2 and
    per-term 1e-4 are :func:`cnnkit.plugins.classify.models.paper_lrn`)."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Convolution + ReLU ("all convolutions, including those inside the Inception modules, use
    rectified linear activation"); padding keeps the size at stride 1."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2),
                         nn.ReLU(inplace=True))


def max_pool() -> nn.MaxPool2d:
    """3x3/2 max-pooling, rounding up as Table 1's sizes do (112 -> 56 -> 28 -> 14 -> 7)."""
    return nn.MaxPool2d(3, stride=2, ceil_mode=True)


class Inception(nn.Module):
    """1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated (Figure 2b)."""

    def __init__(self, in_channels: int, c1: int, r3: int, c3: int, r5: int, c5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = conv(in_channels, c1, 1)
        self.branch3 = nn.Sequential(conv(in_channels, r3, 1), conv(r3, c3, 3))
        self.branch5 = nn.Sequential(conv(in_channels, r5, 1), conv(r5, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(in_channels, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class AuxClassifier(nn.Module):
    """5x5/3 average pool (4x4 at 224), 1x1 conv 128, fc 1024, dropout 0.7, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=3)
        self.resize = nn.AdaptiveAvgPool2d(4)  # a no-op at 224; lets other input sizes through
        self.conv = conv(in_channels, 128, 1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 1024), nn.ReLU(inplace=True), nn.Dropout(0.7),
                                nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.resize(self.pool(x))))


class GoogLeNet(nn.Module):
    """Table 1. In training mode ``forward`` returns ``(logits, aux1, aux2)``; in eval, the logits."""

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, dropout: float = 0.4) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv(3, 64, 7, stride=2), max_pool(), caffe_lrn(),
                                  conv(64, 64, 1), conv(64, 192, 3), caffe_lrn(), max_pool())
        self.inception3 = nn.Sequential(Inception(192, 64, 96, 128, 16, 32, 32),
                                        Inception(256, 128, 128, 192, 32, 96, 64), max_pool())
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4bcd = nn.Sequential(Inception(512, 160, 112, 224, 24, 64, 64),
                                           Inception(512, 128, 128, 256, 24, 64, 64),
                                           Inception(512, 112, 144, 288, 32, 64, 64))
        self.inception4e = nn.Sequential(Inception(528, 256, 160, 320, 32, 128, 128), max_pool())
        self.inception5 = nn.Sequential(Inception(832, 256, 160, 320, 32, 128, 128),
                                        Inception(832, 384, 192, 384, 48, 128, 128))
        head = [nn.Dropout(dropout), nn.Linear(1024, num_classes)] if num_classes else []
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head)
        self.aux1 = AuxClassifier(512, num_classes) if aux_logits and num_classes else None
        self.aux2 = AuxClassifier(528, num_classes) if aux_logits and num_classes else None

    feature_channels = 1024  # the backbone contract (cnnkit.core.models.backbone)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inception5(self.inception4e(self.inception4bcd(self.inception4a(self.inception3(self.stem(x))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a4 = self.inception4a(self.inception3(self.stem(x)))
        d4 = self.inception4bcd(a4)
        logits = self.head(self.inception5(self.inception4e(d4)))
        if self.training and self.aux1 is not None:
            return logits, self.aux1(a4), self.aux2(d4)
        return logits


def googlenet(*, num_classes: int = 1000, aux_logits: bool = True) -> nn.Module:
    """GoogLeNet with (``aux_logits``) or without its auxiliary classifiers."""
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_logits)
