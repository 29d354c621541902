"""Fast R-CNN's head: RoI max pooling, two FC layers and sibling outputs; it samples its own
training RoIs (the shared :mod:`matching`) and post-processes its detections."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn
from torchvision.ops import roi_pool

from cnnkit.api import batched_nms, clip_boxes
from cnnkit.plugins.rcnn.matching import HEAD_CODER, Labeller, Sampler

Targets = list[dict[str, torch.Tensor]]
Prediction = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def with_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes -> (R, 5) RoIs with the batch index first (torchvision.ops layout)."""
    if not boxes:
        return torch.zeros(0, 5)
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


def per_image(found: list[torch.Tensor], *rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """RoI rows (over the whole batch, laid out as :func:`with_index` lays the boxes) cut back into
    each image's: ``(boxes, its rows of each tensor)`` an image."""
    sizes = [len(b) for b in found]
    yield from zip(found, *(r.split(sizes) for r in rows))


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, size: int, conf: float, iou: float,
                max_det: int = 100) -> Prediction:
    """Per-class boxes (R, K, 4) and scores (R, K) -> the ``max_det`` best after greedy per-class NMS."""
    r, k = scores.shape
    boxes = clip_boxes(boxes, size, size).reshape(-1, 4)
    labels = torch.arange(k, device=scores.device).expand(r, k).reshape(-1)
    scores = scores.reshape(-1)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (scores > conf) & (wh > 1).all(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes.float(), scores.float(), labels, iou)[:max_det]
    return boxes[keep], scores[keep], labels[keep]


def fc67(dim: int, fc: int, dropout: float) -> nn.Sequential:
    """fc6 and fc7 (``fc`` wide, ReLU, dropout when ``dropout`` > 0) on a flattened pool5."""
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, fc), nn.ReLU(inplace=True), *drop,
                         nn.Linear(fc, fc), nn.ReLU(inplace=True), *drop)


class RoIHead(nn.Module):
    """RoI max pooling to ``pool`` x ``pool``, two FC layers (fc6/fc7, ``fc`` wide, dropout after
    each when ``dropout`` > 0, as the paper's VGG-16 head), sibling outputs (K+1 class scores,
    4 box offsets for each of the K object classes). Training RoIs: ``rois_per_image`` an image,
    ``fg_fraction`` foreground (IoU >= 0.5), background IoU in [``bg_low``, 0.5); the ground-truth
    boxes join the candidates."""

    def __init__(self, channels: int, num_classes: int, stride: int = 8, pool: int = 7, fc: int = 256,
                 rois_per_image: int = 64, fg_fraction: float = 0.25, bg_low: float = 0.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.scale, self.pool = 1.0 / stride, pool
        self.fc = fc67(channels * pool * pool, fc, dropout)
        self.cls = nn.Linear(fc, num_classes + 1)
        self.box = nn.Linear(fc, 4 * num_classes)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)
        self.labeller = Labeller(0.5, 0.5, bg_low=bg_low)
        self.sampler = Sampler(rois_per_image, fg_fraction)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R, K+1) and box deltas (R, 4K) of ``rois`` (R, 5)."""
        x = self.fc(roi_pool(features, rois, self.pool, self.scale))
        return self.cls(x), self.box(x)

    def sample(self, found: list[torch.Tensor], targets: Targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training RoIs (R, 5), their labels (R,) and normalised regression targets (R, 4)."""
        rois, labels, matched = [], [], []
        for t, p in zip(targets, found):
            cand = torch.cat([t["boxes"].to(p), p])
            lab, gt = self.labeller(cand, t["boxes"].to(p), t["labels"].to(p.device))
            keep = self.sampler([lab])[0]
            rois.append(cand[keep])
            labels.append(lab[keep])
            matched.append(gt[keep])
        rois_t = with_index(rois)
        return rois_t, torch.cat(labels), HEAD_CODER.encode_single(torch.cat(matched), rois_t[:, 1:])

    def losses(self, features: torch.Tensor, found: list[torch.Tensor], targets: Targets,
               loss: Callable[..., dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Sample RoIs among ``found`` and the ground truth, then the loss terms."""
        rois, labels, target_deltas = self.sample(found, targets)
        cls_logits, box_deltas = self(features, rois.to(features))
        return loss(cls_logits, box_deltas, labels, target_deltas)

    @torch.no_grad()
    def detect(self, features: torch.Tensor, found: list[torch.Tensor], size: int, conf: float,
               iou: float) -> list[Prediction]:
        """Softmax scores and class-specific refined boxes for each image's proposals, then NMS."""
        cls_logits, box_deltas = self(features, with_index(found).to(features))
        out = []
        for boxes, logits, deltas in per_image(found, cls_logits, box_deltas):
            per_class = HEAD_CODER.decode_single(deltas.float(), boxes.float()).view(len(boxes), -1, 4)
            out.append(postprocess(per_class, logits.float().softmax(1)[:, 1:], size, conf, iou))
        return out
