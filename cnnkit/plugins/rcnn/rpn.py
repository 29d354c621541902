"""The Region Proposal Network (Ren et al. 2015): anchors, the n x n conv with sibling 1x1 convs,
anchor labelling and sampling (the shared :mod:`matching`) and proposal generation. As in
torchvision, ``forward`` returns ``(proposals, losses)``."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from cnnkit.api import CnnkitError, clip_boxes, nms
from cnnkit.plugins.rcnn.matching import UNIT_CODER, Labeller, Sampler

Targets = list[dict[str, torch.Tensor]]
RPNLoss = Callable[..., dict[str, torch.Tensor]]


# Ren et al. 2015, sec. 3.1.1: anchors of 128^2, 256^2 and 512^2 pixels at ratios 1:2, 1:1, 2:1, on
# images whose shorter side is 600 pixels.
PAPER_ANCHOR_SIZES = (128.0, 256.0, 512.0)
PAPER_ANCHOR_RATIOS = (0.5, 1.0, 2.0)
PAPER_SHORT_SIDE = 600


def default_anchor_sizes(img_size: int) -> tuple[float, ...]:
    """The anchor sizes (pixels) when none are given: the paper's 128, 256, 512 at its 600-pixel
    side, scaled by ``img_size / 600`` (at 64 px: 13.7, 27.3, 54.6), so they cover the same share of
    the image as the paper's."""
    return tuple(s * img_size / PAPER_SHORT_SIDE for s in PAPER_ANCHOR_SIZES)


def pixel_values(value: Any, flag: str) -> tuple[float, ...]:
    """``--anchor-sizes 128,256,512`` (a comma- or space-separated string, a number or a list, as a
    flag or a config file gives it) as positive finite numbers, or one line naming ``flag``."""
    items = (value.replace(",", " ").split() if isinstance(value, str)
             else value if isinstance(value, (list, tuple)) else [value])
    try:
        numbers = tuple(float(v) for v in items if not isinstance(v, bool))
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or len(numbers) != len(items) or not all(math.isfinite(v) and v > 0 for v in numbers):
        raise CnnkitError(f"{flag} {value}: give positive numbers separated by commas (e.g. {flag} 128,256,512)")
    return numbers


def anchor_shapes(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """(k, 4) anchors centred on 0: each size (sqrt of the area) at each aspect ratio h/w."""
    out = []
    for size in sizes:
        for ratio in ratios:
            w, h = size / ratio ** 0.5, size * ratio ** 0.5
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out)


def grid_anchors(shapes: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """All anchors of a (height, width) feature map, (height * width * k, 4), position-major."""
    ys = (torch.arange(height, dtype=torch.float32, device=shapes.device) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32, device=shapes.device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], -1).reshape(-1, 1, 4)
    return (centres + shapes[None]).reshape(-1, 4)


@torch.no_grad()
def proposals(anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, image_size: int,
              pre_nms: int, post_nms: int, nms_iou: float = 0.7, min_size: float = 2.0) -> list[torch.Tensor]:
    """Per image: decode, clip, drop tiny boxes, keep the ``pre_nms`` best, NMS, keep ``post_nms``."""
    out = []
    scores = logits.float().softmax(-1)[..., 1]
    for s, d in zip(scores, deltas.float()):
        boxes = clip_boxes(UNIT_CODER.decode_single(d, anchors), image_size, image_size)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= min_size).all(1)
        boxes, s = boxes[keep], s[keep]
        top = s.topk(min(pre_nms, len(s))).indices
        boxes, s = boxes[top], s[top]
        out.append(boxes[nms(boxes, s, nms_iou)[:post_nms]])
    return out


class RPN(nn.Module):
    """n x n (3 x 3) conv, then 1 x 1 convs giving 2k objectness scores and 4k box offsets.

    Training: anchors with IoU >= 0.7 (or a box's best) are positive, < 0.3 negative, those crossing
    the image border ignored (``ignore_border``); ``batch`` of them an image, at most half positive.
    Proposals: the ``pre_nms`` best, NMS at ``nms_iou``, the ``post_nms`` best (train, test)."""

    def __init__(self, channels: int, hidden: int, sizes: tuple[float, ...], ratios: tuple[float, ...],
                 stride: int, batch: int = 256, pre_nms: tuple[int, int] = (12000, 6000),
                 post_nms: tuple[int, int] = (2000, 300), nms_iou: float = 0.7, ignore_border: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.sizes, self.ratios = tuple(float(s) for s in sizes), tuple(float(r) for r in ratios)
        self.register_buffer("shapes", anchor_shapes(sizes, ratios), persistent=False)
        k = len(sizes) * len(ratios)
        self.conv = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(hidden, 2 * k, 1)
        self.box = nn.Conv2d(hidden, 4 * k, 1)
        for layer in (self.conv[0], self.cls, self.box):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.labeller = Labeller(0.7, 0.3, low_quality=True)
        self.sampler = Sampler(batch, 0.5)
        self.batch, self.pre_nms, self.post_nms = batch, pre_nms, post_nms
        self.nms_iou, self.ignore_border = nms_iou, ignore_border

    def anchors(self, features: torch.Tensor) -> torch.Tensor:
        return grid_anchors(self.shapes, features.shape[-2], features.shape[-1], self.stride)

    def scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness logits (B, A, 2) [background, object] and deltas (B, A, 4), A = H * W * k."""
        x = self.conv(features)
        b = x.shape[0]
        logits = self.cls(x).view(b, -1, 2, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1, 2)
        deltas = self.box(x).view(b, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        return logits, deltas

    def targets(self, anchors: torch.Tensor, targets: Targets, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled labels (B, A) (1, 0, -1 ignored) and regression targets (B, A, 4)."""
        ignore = None
        if self.ignore_border:
            ignore = ((anchors[:, :2] < 0) | (anchors[:, 2:] > image_size)).any(1)
        labels, deltas = [], []
        for t in targets:
            lab, matched = self.labeller(anchors, t["boxes"].to(anchors.device), ignore=ignore)
            labels.append(self.sampler.mask(lab))
            deltas.append(UNIT_CODER.encode_single(matched, anchors))
        return torch.stack(labels), torch.stack(deltas)

    def forward(self, features: torch.Tensor, image_size: int, targets: Targets | None = None,
                loss: RPNLoss | None = None) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals of each image (train or test counts by ``self.training``) and, given targets
        and a loss, the RPN's loss terms."""
        logits, deltas = self.scores(features)
        anchors = self.anchors(features)
        mode = 0 if self.training else 1
        found = proposals(anchors, logits.detach(), deltas.detach(), image_size, self.pre_nms[mode],
                          self.post_nms[mode], self.nms_iou)
        if targets is None or loss is None:
            return found, {}
        labels, target_deltas = self.targets(anchors, targets, image_size)
        return found, loss(logits, deltas, labels, target_deltas, features.shape[-2] * features.shape[-1])
