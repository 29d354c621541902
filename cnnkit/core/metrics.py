"""Metrics: top-k accuracy, COCO-style mAP (as pycocotools computes it), and verification ROC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from cnnkit.core.boxes import box_iou

COCO_IOUS = np.linspace(0.5, 0.95, 10)
COCO_RECALLS = np.linspace(0.0, 1.0, 101)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many rows have the target among their top-k scores, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets[:, None])
    return {k: int(hits[:, : min(k, maxk)].any(1).sum()) for k in ks}


@dataclass
class Detections:
    """One image's predictions and ground truth (xyxy pixels)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def _match(dt: np.ndarray, gt: np.ndarray, iou_thr: np.ndarray) -> np.ndarray:
    """COCO greedy matching: detections in score order take the best unmatched gt (IoU >= thr).
    Returns (T, D) booleans: detection d is a true positive at threshold t."""
    tp = np.zeros((len(iou_thr), len(dt)), dtype=bool)
    if len(dt) == 0 or len(gt) == 0:
        return tp
    ious = box_iou(torch.as_tensor(dt, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)).numpy()
    for t, thr in enumerate(iou_thr):
        taken = np.zeros(len(gt), dtype=bool)
        for d in range(len(dt)):
            best, best_g = min(thr, 1 - 1e-10), -1
            for g in range(len(gt)):
                if taken[g] or ious[d, g] < best:
                    continue
                best, best_g = ious[d, g], g
            if best_g >= 0:
                taken[best_g] = True
                tp[t, d] = True
    return tp


def coco_map(images: Sequence[Detections], num_classes: int, max_dets: int = 100) -> dict[str, float]:
    """``map`` (IoU 0.50:0.95) and ``map50`` over classes that have ground truth, computed the way
    pycocotools' COCOeval does for area "all" (101-point interpolated precision)."""
    ap = np.full((len(COCO_IOUS), num_classes), np.nan)
    for c in range(num_classes):
        scores, tps, n_gt = [], [], 0
        for im in images:
            gt = im.gt_boxes[im.gt_labels == c]
            mask = im.labels == c
            order = np.argsort(-im.scores[mask], kind="mergesort")[:max_dets]
            dt = im.boxes[mask][order]
            n_gt += len(gt)
            scores.append(im.scores[mask][order])
            tps.append(_match(dt, gt, COCO_IOUS))
        if n_gt == 0:
            continue
        s = np.concatenate(scores) if scores else np.zeros(0)
        order = np.argsort(-s, kind="mergesort")
        tp = np.concatenate(tps, axis=1)[:, order] if tps else np.zeros((len(COCO_IOUS), 0), bool)
        tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
        fp_sum = np.cumsum(~tp, axis=1, dtype=np.float64)
        for t in range(len(COCO_IOUS)):
            recall = tp_sum[t] / n_gt
            precision = tp_sum[t] / np.maximum(tp_sum[t] + fp_sum[t], np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
            idx = np.searchsorted(recall, COCO_RECALLS, side="left")
            q = np.zeros(len(COCO_RECALLS))
            valid = idx < len(precision)
            q[valid] = precision[idx[valid]]
            ap[t, c] = q.mean()
    with np.errstate(all="ignore"):
        has = ~np.isnan(ap[0])
        if not has.any():
            return {"map": 0.0, "map50": 0.0, "map75": 0.0}
        return {"map": float(np.nanmean(ap[:, has])), "map50": float(np.nanmean(ap[0, has])),
                "map75": float(np.nanmean(ap[5, has]))}


def pr_curve(images: Sequence[Detections], num_classes: int, iou: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-class (recall, precision) arrays at one IoU threshold, for plotting."""
    curves = []
    for c in range(num_classes):
        scores, tps, n_gt = [], [], 0
        for im in images:
            gt = im.gt_boxes[im.gt_labels == c]
            mask = im.labels == c
            order = np.argsort(-im.scores[mask], kind="mergesort")
            n_gt += len(gt)
            scores.append(im.scores[mask][order])
            tps.append(_match(im.boxes[mask][order], gt, np.array([iou]))[0])
        s, tp = np.concatenate(scores), np.concatenate(tps)
        tp = tp[np.argsort(-s, kind="mergesort")]
        tp_sum, fp_sum = np.cumsum(tp), np.cumsum(~tp)
        curves.append((tp_sum / max(n_gt, 1), tp_sum / np.maximum(tp_sum + fp_sum, 1)))
    return curves


@dataclass
class Verification:
    """ROC summary of genuine/impostor pair distances (smaller distance = same person)."""

    auc: float
    accuracy: float
    threshold: float
    eer: float
    tar_at_far: float
    far: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def as_dict(self) -> dict[str, float]:
        return {"auc": self.auc, "accuracy": self.accuracy, "threshold": self.threshold,
                "eer": self.eer, "tar_at_far": self.tar_at_far}


def verification_metrics(distances: np.ndarray, same: np.ndarray, far: float = 1e-3) -> Verification:
    """ROC AUC, accuracy at the best threshold (``distance <= threshold`` means "same"),
    equal error rate, and the true-accept rate at a false-accept rate of ``far``."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("verification needs both genuine and impostor pairs")
    order = np.argsort(d, kind="mergesort")
    d, y = d[order], y[order]
    last = np.r_[np.nonzero(np.diff(d))[0], len(d) - 1]  # accept all pairs up to each distinct distance
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = np.cumsum(~y)[last].astype(np.float64)
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[d[0] - 1e-6, d[last]]
    auc = float(np.trapezoid(tpr, fpr))
    acc = (tpr * n_pos + (1 - fpr) * n_neg) / (n_pos + n_neg)
    best = int(np.argmax(acc))
    fnr = 1 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    eer = float((fnr[i] + fpr[i]) / 2)
    ok = fpr <= far
    tar = float(tpr[ok].max()) if ok.any() else 0.0
    return Verification(auc, float(acc[best]), float(thresholds[best]), eer, tar, far, fpr, tpr, thresholds)
