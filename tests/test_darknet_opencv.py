"""OpenCV's Darknet reader (``cv2.dnn.readNetFromDarknet``) as the oracle for Darknet's configs:
random weights written by cnnkit's .weights writer, read by OpenCV, the same blob into both, at
320, 416 and 608. cnnkit's decoded boxes and scores must equal OpenCV's ``[yolo]`` / ``[region]``
outputs (relative error <= 1e-4 on boxes, absolute <= 1e-4 on scores). OpenCV refuses yolov1 and
yolov1-tiny (``[local]``, ``[detection]``), so they are not here. The tiny networks run at the three
sizes by default; the large ones at 320 by default and at all three in the slow run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.plugins.yolo.darknet import model_from_cfg, packaged_cfg, parse_cfg
from cnnkit.plugins.yolo.task import decode
from cnnkit.plugins.yolo.weights import save_darknet_weights

cv2 = pytest.importorskip("cv2")

SIZES = (320, 416, 608)
SMALL = ("yolov2-tiny", "yolov2-tiny-voc", "yolov3-tiny")
LARGE = ("yolov2", "yolov2-voc", "yolov3", "yolov3-voc", "yolov3-spp")
CASES = [pytest.param(n, s, id=f"{n}-{s}") for n in SMALL for s in SIZES] + [
    pytest.param(n, s, id=f"{n}-{s}", marks=[pytest.mark.slow] if s != 320 else [])
    for n in LARGE for s in SIZES]


def random_darknet(cfg: Path, seed: int = 0) -> torch.nn.Module:
    """The .cfg's network with random weights whose activations stay near unit scale at any depth:
    batch-norm statistics taken from one random image and folded into the convolution, so every
    running variance is 1 (a data-dependent init that leaves no near-zero variance, where Darknet's
    ``sqrt(var) + 1e-6`` and OpenCV's ``sqrt(var + 1e-6)`` would part); the heads' box outputs scaled down
    (float32 rounding over 100 layers moves t_w by ~1e-4 of its size, and e^t_w carries that into
    the box), objectness and class outputs scaled up so that many scores clear OpenCV's threshold
    (it writes 0 below it)."""
    torch.manual_seed(seed)
    model = model_from_cfg(cfg=cfg)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
        torch.nn.init.uniform_(m.weight, 0.5, 1.5)
        torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    with torch.no_grad():
        model.train()(torch.rand(1, 3, 320, 320))
        for block in model.layers:
            if isinstance(block, torch.nn.Sequential) and isinstance(block[0], torch.nn.Conv2d) and len(block) > 1 \
                    and isinstance(block[1], torch.nn.BatchNorm2d):
                conv, bn = block[0], block[1]
                std = bn.running_var.sqrt()
                conv.weight.div_(std[:, None, None, None])
                bn.running_mean.div_(std)
                bn.running_var.fill_(1.0)
        peak = 6.0 if model.family == "yolov2" else 2.0  # a softmax over 80 classes needs peaked logits
        for i, anchors in zip(model.heads, model.anchors):
            conv = model.layers[i - 1][0]
            for t in (conv.weight, conv.bias):
                rows = t.view(len(anchors), 5 + model.num_classes, -1)
                rows[:, :4].mul_(0.5)  # t_x..t_h within about +-1: box sizes e^-1..e^1 times the anchors
                rows[:, 4:].mul_(peak)
    return model.eval()


def opencv_rows(cfg: Path, weights: Path, blob: np.ndarray) -> np.ndarray:
    """OpenCV's head outputs as one ``(N, 5 + C)`` array: cx, cy, w, h (fractions of the input),
    objectness, then objectness x class probability, cells in row-major order, anchors innermost."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.enableWinograd(False)  # its fast 3x3 convolutions round differently (~1e-3 after 75 layers)
    net.setInput(blob)
    return np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(net.getUnconnectedOutLayersNames())])


def cnnkit_rows(model: torch.nn.Module, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cnnkit's decoded boxes (fractions of the input) and scores, in OpenCV's row order."""
    size = blob.shape[-1]
    with torch.no_grad():
        outputs = model(torch.from_numpy(blob))
        boxes, scores = decode(model, outputs, size)
    order, start = [], 0  # ours: per head (anchor, y, x); OpenCV's: per head (y, x, anchor)
    for out, anchors in zip(outputs, model.anchors):
        a, (h, w) = len(anchors), out.shape[-2:]
        order.append(start + torch.arange(a * h * w).view(a, h, w).permute(1, 2, 0).reshape(-1))
        start += a * h * w
    index = torch.cat(order)
    return (boxes[0, index] / size).numpy(), scores[0, index].numpy()


def oracle_errors(name: str, size: int, tmp_path: Path) -> tuple[float, float]:
    """Max relative box error and max absolute score error between cnnkit and OpenCV."""
    cfg = packaged_cfg(name)
    model = random_darknet(cfg)
    weights = save_darknet_weights(model, tmp_path / f"{name}.weights")
    blob = np.random.RandomState(size).rand(1, 3, size, size).astype(np.float32)
    theirs = opencv_rows(cfg, weights, blob)
    boxes, scores = cnnkit_rows(model, blob)
    assert theirs.shape == (len(boxes), 5 + scores.shape[1])
    box_err = np.abs(boxes - theirs[:, :4]) / np.maximum(np.abs(theirs[:, :4]), 1e-3)
    # OpenCV writes 0 for a class score at or below the head's thresh= (0.2 when the .cfg has none,
    # [region]'s .6 in yolov2*.cfg), and for boxes its region layer suppresses: the scores it keeps
    # are compared, and every score of ours below the threshold must be one OpenCV dropped
    thresh = float(next(s for s in parse_cfg(cfg) if s["type"] in ("yolo", "region")).get("thresh", 0.2))
    kept = theirs[:, 5:] > 0
    assert kept.any() and not kept[scores < thresh - 1e-4].any()
    return float(box_err.max()), float(np.abs(scores - theirs[:, 5:])[kept].max())


@pytest.mark.parametrize("name,size", CASES)
def test_boxes_and_scores_equal_opencvs(name, size, tmp_path):
    box_err, score_err = oracle_errors(name, size, tmp_path)
    assert box_err <= 1e-4 and score_err <= 1e-4, (box_err, score_err)


def opencv_detections(cfg: Path, weights: Path, image_path: Path, size: int, conf: float, iou: float) -> list:
    """Darknet's detect as an OpenCV user writes it: every (box, class) whose score (objectness x class
    probability) exceeds ``conf``, boxes clipped to the image, class-wise NMS (cv2.dnn.NMSBoxesBatched)."""
    image = cv2.imread(str(image_path))
    blob = cv2.dnn.blobFromImage(image, 1 / 255, (size, size), swapRB=True, crop=False)
    rows = opencv_rows(cfg, weights, blob)
    h, w = image.shape[:2]
    found = []
    for row in rows:
        for label in np.nonzero(row[5:] > conf)[0]:
            cx, cy, bw, bh = row[:4] * [w, h, w, h]
            x1, y1 = max(cx - bw / 2, 0.0), max(cy - bh / 2, 0.0)
            x2, y2 = min(cx + bw / 2, float(w)), min(cy + bh / 2, float(h))
            found.append(([x1, y1, x2, y2], float(row[5 + label]), int(label)))
    rects = [[x1, y1, x2 - x1, y2 - y1] for (x1, y1, x2, y2), _, _ in found]
    keep = cv2.dnn.NMSBoxesBatched(rects, [s for _, s, _ in found], [c for _, _, c in found], conf, iou)
    return sorted((found[i] for i in np.array(keep).reshape(-1)), key=lambda d: -d[1])


def test_cli_detect_with_a_cfg_and_weights_equals_opencvs_detections(cli, tmp_path):
    """`cnnkit detect CFG --weights FILE.weights IMAGE --img-size 608 --json` against OpenCV's
    detections after NMS. The preprocessings are made equal by the image: a 608 x 608 PNG (lossless),
    so cnnkit's letterbox and OpenCV's blobFromImage resize are both the identity, and both feed
    RGB / 255 (swapRB=True, scale 1/255); boxes are clipped to the image before NMS on both sides."""
    from cnnkit.core.data.images import write_image

    cfg = Path(shutil.copy(packaged_cfg("yolov3-tiny"), tmp_path / "tiny.cfg"))
    weights = save_darknet_weights(random_darknet(cfg, seed=1), tmp_path / "tiny.weights")
    image = tmp_path / "scene.png"
    yy, xx = np.mgrid[0:608, 0:608]
    pixels = np.stack([(xx * 255 // 607), (yy * 255 // 607), ((xx + yy) % 256)], -1).astype(np.uint8)
    write_image(image, pixels)
    conf, iou = 0.9, 0.45  # random weights: 25 detections above 0.9
    r = cli("detect", cfg, "--weights", weights, image, "--img-size", "608", "--conf", conf, "--iou", iou,
            "--json", "--no-save")
    assert r.code == 0, r.stderr
    ours = json.loads(r.stdout)[0]["detections"]
    theirs = opencv_detections(cfg, weights, image, 608, conf, iou)
    assert 3 <= len(theirs) <= 100 and len(ours) == len(theirs)
    for d, (box, score, label) in zip(ours, theirs):
        assert d["label"] == label and d["class"] == str(label)  # no --names: class numbers
        assert d["score"] == pytest.approx(score, abs=1e-4)
        assert d["box"] == pytest.approx(box, abs=0.02)
