"""The one matcher and balanced sampler that the RPN and the RoI heads share (torchvision's
``Matcher`` and ``BalancedPositiveNegativeSampler``), and the box coders of both."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher

from cnnkit.api import box_iou

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # head targets normalised to ~unit variance (1 / (0.1, 0.1, 0.2, 0.2))
HEAD_CODER = BoxCoder(BOX_WEIGHTS)
UNIT_CODER = BoxCoder((1.0, 1.0, 1.0, 1.0))  # the RPN and R-CNN's ridge regressors


class Labeller:
    """Boxes -> training labels by IoU with the ground truth: the box's class (1..K; 1 for
    objectness when no classes are given) at IoU >= ``fg_iou``, background (0) below ``bg_iou``
    (and not under ``bg_low``: Fast R-CNN's [0.1, 0.5) background), -1 ignored.
    ``low_quality``: a ground-truth box's best boxes are foreground whatever their IoU (the RPN)."""

    def __init__(self, fg_iou: float, bg_iou: float, bg_low: float = 0.0, low_quality: bool = False) -> None:
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=low_quality)
        self.bg_low = bg_low

    def __call__(self, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor | None = None,
                 ignore: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels (N,) and each box's matched ground-truth box (N, 4); ``ignore`` (N,) bool marks
        boxes left out of matching altogether (the RPN's cross-boundary anchors)."""
        if len(gt_boxes) == 0:
            labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
            if ignore is not None:
                labels[ignore] = -1
            return labels, torch.zeros_like(boxes)
        iou = box_iou(gt_boxes, boxes)
        if ignore is not None:
            iou[:, ignore] = -1.0
        match = self.matcher(iou)
        found = match.clamp(min=0)
        classes = gt_labels + 1 if gt_labels is not None else torch.ones(len(gt_boxes), dtype=torch.long,
                                                                              device=boxes.device)
        labels = torch.where(match >= 0, classes[found], torch.zeros_like(match))
        labels[match == Matcher.BETWEEN_THRESHOLDS] = -1
        if self.bg_low > 0:
            labels[(match == Matcher.BELOW_LOW_THRESHOLD) & (iou.max(0).values < self.bg_low)] = -1
        if ignore is not None:
            labels[ignore] = -1
        return labels, gt_boxes[found]


class Sampler:
    """At most ``count`` boxes an image, up to ``fraction`` of them foreground (labels >= 1), the
    rest background (0), at random."""

    def __init__(self, count: int, fraction: float) -> None:
        self.sampler = BalancedPositiveNegativeSampler(count, fraction)

    def __call__(self, labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The kept indices of each image's labels."""
        pos, neg = self.sampler(labels)
        return [torch.nonzero(p | n).flatten() for p, n in zip(pos, neg)]

    def mask(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` with the boxes left out of the sample set to -1."""
        out = torch.full_like(labels, -1)
        keep = self([labels])[0]
        out[keep] = labels[keep]
        return out
