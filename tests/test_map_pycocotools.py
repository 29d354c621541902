"""cnnkit.core.metrics.measures.coco_map must give pycocotools' COCOeval (bbox, area "all", maxDets 100)
numbers on the same detections and ground truth."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from cnnkit.core.metrics.measures import Detections, coco_map, pr_curve


def _scene(seed: int, num_images: int = 12, num_classes: int = 4) -> list[Detections]:
    """Ground truth plus detections that are jittered copies (IoU spread over 0.3..1), duplicates,
    random false positives, images without objects, a class without ground truth, and an image
    with more than 100 detections of one class."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        n = 0 if i % 5 == 4 else int(rng.integers(1, 8))
        xy = rng.uniform(0, 400, (n, 2))
        wh = rng.uniform(8, 120, (n, 2))
        gt = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        gt_labels = rng.integers(0, num_classes - 1, n)  # the last class never has ground truth
        boxes, labels = [], []
        for box, label in zip(gt, gt_labels):
            for _ in range(int(rng.integers(0, 3))):
                w, h = box[2] - box[0], box[3] - box[1]
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                boxes.append(box + jitter)
                labels.append(label if rng.random() < 0.85 else rng.integers(0, num_classes))
        extra = 130 if i == 0 else int(rng.integers(0, 6))
        for _ in range(extra):
            x, y = rng.uniform(0, 450, 2)
            w, h = rng.uniform(5, 100, 2)
            boxes.append(np.array([x, y, x + w, y + h]))
            labels.append(0 if i == 0 else rng.integers(0, num_classes))
        boxes_a = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        boxes_a[:, 2:] = np.maximum(boxes_a[:, 2:], boxes_a[:, :2] + 1)
        images.append(Detections(boxes_a, rng.uniform(0.01, 1, len(boxes_a)).astype(np.float32),
                                 np.asarray(labels, dtype=np.int64), gt, gt_labels.astype(np.int64)))
    return images


def _pycocotools(images: list[Detections], num_classes: int) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: np.ndarray) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in b)
        return [x1, y1, x2 - x1, y2 - y1]

    anns, results = [], []
    for i, im in enumerate(images):
        for box, label in zip(im.gt_boxes, im.gt_labels):
            bb = xywh(box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
        for box, score, label in zip(im.boxes, im.scores, im.labels):
            results.append({"image_id": i, "category_id": int(label), "bbox": xywh(box), "score": float(score)})
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": 512, "height": 512} for i in range(len(images))],
                  "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_map_equals_pycocotools(seed):
    images = _scene(seed)
    ours = coco_map(images, num_classes=4)
    ref_map, ref_map50 = _pycocotools(images, 4)
    assert 0.05 < ref_map50 < 0.95  # a scene that tests something
    assert ours["map"] == pytest.approx(ref_map, abs=1e-6)
    assert ours["map50"] == pytest.approx(ref_map50, abs=1e-6)


def test_perfect_and_empty_detections():
    gt = np.array([[10, 10, 50, 50], [60, 60, 90, 120]], dtype=np.float32)
    labels = np.array([0, 1])
    perfect = [Detections(gt.copy(), np.array([0.9, 0.8], np.float32), labels, gt, labels)]
    assert coco_map(perfect, 2)["map"] == pytest.approx(1.0)
    empty = [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), gt, labels)]
    assert coco_map(empty, 2)["map50"] == 0.0
    recall, precision = pr_curve(perfect, 2)[0]
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(1.0)
