"""Metrics: top-k accuracy, detection mAP (pycocotools' COCOeval), and verification ROC."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many rows have the target among their top-k scores, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top.eq(targets[:, None])
    return {k: int(hits[:, : min(k, maxk)].any(1).sum()) for k in ks}


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass
class Detections:
    """One image's predictions and ground truth (xyxy pixels), with its ignore regions
    (``ignore_crowd``: a COCO crowd region, else a VOC difficult object)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    ignore_boxes: np.ndarray = field(default_factory=_no_boxes)
    ignore_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def _xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)


def _annotations(boxes: np.ndarray, labels: np.ndarray, image_id: int, first_id: int,
                 **extra: Any) -> list[dict[str, Any]]:
    out = []
    for n, (box, label) in enumerate(zip(_xywh(boxes).tolist(), np.asarray(labels).tolist())):
        ann = {"id": first_id + n, "image_id": image_id, "category_id": int(label), "bbox": box,
               "area": box[2] * box[3], "iscrowd": 0}
        out.append(ann | {k: (v[n].item() if isinstance(v, np.ndarray) else v) for k, v in extra.items()})
    return out


def coco_eval(images: Sequence[Detections], num_classes: int, iou_thrs: Sequence[float] | None = None,
              max_dets: int = 100) -> Any:
    """pycocotools' ``COCOeval`` (bbox), evaluated and accumulated on these images.

    Crowd regions are ``iscrowd`` ground truth; difficult objects are ground truth flagged
    ``ignore`` (matched with plain IoU: a detection on one is neither a true nor a false
    positive, as in VOC, though a second detection on it is a false positive, as in COCO)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class IgnoringEval(COCOeval):
        def _prepare(self) -> None:
            super()._prepare()
            for gts in self._gts.values():
                for g in gts:
                    g["ignore"] = g["ignore"] or g.get("difficult", False)

    gts, dts = [], []
    for i, im in enumerate(images):
        gts += _annotations(im.gt_boxes, im.gt_labels, i, len(gts) + 1)
        gts += _annotations(im.ignore_boxes, im.ignore_labels, i, len(gts) + 1,
                            iscrowd=im.ignore_crowd.astype(int), difficult=~im.ignore_crowd)
        dts += _annotations(im.boxes, im.labels, i, len(dts) + 1, score=np.asarray(im.scores, np.float64))
    meta = {"images": [{"id": i} for i in range(len(images))],
            "categories": [{"id": c, "name": str(c)} for c in range(num_classes)]}
    gt, dt = COCO(), COCO()
    gt.dataset, dt.dataset = {**meta, "annotations": gts}, {**meta, "annotations": dts}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt.createIndex()
        ev = IgnoringEval(gt, dt, "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = np.asarray(iou_thrs, np.float64)
        ev.params.maxDets = [1, 10, max_dets]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]  # what cnnkit reports
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else 0.0


def coco_map(images: Sequence[Detections], num_classes: int, max_dets: int = 100) -> dict[str, float]:
    """``map`` (IoU 0.50:0.95), ``map50`` and ``map75`` over the classes that have ground truth:
    COCOeval's bbox AP for area "all" and ``max_dets`` detections an image."""
    if not any(len(im.gt_labels) for im in images):
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    ev = coco_eval(images, num_classes, max_dets=max_dets)
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (iou, recall, class) for area all, max_dets
    return {"map": _mean(precision), "map50": _mean(precision[0]), "map75": _mean(precision[5])}


def pr_curve(images: Sequence[Detections], num_classes: int, iou: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-class COCOeval precision at its 101 recall points for one IoU threshold, up to the
    highest recall reached (empty for a class without ground truth), for plotting."""
    curves = []
    if not any(len(im.gt_labels) for im in images):
        return [(np.zeros(0), np.zeros(0)) for _ in range(num_classes)]
    ev = coco_eval(images, num_classes, iou_thrs=[iou])
    recalls = ev.params.recThrs
    for c in range(num_classes):
        precision = ev.eval["precision"][0, :, c, 0, -1]
        reached = recalls <= ev.eval["recall"][0, c, 0, -1] if precision[0] > -1 else np.zeros(len(recalls), bool)
        curves.append((recalls[reached], precision[reached]))
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
