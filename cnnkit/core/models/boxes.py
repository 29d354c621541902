"""Box formats, IoU, NMS (torchvision.ops) and the R-CNN box coding shared by the detectors."""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms, box_convert, box_iou, nms

__all__ = ["box_iou", "nms", "batched_nms", "box_convert", "encode_deltas", "decode_deltas",
           "wh_iou", "clip_boxes"]


def encode_deltas(proposals: torch.Tensor, targets: torch.Tensor,
                  weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """R-CNN regression targets: t_x=(G_x-P_x)/P_w, t_y=(G_y-P_y)/P_h, t_w=log(G_w/P_w), t_h=log(G_h/P_h)."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
    wx, wy, ww, wh = weights
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                        ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=1)


def decode_deltas(proposals: torch.Tensor, deltas: torch.Tensor,
                  weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                  clamp: float = math.log(1000.0 / 16)) -> torch.Tensor:
    """The inverse of :func:`encode_deltas` (``deltas`` may hold several boxes a row: (N, 4k))."""
    pw, ph = proposals[:, 2:3] - proposals[:, 0:1], proposals[:, 3:4] - proposals[:, 1:2]
    px, py = proposals[:, 0:1] + 0.5 * pw, proposals[:, 1:2] + 0.5 * ph
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw, dh = (deltas[:, 2::4] / ww).clamp(max=clamp), (deltas[:, 3::4] / wh).clamp(max=clamp)
    cx, cy = dx * pw + px, dy * ph + py
    w, h = torch.exp(dw) * pw, torch.exp(dh) * ph
    out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
    return out.reshape(deltas.shape)


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given only as (w, h), as if they shared a centre (anchor matching, k-means)."""
    inter = torch.min(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    out = boxes.clone()
    out[..., 0::2] = out[..., 0::2].clamp(0, width)
    out[..., 1::2] = out[..., 1::2].clamp(0, height)
    return out
