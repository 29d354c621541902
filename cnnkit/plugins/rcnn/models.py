"""The networks: a small conv trunk (or a registered resnet18's first stages), R-CNN's warped-region
classifier, Fast R-CNN (RoI max pooling + sibling heads), Faster R-CNN (RPN + the Fast R-CNN head)
and torchvision's production Faster R-CNNs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align, roi_pool

from cnnkit.plugins.rcnn.rpn import RPN


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def trunk(*, backbone: str = "small", width: int = 16) -> tuple[nn.Module, int, int]:
    """A feature extractor, its channels and its stride.

    ``small`` (stride 4, for small images): VGG-style conv3x3-BN-ReLU blocks (width, 2w, 4w, 4w)
    with two 2x2 max pools; ``resnet18`` (stride 8): the registered resnet18 (torchvision, random
    init) up to ``layer2``.
    """
    if backbone == "small":
        w = width
        return nn.Sequential(_conv(3, w), nn.MaxPool2d(2), _conv(w, 2 * w), nn.MaxPool2d(2),
                             _conv(2 * w, 4 * w), _conv(4 * w, 4 * w)), 4 * w, 4
    if backbone == "resnet18":
        from cnnkit.core.registry import models

        r = models.get("resnet18").create(num_classes=1)
        return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2), 128, 8
    raise ValueError(f"unknown backbone {backbone!r} (small, resnet18)")


class RCNN(nn.Module):
    """R-CNN: each proposal, dilated by the paper's 16/227 context, is warped to ``crop`` x ``crop``
    and classified by a CNN into K+1 classes. After fine-tuning, one linear SVM a class on the fc
    features and a class-specific ridge box regressor on the pooled conv features (buffers, so
    checkpoints carry them) replace the softmax."""

    context = 16 / 227

    def __init__(self, num_classes: int, crop: int = 32, backbone: str = "small", width: int = 16,
                 fc: int = 256) -> None:
        super().__init__()
        self.num_classes, self.crop = num_classes, crop
        self.trunk, channels, _ = trunk(backbone=backbone, width=width)
        self.pool = nn.AdaptiveMaxPool2d(4)
        pool_dim = channels * 16
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(pool_dim, fc), nn.ReLU(inplace=True), nn.Dropout(0.5),
                                nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.cls = nn.Linear(fc, num_classes + 1)
        self.register_buffer("svm_weight", torch.zeros(num_classes, fc))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("reg_weight", torch.zeros(num_classes, pool_dim + 1, 4))
        self.register_buffer("svm_ready", torch.zeros((), dtype=torch.bool))

    def warp(self, images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Crops for ``rois`` (R, 5: batch index, xyxy), each box dilated for context."""
        box = rois[:, 1:]
        wh = (box[:, 2:] - box[:, :2]).clamp(min=1.0)
        pad = wh * self.context / (1 - 2 * self.context)
        dilated = torch.cat([rois[:, :1], box[:, :2] - pad, box[:, 2:] + pad], 1)
        return roi_align(images, dilated, self.crop, 1.0, sampling_ratio=2, aligned=True)

    def features(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled conv features flattened, fc features) of warped crops."""
        pooled = self.pool(self.trunk(crops)).flatten(1)
        return pooled, self.fc(pooled)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.cls(self.features(crops)[1])


class RoIHead(nn.Module):
    """Fast R-CNN's head: RoI max pooling to ``pool`` x ``pool``, two FC layers, sibling outputs
    (K+1 class scores, 4 box offsets for each of the K object classes)."""

    def __init__(self, channels: int, num_classes: int, stride: int = 8, pool: int = 7, fc: int = 256) -> None:
        super().__init__()
        self.scale, self.pool = 1.0 / stride, pool
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(channels * pool * pool, fc), nn.ReLU(inplace=True),
                                nn.Linear(fc, fc), nn.ReLU(inplace=True))
        self.cls = nn.Linear(fc, num_classes + 1)
        self.box = nn.Linear(fc, 4 * num_classes)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fc(roi_pool(features, rois, self.pool, self.scale))
        return self.cls(x), self.box(x)


class FastRCNN(nn.Module):
    """Fast R-CNN: one conv pass over the image, then :class:`RoIHead` on the proposals."""

    def __init__(self, num_classes: int, backbone: str = "small", width: int = 16, pool: int = 7,
                 fc: int = 256) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk, channels, self.stride = trunk(backbone=backbone, width=width)
        self.head = RoIHead(channels, num_classes, self.stride, pool, fc)

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(images), rois)


class FasterRCNN(nn.Module):
    """Faster R-CNN: a shared trunk, a Region Proposal Network and the Fast R-CNN head."""

    def __init__(self, num_classes: int, backbone: str = "small", width: int = 16, pool: int = 7,
                 fc: int = 256, anchor_sizes: tuple[float, ...] = (16, 32, 64),
                 aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0), rpn_channels: int = 128) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk, channels, self.stride = trunk(backbone=backbone, width=width)
        self.rpn = RPN(channels, rpn_channels, tuple(anchor_sizes), tuple(aspect_ratios), self.stride)
        self.head = RoIHead(channels, num_classes, self.stride, pool, fc)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature map, RPN objectness logits (B, A, 2) and box deltas (B, A, 4)."""
        features = self.trunk(images)
        logits, deltas = self.rpn(features)
        return features, logits, deltas


def rcnn(*, num_classes: int = 20, **kwargs: Any) -> RCNN:
    return RCNN(num_classes, **kwargs)


def fast_rcnn(*, num_classes: int = 20, **kwargs: Any) -> FastRCNN:
    return FastRCNN(num_classes, **kwargs)


def faster_rcnn(*, num_classes: int = 20, **kwargs: Any) -> FasterRCNN:
    return FasterRCNN(num_classes, **kwargs)


def torchvision_faster_rcnn(*, arch: str, num_classes: int = 91, img_size: int = 800, **kwargs: Any) -> nn.Module:
    """torchvision's ``arch`` with ``num_classes`` + background outputs, random init (weights come
    only from ``--weights`` or ``--pretrained``, torchvision's COCO files in the weights registry), resizing inputs
    to ``img_size``."""
    import torchvision

    return torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                        min_size=img_size, max_size=img_size, **kwargs)
