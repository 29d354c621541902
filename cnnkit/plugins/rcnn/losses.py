"""The R-CNN family's losses: Fast R-CNN's multi-task loss and the RPN's loss."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cnnkit.core.boxes import encode_deltas

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # targets normalised to ~unit variance (1 / (0.1, 0.1, 0.2, 0.2))


def fast_rcnn_loss(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                   rois: torch.Tensor, gt_boxes: torch.Tensor, box_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """L = L_cls(p, u) + lambda [u >= 1] smooth_L1(t^u - v), v the normalised targets of each RoI's
    box; the box term is averaged over all sampled RoIs (as in the paper's implementation)."""
    cls = F.cross_entropy(cls_logits.float(), labels)
    fg = torch.nonzero(labels > 0).flatten()
    if len(fg):
        deltas = box_deltas.float().view(len(labels), -1, 4)[fg, labels[fg] - 1]
        target = encode_deltas(rois[fg], gt_boxes[fg], BOX_WEIGHTS)
        box = F.smooth_l1_loss(deltas, target, beta=1.0, reduction="sum") / max(len(labels), 1)
    else:
        box = box_deltas.sum() * 0.0
    return {"cls": cls, "box": box_weight * box}


def rpn_loss(logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
             anchors: torch.Tensor, matched: torch.Tensor) -> dict[str, torch.Tensor]:
    """Objectness cross entropy over the sampled anchors (labels 0/1, -1 ignored) plus smooth L1
    on the positives' offsets, normalised by the number sampled."""
    sampled = labels >= 0
    obj = F.cross_entropy(logits.float()[sampled], labels[sampled]) if sampled.any() else logits.sum() * 0.0
    pos = labels == 1
    if pos.any():
        target = encode_deltas(anchors[pos], matched[pos])
        box = F.smooth_l1_loss(deltas.float()[pos], target, beta=1 / 9, reduction="sum") / max(int(sampled.sum()), 1)
    else:
        box = deltas.sum() * 0.0
    return {"rpn_obj": obj, "rpn_box": box}
