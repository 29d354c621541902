"""Box formats, IoU and NMS (torchvision.ops), and the box helpers the detectors share."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert, box_iou, nms

__all__ = ["box_iou", "nms", "batched_nms", "box_convert", "wh_iou", "clip_boxes"]


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given only as (w, h), as if they shared a centre (anchor matching, k-means)."""
    inter = torch.min(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """xyxy boxes clipped to a ``height`` x ``width`` image."""
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out
