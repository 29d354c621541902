"""YOLO v1/v2/v3 and their Darknet backbones, built layer for layer as the Darknet configurations
define them (so parameter counts match Darknet's and ``.weights`` files load in module order).

Detectors return raw head maps: YOLOv1 a ``(B, S, S, B*5+C)`` tensor, YOLOv2/v3 a list of
``(B, A*(5+C), H, W)`` maps (coarsest first). Anchors are kept in Darknet's units
(``model.anchors``: one ``(A, 2)`` tensor a head): YOLOv3's in input pixels, YOLOv2's ([region])
in grid cells, fixed at every input size as Darknet's ``get_yolo_box`` / ``get_region_box`` use them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.plugins.yolo.layers import BN_EPS, DetectionOutput, Reorg

# Darknet's anchors in Darknet's units: [region] (YOLOv2) in grid cells, [yolo] (YOLOv3) in input pixels.
V2_ANCHORS = [(0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434), (7.88282, 3.52778),
              (9.77052, 9.16828)]  # yolov2.cfg and yolov2-tiny.cfg
V3_ANCHORS = [(10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326)]
V3_TINY_ANCHORS = [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]

Anchors = Sequence[Sequence[float]]


class ConvLeaky(nn.Sequential):
    """A ``[convolutional]`` without batch norm (YOLOv1 as published): conv with bias, leaky ReLU 0.1."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2), nn.LeakyReLU(0.1, inplace=True))


class ConvBN(nn.Sequential):
    """Darknet's ``[convolutional]``: conv (no bias) + batch norm (Darknet's epsilon) + leaky ReLU 0.1,
    'same' padding."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, bias=False), nn.BatchNorm2d(c_out, eps=BN_EPS),
                         nn.LeakyReLU(0.1, inplace=True))


class Residual(nn.Module):
    """Darknet-53's block: 1x1 halving the channels, 3x3 restoring them, ``[shortcut]`` add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(ConvBN(channels, channels // 2, 1), ConvBN(channels // 2, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class MaxPoolSame(nn.Module):
    """Darknet ``[maxpool] size=2 stride=1``: keeps the size (edge pixels repeat into the padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)


def _anchor_tensors(anchors: Anchors, masks: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    table = torch.tensor([list(map(float, a)) for a in anchors], dtype=torch.float32, device="cpu")
    return [table[list(m)] for m in masks]


def prediction_conv(c_in: int, num_anchors: int, num_classes: int) -> nn.Conv2d:
    """The 1x1 output conv of an anchor head; objectness starts near 0.01 so the many empty
    cells do not swamp the first updates."""
    conv = nn.Conv2d(c_in, num_anchors * (5 + num_classes), 1)
    if conv.bias is not None and conv.bias.device.type != "meta":
        with torch.no_grad():
            conv.bias.view(num_anchors, -1)[:, 4].fill_(-4.6)
    return conv


# --------------------------------------------------------------------------- backbones
def darknet19_features() -> nn.Sequential:
    """Darknet-19 up to its last 3x3x1024 conv (18 conv layers, 5 max pools, stride 32)."""
    pool = nn.MaxPool2d(2, 2)
    return nn.Sequential(
        ConvBN(3, 32), pool, ConvBN(32, 64), pool,
        ConvBN(64, 128), ConvBN(128, 64, 1), ConvBN(64, 128), pool,
        ConvBN(128, 256), ConvBN(256, 128, 1), ConvBN(128, 256), pool,
        ConvBN(256, 512), ConvBN(512, 256, 1), ConvBN(256, 512), ConvBN(512, 256, 1), ConvBN(256, 512), pool,
        ConvBN(512, 1024), ConvBN(1024, 512, 1), ConvBN(512, 1024), ConvBN(1024, 512, 1), ConvBN(512, 1024),
    )


class Darknet53(nn.Module):
    """Darknet-53: 52 conv layers in five residual stages (1, 2, 8, 8, 4 blocks), stride 32.
    ``forward`` returns the stride-8, -16 and -32 features YOLOv3 taps."""

    def __init__(self) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
            return nn.Sequential(ConvBN(c_in, c_out, 3, 2), *[Residual(c_out) for _ in range(blocks)])

        self.stem = ConvBN(3, 32)
        self.stage1, self.stage2 = stage(32, 64, 1), stage(64, 128, 2)
        self.stage3, self.stage4, self.stage5 = stage(128, 256, 8), stage(256, 512, 8), stage(512, 1024, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage3(self.stage2(self.stage1(self.stem(x))))
        c4 = self.stage4(c3)
        return c3, c4, self.stage5(c4)


class Classifier(nn.Module):
    """Darknet's classifier head: features, 1x1 conv to the classes (with bias), global average."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int, conv_first: bool) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Conv2d(channels, num_classes, 1)
        self.conv_first = conv_first  # darknet19.cfg: conv then avgpool; darknet53.cfg: avgpool then conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x[-1] if isinstance(x, tuple) else x
        if self.conv_first:
            return self.fc(x).mean((2, 3))
        return self.fc(x.mean((2, 3), keepdim=True)).flatten(1)


def darknet19(*, num_classes: int = 1000) -> nn.Module:
    """Darknet-19 classifier (YOLO9000 paper, Table 6): 19 conv layers and 5 max pools."""
    return Classifier(darknet19_features(), 1024, num_classes, conv_first=True)


def darknet53(*, num_classes: int = 1000) -> nn.Module:
    """Darknet-53 classifier (YOLOv3 paper, Table 1)."""
    return Classifier(Darknet53(), 1024, num_classes, conv_first=False)


# --------------------------------------------------------------------------- YOLOv1
class YOLOv1(nn.Module):
    """YOLOv1: conv features, fully connected layers, Darknet's ``[detection]`` output (read as an
    ``S x S x (B*5 + C)`` map). Inputs other than 448 are pooled to ``S x S`` before the first
    fully connected layer."""

    family = "yolov1"

    def __init__(self, features: nn.Sequential, channels: int, hidden: int, num_classes: int,
                 grid: int = 7, boxes: int = 2) -> None:
        super().__init__()
        self.grid, self.boxes, self.num_classes = grid, boxes, num_classes
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(grid)
        out = grid * grid * (boxes * 5 + num_classes)
        layers: list[nn.Module] = [nn.Flatten()]
        if hidden:
            layers += [nn.Linear(channels * grid * grid, hidden), nn.LeakyReLU(0.1, inplace=True), nn.Dropout(0.5),
                       nn.Linear(hidden, out)]
        else:
            layers += [nn.Linear(channels * grid * grid, out)]
        self.head = nn.Sequential(*layers)
        self.detect = DetectionOutput(grid, boxes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect(self.head(self.pool(self.features(x))))


def yolov1(*, num_classes: int = 20, grid: int = 7, boxes: int = 2, batch_norm: bool = False) -> nn.Module:
    """YOLOv1 as published (Redmon et al. 2016, Figure 3): 24 conv layers without batch norm
    (it came with YOLOv2), FC 4096 with dropout 0.5, FC S*S*(B*5+C). ``batch_norm=True`` puts
    batch norm after every convolution (as Darknet's later yolov1.cfg does)."""
    pool, conv = nn.MaxPool2d(2, 2), ConvBN if batch_norm else ConvLeaky
    features = nn.Sequential(
        conv(3, 64, 7, 2), pool, conv(64, 192), pool,
        conv(192, 128, 1), conv(128, 256), conv(256, 256, 1), conv(256, 512), pool,
        *[m for _ in range(4) for m in (conv(512, 256, 1), conv(256, 512))],
        conv(512, 512, 1), conv(512, 1024), pool,
        *[m for _ in range(2) for m in (conv(1024, 512, 1), conv(512, 1024))],
        conv(1024, 1024), conv(1024, 1024, 3, 2), conv(1024, 1024), conv(1024, 1024),
    )
    return YOLOv1(features, 1024, 4096, num_classes, grid, boxes)


def yolov1_fast(*, num_classes: int = 20, grid: int = 7, boxes: int = 2, batch_norm: bool = False) -> nn.Module:
    """Fast YOLO as published (Redmon et al. 2016, sec. 2): 9 conv layers ("9 instead of 24", with
    the widths of Darknet's tiny-yolo v1) and one fully connected output layer, without batch norm
    like YOLOv1 (``batch_norm=True``: Darknet's later cfgs, which have it)."""
    pool, conv = nn.MaxPool2d(2, 2), ConvBN if batch_norm else ConvLeaky
    widths = [16, 32, 64, 128, 256, 512]
    layers: list[nn.Module] = []
    for c_in, c_out in zip([3] + widths[:-1], widths):
        layers += [conv(c_in, c_out), pool]
    layers += [conv(512, 1024), conv(1024, 1024), conv(1024, 256)]
    return YOLOv1(nn.Sequential(*layers), 256, 0, num_classes, grid, boxes)


# --------------------------------------------------------------------------- YOLOv2
class YOLOv2(nn.Module):
    """YOLOv2 (YOLO9000 paper; yolov2.cfg): Darknet-19 features, two 3x3x1024 convs, the
    passthrough layer (26x26x512 -> 64 channels -> Darknet's reorg to 13x13x256) concatenated,
    a 3x3 conv, 1x1 predictions."""

    family = "yolov2"

    def __init__(self, num_classes: int = 80, anchors: Anchors = V2_ANCHORS, tree: Any = None) -> None:
        super().__init__()
        self.tree = tree  # a WordTree: hierarchical softmax over its groups (YOLO9000)
        feats = darknet19_features()
        self.stage1, self.stage2 = feats[:17], feats[17:]  # up to the 26x26x512 conv; the rest
        self.head1 = nn.Sequential(ConvBN(1024, 1024), ConvBN(1024, 1024))
        self.passthrough = nn.Sequential(ConvBN(512, 64, 1), Reorg(2))  # Darknet's reorg, not pixel_unshuffle
        self.head2 = ConvBN(1024 + 256, 1024)
        self.anchors = _anchor_tensors(anchors, [range(len(anchors))])
        self.num_classes = num_classes
        self.pred = prediction_conv(1024, len(anchors), num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.stage1(x)
        c5 = self.head1(self.stage2(c4))
        return [self.pred(self.head2(torch.cat([self.passthrough(c4), c5], 1)))]


class YOLOv2Tiny(nn.Module):
    """Tiny YOLOv2 (yolov2-tiny.cfg): six 3x3 conv + max pool pairs, 1024 and 512 3x3 convs."""

    family = "yolov2"

    def __init__(self, num_classes: int = 80, anchors: Anchors = V2_ANCHORS, tree: Any = None) -> None:
        super().__init__()
        self.tree = tree
        layers: list[nn.Module] = []
        widths = [16, 32, 64, 128, 256, 512]
        for i, (c_in, c_out) in enumerate(zip([3] + widths[:-1], widths)):
            layers += [ConvBN(c_in, c_out), nn.MaxPool2d(2, 2) if i < 5 else MaxPoolSame()]
        layers += [ConvBN(512, 1024), ConvBN(1024, 512)]
        self.features = nn.Sequential(*layers)
        self.anchors = _anchor_tensors(anchors, [range(len(anchors))])
        self.num_classes = num_classes
        self.pred = prediction_conv(512, len(anchors), num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.pred(self.features(x))]


def yolov2(*, num_classes: int = 80, anchors: Anchors | None = None, tree: Any = None) -> nn.Module:
    return YOLOv2(num_classes, anchors or V2_ANCHORS, tree)


def yolov2_tiny(*, num_classes: int = 80, anchors: Anchors | None = None, tree: Any = None) -> nn.Module:
    return YOLOv2Tiny(num_classes, anchors or V2_ANCHORS, tree)


# --------------------------------------------------------------------------- YOLOv3
def _head(c_in: int, c_mid: int) -> nn.Sequential:
    """YOLOv3's five alternating 1x1/3x3 convs before each scale's output."""
    return nn.Sequential(ConvBN(c_in, c_mid, 1), ConvBN(c_mid, c_mid * 2), ConvBN(c_mid * 2, c_mid, 1),
                         ConvBN(c_mid, c_mid * 2), ConvBN(c_mid * 2, c_mid, 1))


class YOLOv3(nn.Module):
    """YOLOv3: Darknet-53 and predictions at strides 32, 16 and 8; each finer scale upsamples the
    coarser head's features (1x1 conv, x2) and concatenates them with the backbone's.
    Modules are declared in yolov3.cfg's layer order."""

    family = "yolov3"

    def __init__(self, num_classes: int = 80, anchors: Anchors = V3_ANCHORS) -> None:
        super().__init__()
        per = len(anchors) // 3
        self.backbone = Darknet53()
        self.head5 = _head(1024, 512)
        self.out5 = nn.Sequential(ConvBN(512, 1024), prediction_conv(1024, per, num_classes))
        self.lat4 = ConvBN(512, 256, 1)
        self.head4 = _head(512 + 256, 256)
        self.out4 = nn.Sequential(ConvBN(256, 512), prediction_conv(512, per, num_classes))
        self.lat3 = ConvBN(256, 128, 1)
        self.head3 = _head(256 + 128, 128)
        self.out3 = nn.Sequential(ConvBN(128, 256), prediction_conv(256, per, num_classes))
        self.anchors = _anchor_tensors(anchors, [range(2 * per, 3 * per), range(per, 2 * per), range(per)])
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3, c4, c5 = self.backbone(x)
        p5 = self.head5(c5)
        p4 = self.head4(torch.cat([F.interpolate(self.lat4(p5), scale_factor=2.0), c4], 1))
        p3 = self.head3(torch.cat([F.interpolate(self.lat3(p4), scale_factor=2.0), c3], 1))
        return [self.out5(p5), self.out4(p4), self.out3(p3)]


class YOLOv3Tiny(nn.Module):
    """Tiny YOLOv3 (yolov3-tiny.cfg): seven 3x3 conv + max pool pairs and two scales (strides 32, 16)."""

    family = "yolov3"

    def __init__(self, num_classes: int = 80, anchors: Anchors = V3_TINY_ANCHORS) -> None:
        super().__init__()
        per = len(anchors) // 2
        layers: list[nn.Module] = []
        widths = [16, 32, 64, 128, 256]
        for c_in, c_out in zip([3] + widths[:-1], widths):
            layers += [ConvBN(c_in, c_out), nn.MaxPool2d(2, 2)]
        self.stage4 = nn.Sequential(*layers[:-1])  # ends with the 256-channel stride-16 conv
        self.stage5 = nn.Sequential(nn.MaxPool2d(2, 2), ConvBN(256, 512), MaxPoolSame(), ConvBN(512, 1024),
                                    ConvBN(1024, 256, 1))
        self.out5 = nn.Sequential(ConvBN(256, 512), prediction_conv(512, per, num_classes))
        self.lat4 = ConvBN(256, 128, 1)
        self.out4 = nn.Sequential(ConvBN(128 + 256, 256), prediction_conv(256, per, num_classes))
        self.anchors = _anchor_tensors(anchors, [range(per, 2 * per), range(per)])
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.stage4(x)
        p5 = self.stage5(c4)
        up = F.interpolate(self.lat4(p5), size=c4.shape[-2:])
        return [self.out5(p5), self.out4(torch.cat([up, c4], 1))]


def yolov3(*, num_classes: int = 80, anchors: Anchors | None = None) -> nn.Module:
    return YOLOv3(num_classes, anchors or V3_ANCHORS)


def yolov3_tiny(*, num_classes: int = 80, anchors: Anchors | None = None) -> nn.Module:
    return YOLOv3Tiny(num_classes, anchors or V3_TINY_ANCHORS)
