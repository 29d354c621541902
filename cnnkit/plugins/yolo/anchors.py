"""Anchor boxes from dimension clusters (YOLOv2): k-means on box sizes with distance 1 - IoU."""

from __future__ import annotations

from typing import Any

import torch

from cnnkit.api import CnnkitError, wh_iou


def dataset_box_sizes(dataset: Any, img_size: int) -> torch.Tensor:
    """Widths and heights ``(N, 2)`` of every box, in pixels of the image letterboxed to ``img_size``."""
    sizes = []
    for i in range(len(dataset)):
        sample = dataset[i]
        if len(sample.boxes):
            scale = img_size / max(sample.image.shape[:2])
            boxes = torch.as_tensor(sample.boxes, dtype=torch.float32)
            sizes.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    wh = torch.cat(sizes) if sizes else torch.zeros(0, 2)
    return wh[(wh > 0).all(1)]


def kmeans_anchors(wh: torch.Tensor, k: int, iters: int = 300, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``k`` cluster centres of ``wh`` under the distance 1 - IoU, sorted by area, and the mean IoU
    of each box with its best centre."""
    wh = wh.double()
    if k < 1:
        raise CnnkitError("-k must be at least 1")
    if len(wh) < k:
        raise CnnkitError(f"{len(wh)} boxes are too few for {k} anchors")
    generator = torch.Generator().manual_seed(seed)
    centres = wh[torch.randperm(len(wh), generator=generator)[:k]].clone()
    assign = torch.full((len(wh),), -1, dtype=torch.long)
    for _ in range(iters):
        new = wh_iou(wh, centres).argmax(1)
        if torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    centres = centres[centres.prod(1).argsort()]
    mean_iou = float(wh_iou(wh, centres).max(1).values.mean())
    return centres.float(), mean_iou
