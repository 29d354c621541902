"""YOLO end to end: train (losses fall), eval, detect, anchors, multi-scale and option errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnkit.core.base import plugins
from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.registry import models
from cnnkit.core.data.images import write_image
from cnnkit.core.data.synthetic import Shapes
from cnnkit.core.weights.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.plugins.yolo.anchors import kmeans_anchors
from cnnkit.plugins.yolo.task import YoloTask, scale_choices
from tests.conftest import assert_detect_maps_back, optimise

TINY = ["--data", "synthetic:shapes?n=32&size=64", "--img-size", "64", "--batch-size", "8", "--no-track"]


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _losses(path: str) -> list[float]:
    return [h["train_loss"] for h in load_checkpoint(path)["history"]]


@pytest.mark.slow
def test_tiny_yolov3_train_eval_detect_with_custom_anchors(cli, tmp_path):
    anchors = "8,8 12,12 16,16 20,20 26,26 32,32"
    r = cli("train", "yolov3-tiny", *TINY, "--epochs", "3", "--lr", "3e-4", "--out", "run", "--anchors", anchors,
            "--ignore-thresh", "0.7")
    assert r.code == 0, r.stderr
    ck = load_checkpoint("run/weights/best.pt")
    stored = ck["task_state"]["anchors"]  # [yolo] anchors: input pixels, as given
    assert torch.allclose(stored, torch.tensor([[float(v) for v in p.split(",")] for p in anchors.split()]))
    assert ck["config"]["options"] == {"anchors": anchors, "ignore_thresh": 0.7}
    assert _losses("run/weights/last.pt")[-1] < _losses("run/weights/last.pt")[0]

    r = cli("eval", "run/weights/best.pt", "--json")
    assert r.code == 0, r.stderr
    metrics = json.loads(r.stdout)  # 3 short epochs learn little (map50 0.0045): the floor is tested below
    assert metrics["map50"] == pytest.approx(ck["metrics"]["val_map50"], abs=1e-9)  # eval = training's validation

    image = Shapes("val", n=8, size=96)[0].image[:80]  # not square: boxes map back through the letterbox
    write_image(tmp_path / "img.png", image)
    r = cli("detect", "run/weights/best.pt", tmp_path / "img.png", "--conf", "0.001", "--json",
            "--save-dir", tmp_path / "out")
    assert r.code == 0, r.stderr
    (result,) = json.loads(r.stdout)
    assert result["image"].endswith("img.png") and (tmp_path / "out" / "img.jpg").is_file()
    assert_detect_maps_back(result["detections"], "run/weights/best.pt", image, 0.001)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov3", "yolov2", "yolov1"])
def test_full_size_detectors_train_and_their_loss_falls(name):
    """The big networks (62M, 51M, 272M parameters) through their task: data, loader, multi-scale
    loss, gradient steps, then decoding. No checkpoints, to keep the suite's disk and time small."""
    torch.manual_seed(0)
    config = TrainConfig(model=name, data="synthetic:shapes?n=2&size=64", img_size=64, batch_size=2)
    task = YoloTask(models.get(name), config)
    batch = next(iter(task.loader(task.dataset("train"), train=False)))
    model = task.build_model()
    for m in model.modules():  # a smooth, deterministic function of the weights for a descent check:
        if isinstance(m, torch.nn.Dropout):  # no dropout (YOLOv1),
            m.p = 0.0
        if isinstance(m, torch.nn.BatchNorm2d):  # and no batch statistics of two 1x1 maps
            m.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    losses, parts = optimise(task, model, batch, optimizer, steps=3)
    assert set(parts) == {"loss", "box", "obj", "cls"}
    assert losses[2] < losses[1] < losses[0]
    model.eval()
    (boxes, scores, labels), _ = task.predict_batch(model, batch[0], conf=0.0, iou=0.5)
    assert boxes.shape[1] == 4 and len(boxes) == len(scores) == len(labels) <= 100
    # Clipping keeps any box inside the image; it cannot put the boxes where the grid is. Decoded with
    # the cells' offsets and the stride (the inference graph's boxes, before clipping), the untrained,
    # near-uniform predictions are centred all over the image, every quadrant holding about a quarter
    # of them (a decode without the cell offsets or with the wrong stride crowds them into one corner).
    with torch.no_grad():
        decoded, _ = task.inference(model)(batch[0])
    centres = (decoded[..., :2] + decoded[..., 2:]) / 2
    quadrants = (centres >= 32).long()
    shares = torch.stack([((quadrants[..., 0] == i) & (quadrants[..., 1] == j)).float().mean()
                          for i in (0, 1) for j in (0, 1)])
    assert (shares > 0.15).all(), shares


# A detector must fit the images it trains on: Adam (lr 1e-3) on one batch of 8 shapes at 64 px
# (no multi-scale), then map50 on that same batch. Measured with 1 thread: yolov3-tiny untrained
# 0.0, 50 steps 0.53, 75 steps 0.95 (13 s of CPU), 100 steps 1.0; yolov2-tiny untrained 0.005,
# 75 steps 0.50, 100 steps 0.68, 125 steps 0.96 (24 s). An untrained model, or one whose
# target assignment, loss or box decoding is broken, stays near 0; the floor sits well between.
FIT_FLOOR = 0.5


def _batch_map50(task: YoloTask, model: torch.nn.Module, batch) -> float:
    from cnnkit.core.metrics.measures import Detections, coco_map

    images, targets = batch
    predictions = task.predict_batch(model.eval(), images, task.eval_conf, task.eval_iou)
    dets = [Detections(b.float().numpy(), s.float().numpy(), c.numpy(), t["boxes"].numpy(), t["labels"].numpy())
            for (b, s, c), t in zip(predictions, targets)]
    return coco_map(dets, 3)["map50"]


@pytest.mark.slow
@pytest.mark.parametrize("name,steps", [("yolov3-tiny", 75), ("yolov2-tiny", 125)])
def test_detector_fits_its_training_batch_above_an_untrained_floor(name, steps):
    torch.manual_seed(0)
    config = TrainConfig(model=name, data="synthetic:shapes?n=8&size=64", img_size=64, batch_size=8,
                         options={"multi_scale": False})
    task = YoloTask(models.get(name), config)
    batch = next(iter(task.loader(task.dataset("train"), train=False)))
    model = task.build_model()
    assert _batch_map50(task, model, batch) < FIT_FLOOR / 5  # untrained
    optimise(task, model.train(), batch, torch.optim.Adam(model.parameters(), lr=1e-3), steps=steps)
    assert _batch_map50(task, model, batch) >= FIT_FLOOR


def test_multi_scale_sizes_change_every_ten_batches():
    assert scale_choices(416) == list(range(320, 608 + 1, 32))
    assert scale_choices(128) == [96, 128, 160, 192]
    task = YoloTask(models.get("yolov3-tiny"), TrainConfig(model="yolov3-tiny", img_size=416))
    sizes = [task.train_size(step) for step in range(200)]
    assert all(len(set(sizes[i:i + 10])) == 1 for i in range(0, 200, 10))
    assert len(set(sizes)) > 3 and set(sizes) <= set(scale_choices(416))
    assert sizes == [task.train_size(step) for step in range(200)]  # fixed by the step: resume gives the same


def test_loss_resizes_images_and_boxes_for_multi_scale():
    config = TrainConfig(model="yolov3-tiny", img_size=64)
    task = YoloTask(models.get("yolov3-tiny"), config, classes=["a", "b", "c"])
    model = task.build_model()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    step = next(s for s in range(0, 1000, 10) if task.train_size(s) != 64)
    parts = task.loss(model, (images, targets), step)
    assert seen == [task.train_size(step)] and torch.isfinite(parts["loss"])
    task.config.options = {"multi_scale": False}
    task.loss(model, (images, targets), step)
    assert seen[-1] == 64


def test_kmeans_recovers_clusters_sorted_by_area():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 30.0], [40.0, 40.0], [120.0, 60.0]])
    wh = torch.cat([c * (1 + 0.05 * torch.randn(50, 2, generator=gen)) for c in centres])
    anchors, mean_iou = kmeans_anchors(wh, 3)
    assert torch.allclose(anchors, centres, rtol=0.05)
    assert mean_iou > 0.85


def test_anchors_command(cli):
    r = cli("anchors", "--data", "synthetic:shapes?n=32&size=64", "-k", "4", "--img-size", "128", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    areas = [w * h for w, h in out["anchors"]]
    assert len(areas) == 4 and areas == sorted(areas)
    assert 0.5 < out["mean_iou"] <= 1 and out["img_size"] == 128
    assert all(20 < w < 70 and 20 < h < 70 for w, h in out["anchors"])  # shapes are 18-45% of the image
    # [region] anchors in Darknet's units: 32-pixel grid cells
    assert np.allclose(out["grid_cells"], np.array(out["anchors"]) / 32, atol=2e-3)
    r = cli("anchors", "--data", "synthetic:shapes?n=32&size=64", "-k", "4", "--img-size", "128")
    region = [line for line in r.stdout.splitlines() if line.startswith(".cfg: [region] anchors = ")]
    assert len(region) == 1 and region[0].count(",") == 7, r.stdout  # a whole line when piped (not wrapped at 80)
    r = cli("anchors", "--data", "synthetic:shapes?n=4", "-k", "50")
    assert r.code == 2 and "too few" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["yolov3-tiny", "--anchors", "1,2,3"], "--anchors"),
    (["yolov3-tiny", "--anchors", "10,10 20,20 30,30"], "multiple of 2"),
    (["yolov1", "--anchors", "10,10"], "no anchors"),
    (["yolov3", "--ignore-treshold", "0.7"], "unknown option"),
])
def test_bad_yolo_options_are_one_line_errors(cli, args, message):
    r = cli("train", *args, "--data", "synthetic:shapes?n=4&size=64", "--img-size", "64", "--no-track")
    assert r.code == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_auto_anchors_come_from_the_training_boxes():
    config = TrainConfig(model="yolov3-tiny", data="synthetic:shapes?n=32&size=64", img_size=64,
                         options={"anchors": "auto"})
    task = YoloTask(models.get("yolov3-tiny"), config)
    task.raw_dataset("train")
    model = task.build_model()
    anchors = torch.cat(model.anchors)  # [yolo] anchors: input pixels at --img-size 64
    assert len(anchors) == 6 and anchors.min() > 8 and anchors.max() < 40
    areas = task.state["anchors"].prod(1).numpy()
    assert np.allclose(np.sort(areas), areas)


@pytest.mark.slow
def test_eval_with_workers_and_batched_detect_match_the_serial_figures(cli, tmp_path):
    """`cnnkit eval` uses the checkpoint's --workers: the figures are the same as with none; and
    `cnnkit detect` in batches of 3 finds what it finds one image at a time."""
    r = cli("train", "yolov3-tiny", *TINY, "--epochs", "1", "--lr", "3e-4", "--out", "run", "--workers", "0")
    assert r.code == 0, r.stderr
    ck = load_checkpoint("run/weights/last.pt")
    ck["config"]["workers"] = 2
    save_checkpoint("run/weights/workers.pt", ck)
    serial, parallel = (json.loads(cli("eval", f"run/weights/{name}.pt", "--json").stdout)
                        for name in ("last", "workers"))
    assert serial == parallel and "map50" in serial

    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.png", Shapes("val", n=8, size=96)[i].image[: 70 + 8 * i])
    one, three = (json.loads(cli("detect", "run/weights/last.pt", tmp_path / "imgs", "--conf", "0.01", "--json",
                                 "--no-save", "--batch-size", str(b)).stdout) for b in (1, 3))
    assert [r["image"] for r in one] == [r["image"] for r in three] and len(one) == 4
    for a, b in zip(one, three):
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"]):
            assert da["box"] == pytest.approx(db["box"], abs=1e-3)
            assert da["score"] == pytest.approx(db["score"], abs=1e-4)
