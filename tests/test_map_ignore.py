"""Ignore regions end to end: COCO crowd annotations and VOC difficult objects reach the targets
and the evaluation, whose mAP equals pycocotools' COCOeval run on the annotation file itself."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from cnnkit.core.base import plugins
from cnnkit.core.data import open_dataset
from cnnkit.core.metrics.measures import Detections, coco_map
from cnnkit.core.tasks.detect import DetectionTransform
from tests.test_data_layouts import _image, coco_json, voc

SIZE = 64


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _crowd_scene(tmp_path):
    """Six 64x64 images: a few objects each and, in half of them, a crowd region of class 1."""
    rng = np.random.default_rng(0)
    names, boxes = [], {}
    for i in range(6):
        name = f"{i:012d}.jpg"
        _image(tmp_path / "val2017" / name, SIZE, seed=i)
        objs = []
        for _ in range(int(rng.integers(1, 4))):
            x, y = rng.uniform(0, 40, 2)
            w, h = rng.uniform(8, 24, 2)
            objs.append((float(x), float(y), float(w), float(h), int(rng.integers(1, 3)), 0))
        if i % 2 == 0:
            objs.append((30.0, 30.0, 34.0, 34.0, 1, 1))
        names.append(name)
        boxes[name] = objs
    return coco_json(tmp_path / "annotations" / "instances_val2017.json", names, boxes)


def _detections(targets, rng) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Jittered copies of the objects, small boxes inside the crowd regions, and false positives."""
    out = []
    for t in targets:
        boxes, labels = [], []
        for box, label in zip(t["boxes"].numpy(), t["labels"].numpy()):
            for _ in range(int(rng.integers(0, 3))):
                boxes.append(box + rng.normal(0, 2.5, 4))
                labels.append(label)
        for box, label in zip(t["ignore_boxes"].numpy(), t["ignore_labels"].numpy()):
            for _ in range(3):
                x, y = rng.uniform(box[:2], box[2:] - 8)
                boxes.append(np.array([x, y, x + 8, y + 8]))
                labels.append(label)
        for _ in range(2):
            x, y = rng.uniform(0, 50, 2)
            boxes.append(np.array([x, y, x + 12, y + 12]))
            labels.append(int(rng.integers(0, 2)))
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        out.append((b, rng.uniform(0.05, 1, len(b)).astype(np.float32), np.asarray(labels, np.int64)))
    return out


def _cocoeval(annotation_file, results) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def test_crowd_regions_reach_the_targets_and_map_equals_cocoeval(tmp_path):
    annotation_file = _crowd_scene(tmp_path)
    ds = open_dataset(str(tmp_path), "val", ("detect",))
    assert ds.report.ignored == 3
    transform = DetectionTransform(SIZE, train=False)
    targets = [transform(ds[i])[1] for i in range(len(ds))]
    assert [len(t["ignore_boxes"]) for t in targets] == [1, 0, 1, 0, 1, 0]
    assert all(t["ignore_crowd"].all() for t in targets)
    np.testing.assert_allclose(targets[0]["ignore_boxes"].numpy(), [[30, 30, 64, 64]], atol=1e-3)

    dets = _detections(targets, np.random.default_rng(1))
    images = [Detections(b, s, c, t["boxes"].numpy(), t["labels"].numpy(), t["ignore_boxes"].numpy(),
                         t["ignore_labels"].numpy(), t["ignore_crowd"].numpy()) for (b, s, c), t in zip(dets, targets)]
    ids = {img["file_name"]: img["id"] for img in json.loads(annotation_file.read_text())["images"]}
    results = [{"image_id": ids[ds[i].path.rsplit("/", 1)[1]], "category_id": int(label) + 1,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(score)}
               for i, (b, s, c) in enumerate(dets) for (x1, y1, x2, y2), score, label in zip(b, s, c)]
    ref_map, ref_map50 = _cocoeval(annotation_file, results)
    ours = coco_map(images, num_classes=2)
    assert 0.05 < ref_map50 < 0.95
    assert ours["map"] == pytest.approx(ref_map, abs=1e-6)
    assert ours["map50"] == pytest.approx(ref_map50, abs=1e-6)
    crowd_as_background = coco_map([Detections(im.boxes, im.scores, im.labels, im.gt_boxes, im.gt_labels)
                                    for im in images], 2)
    assert crowd_as_background["map50"] < ours["map50"]  # the detections inside crowds would be false positives


def test_a_detection_on_a_difficult_object_is_neither_true_nor_false(tmp_path):
    gt = np.array([[2, 2, 20, 20]], np.float32)
    difficult = np.array([[30, 30, 50, 50], [5, 40, 15, 60]], np.float32)
    dets = np.array([[30, 31, 50, 50], [2, 2, 20, 21]], np.float32)  # the difficult one scores higher
    scores, labels = np.array([0.9, 0.8], np.float32), np.array([0, 0])
    voc_like = Detections(dets, scores, labels, gt, np.array([0]), difficult, np.array([0, 0]),
                          np.array([False, False]))
    assert coco_map([voc_like], 1)["map50"] == pytest.approx(1.0)
    dropped = Detections(dets, scores, labels, gt, np.array([0]))
    assert coco_map([dropped], 1)["map50"] == pytest.approx(0.5)  # as it was when difficult objects were deleted

    root = voc(tmp_path / "VOC2007", {"train": 1, "val": 1})  # a dog, and a difficult cat
    sample = open_dataset(str(root), "val")[0]
    _, target = DetectionTransform(32, train=False)(sample)
    np.testing.assert_allclose(target["ignore_boxes"].numpy(), [[17, 17, 30, 30]], atol=1e-3)
    assert target["ignore_crowd"].tolist() == [False]
    _, augmented = DetectionTransform(32, train=True)(sample)
    assert set(augmented) == {"boxes", "labels", "ignore_boxes", "ignore_labels", "ignore_crowd"}
