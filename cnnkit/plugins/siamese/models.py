"""Embedding networks: one network f applied to both inputs (shared weights), 128-d, L2-normalised.

Every embedder also carries the learned similarity function of the lecture,
``y = sigmoid(sum_k w_k |f(x_i)_k - f(x_j)_k| + b)`` (``similarity``), trained only when the
``similarity`` loss is chosen; otherwise two faces are compared by Euclidean distance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


class SimilarityHead(nn.Module):
    """``sum_k w_k |a_k - b_k| + b`` as a logit (sigmoid of it: the probability of "same")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        nn.init.constant_(self.linear.weight, -1.0)  # far apart -> "different" from the start
        nn.init.constant_(self.linear.bias, 1.0)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.linear((a - b).abs()).squeeze(-1)


class Embedder(nn.Module):
    """``features`` (any network returning (B, C) or (B, C, H, W)) -> linear -> L2 normalisation
    (``normalize=False`` keeps the linear layer's output, as dlib's face ResNet does)."""

    def __init__(self, features: nn.Module, feature_dim: int, embedding_dim: int = 128,
                 normalize: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, embedding_dim, bias=bias) if feature_dim else nn.Identity()
        self.similarity = SimilarityHead(embedding_dim)
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        self.feature_channels = feature_dim or embedding_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's output before pooling and the embedding layer (the backbone contract)."""
        h = self.features(x)
        return h[0] if isinstance(h, (tuple, list)) else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_features(x)  # Inception-style (logits, aux) in training mode: the logits
        if h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, 1)
        out = self.head(h.flatten(1)).float()
        return F.normalize(out, dim=1) if self.normalize else out


def _block(cin: int, cout: int, convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers


def siamese_small(*, embedding_dim: int = 128, widths: tuple[int, ...] = (32, 64, 128, 256),
                  num_classes: int = 0, **_: Any) -> Embedder:
    """A small CNN for CPUs: conv-BN-ReLU stages (two convs in the deeper ones), max-pooling
    between stages, global average pooling and a linear embedding layer.

    ``num_classes`` is ignored (an embedder has no classes; the engine passes the identity count).
    """
    layers: list[nn.Module] = []
    cin = 3
    for i, width in enumerate(widths):
        layers += _block(cin, width, 1 if i == 0 else 2)
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        cin = width
    return Embedder(nn.Sequential(*layers), cin, embedding_dim)


def siamese_backbone(*, backbone: str, embedding_dim: int = 128, num_classes: int = 0, **kwargs: Any) -> Embedder:
    """A registered model that serves as a backbone (e.g. ``resnet18``, ``inception-resnet-v1``)
    without its classifier, then a linear ``embedding_dim`` layer and L2 normalisation.
    ``num_classes`` is ignored (an embedder has no classes)."""
    from cnnkit.api import build_backbone

    trunk = build_backbone(backbone, **kwargs)
    return Embedder(trunk, trunk.out_channels, embedding_dim)
