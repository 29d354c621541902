"""Which RoIs a head trains on: proposals labelled by IoU with the ground truth, then sampled
with a fixed foreground fraction (R-CNN: 32 of 128; Fast R-CNN: 25% of R/N an image)."""

from __future__ import annotations

import torch

from cnnkit.core.boxes import box_iou


def label_rois(rois: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, fg_iou: float = 0.5,
               bg_iou: tuple[float, float] = (0.1, 0.5)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per RoI: class (1..K foreground, 0 background, -1 neither), its best box, and the IoU."""
    if len(gt_boxes) == 0:
        best = torch.zeros(len(rois), device=rois.device)
        labels = torch.zeros(len(rois), dtype=torch.long, device=rois.device)
        return labels, torch.zeros_like(rois), best
    iou = box_iou(rois, gt_boxes)
    best, match = iou.max(1)
    labels = torch.full((len(rois),), -1, dtype=torch.long, device=rois.device)
    labels[(best >= bg_iou[0]) & (best < bg_iou[1])] = 0
    labels[best >= fg_iou] = gt_labels[match[best >= fg_iou]] + 1
    return labels, gt_boxes[match], best


def sample_rois(labels: torch.Tensor, count: int, fg_fraction: float) -> torch.Tensor:
    """Indices of at most ``count`` RoIs: up to ``fg_fraction`` foreground, the rest background."""
    fg = torch.nonzero(labels > 0).flatten()
    bg = torch.nonzero(labels == 0).flatten()
    fg = fg[torch.randperm(len(fg), device=fg.device)[: round(count * fg_fraction)]]
    bg = bg[torch.randperm(len(bg), device=bg.device)[: count - len(fg)]]
    return torch.cat([fg, bg])
