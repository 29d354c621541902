"""The Region Proposal Network (Ren et al. 2015): anchors, the n x n conv with sibling 1x1 convs,
anchor labelling/sampling and proposal generation."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.core.boxes import box_iou, clip_boxes, decode_deltas, nms


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


class RPN(nn.Module):
    """n x n (3 x 3) conv, then 1 x 1 convs giving 2k objectness scores and 4k box offsets."""

    def __init__(self, channels: int, hidden: int, sizes: tuple[float, ...], ratios: tuple[float, ...],
                 stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("shapes", anchor_shapes(sizes, ratios), persistent=False)
        k = len(sizes) * len(ratios)
        self.conv = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(hidden, 2 * k, 1)
        self.box = nn.Conv2d(hidden, 4 * k, 1)
        for layer in (self.conv[0], self.cls, self.box):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def anchors(self, features: torch.Tensor) -> torch.Tensor:
        return grid_anchors(self.shapes, features.shape[-2], features.shape[-1], self.stride)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness logits (B, A, 2) [background, object] and deltas (B, A, 4), A = H * W * k."""
        x = self.conv(features)
        b = x.shape[0]
        logits = self.cls(x).view(b, -1, 2, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1, 2)
        deltas = self.box(x).view(b, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
        return logits, deltas


def label_anchors(anchors: torch.Tensor, gt: torch.Tensor, pos_iou: float = 0.7,
                  neg_iou: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: 1 (IoU > ``pos_iou`` with some box, or the best anchor of a box), 0 (max IoU
    < ``neg_iou``) or -1 (ignored); and the index of its best box."""
    labels = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    if len(gt) == 0:
        labels[:] = 0
        return labels, torch.zeros_like(labels)
    iou = box_iou(anchors, gt)
    best, match = iou.max(1)
    labels[best < neg_iou] = 0
    labels[best > pos_iou] = 1
    gt_best = iou.max(0).values
    ties = (iou == gt_best[None]) & (gt_best[None] > 0)
    labels[ties.any(1)] = 1
    return labels, match


def sample_labels(labels: torch.Tensor, count: int, positive_fraction: float) -> torch.Tensor:
    """Keep at most ``count * positive_fraction`` random positives and fill up to ``count`` with
    random negatives; the others become -1 (ignored)."""
    out = torch.full_like(labels, -1)
    pos = torch.nonzero(labels == 1).flatten()
    neg = torch.nonzero(labels == 0).flatten()
    pos = pos[torch.randperm(len(pos), device=pos.device)[: int(count * positive_fraction)]]
    neg = neg[torch.randperm(len(neg), device=neg.device)[: count - len(pos)]]
    out[pos], out[neg] = 1, 0
    return out


@torch.no_grad()
def proposals(anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, image_size: int,
              pre_nms: int, post_nms: int, nms_iou: float = 0.7, min_size: float = 2.0) -> list[torch.Tensor]:
    """Per image: decode, clip, drop tiny boxes, keep the ``pre_nms`` best, NMS, keep ``post_nms``."""
    out = []
    scores = logits.float().softmax(-1)[..., 1]
    for s, d in zip(scores, deltas.float()):
        boxes = clip_boxes(decode_deltas(anchors, d), image_size, image_size)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= min_size).all(1)
        boxes, s = boxes[keep], s[keep]
        top = s.topk(min(pre_nms, len(s))).indices
        boxes, s = boxes[top], s[top]
        out.append(boxes[nms(boxes, s, nms_iou)[:post_nms]])
    return out
