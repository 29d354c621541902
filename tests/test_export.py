"""`cnnkit export` for every family, and the exported file run through the same commands as the
checkpoint: onnxruntime is the second implementation (the answers must agree)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.data.images import write_image
from cnnkit.core.load.source import load_for_eval
from cnnkit.core.tasks.base import make_task
from cnnkit.core.weights.checkpoint import save_checkpoint
from tests.conftest import one_clear_line, run_cli

SHAPES = ["circle", "square", "triangle"]


def untrained(name: str, path: Path, img_size: int, classes: list[str] | None = None, seed: int = 0) -> Path:
    """A checkpoint of ``name`` as built (seeded random weights), saved with the checkpoint code."""
    load_plugins()
    torch.manual_seed(seed)
    config = TrainConfig(model=name, img_size=img_size)
    task = make_task(models.get(name), config, classes=classes)
    model = task.build_model().eval()
    return save_checkpoint(path, {"model": name, "task": models.get(name).task, "model_state": model.state_dict(),
                                  "config": config.to_dict(), "classes": classes, "task_state": task.state})


def photos(folder: Path, n: int = 2, shape: tuple[int, int] = (72, 96)) -> list[Path]:
    rng = np.random.default_rng(3)
    return [write_image(folder / f"p{i}.png", rng.integers(0, 255, (*shape, 3), np.uint8)) for i in range(n)]


def exported(ckpt: Path, *flags: str) -> tuple[Path, dict]:
    r = run_cli("export", ckpt, "--json", *flags)
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert Path(report["output"]).is_file() and report["max_diff"] <= report["tolerance"]
    return Path(report["output"]), report


def detect_json(model: Path, images: list[Path], conf: float) -> list[dict]:
    r = run_cli("detect", model, *images, "--conf", str(conf), "--json", "--no-save")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def assert_same_detections(a: list[dict], b: list[dict]) -> None:
    """Same boxes (to the JSON's 0.01 px rounding) and scores (its 1e-4 rounding), same labels."""
    assert [r["image"] for r in a] == [r["image"] for r in b]
    for ra, rb in zip(a, b):
        assert len(ra["detections"]) == len(rb["detections"])
        left = list(rb["detections"])  # equal scores may come in either order: match each one
        for da in ra["detections"]:
            same = [db for db in left if da["label"] == db["label"] and abs(da["score"] - db["score"]) <= 1.01e-4
                    and np.abs(np.subtract(da["box"], db["box"])).max() <= 0.0101]
            assert same, da
            left.remove(same[0])


def raw_predictions(ckpt: Path, onnx: Path, size: int, conf: float) -> None:
    """The boxes and scores before rounding agree within 1e-4 (scores: of their largest)."""
    task, model, _ = load_for_eval(ckpt)
    _, ours, _ = load_for_eval(onnx)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5))
    for (b1, s1, l1), (b2, s2, l2) in zip(task.predict_batch(model, x, conf, 0.45),
                                          task.predict_batch(ours, x, conf, 0.45)):
        assert len(s1) > 0 and torch.equal(l1, l2)
        assert (b1 - b2).abs().max() <= 1e-4 and (s1 - s2).abs().max() <= 1e-4 * max(1.0, float(s1.max()))


@pytest.mark.parametrize("name,size,conf", [("yolov3-tiny", 64, 0.004), ("yolov2-tiny-voc", 64, 0.15),
                                            ("yolov1-tiny", 64, 2e-5)])  # untrained: scores near their priors
def test_yolo_export_detects_like_checkpoint(tmp_path, name, size, conf):
    """YOLOv3 (hand-written), YOLOv2 and YOLOv1 (Darknet .cfg): decoded boxes + scores in the
    graph, NMS outside; `cnnkit detect FILE.onnx` prints the checkpoint's JSON."""
    ckpt = untrained(name, tmp_path / f"{name}.pt", size, SHAPES)
    onnx, report = exported(ckpt)
    assert onnx == tmp_path / f"{name}.onnx" and report["input"] == [1, 3, size, size]
    images = photos(tmp_path)
    ours, theirs = detect_json(ckpt, images, conf), detect_json(onnx, images, conf)
    assert sum(len(r["detections"]) for r in ours) > 0
    assert_same_detections(ours, theirs)
    raw_predictions(ckpt, onnx, size, conf)


def test_export_metadata_and_batches(tmp_path):
    """The file says what it is (task, classes, size, normalisation); --dynamic-batch takes any batch."""
    import onnx
    import onnxruntime as ort

    ckpt = untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)
    path, report = exported(ckpt, "--dynamic-batch", "--img-size", "96", "-o", tmp_path / "out" / "y.onnx")
    assert report["input"] == [2, 3, 96, 96]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["task"] == "detect" and json.loads(meta["classes"]) == SHAPES and meta["img_size"] == "96"
    assert json.loads(meta["normalization"]) is None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores = session.run(None, {"images": np.random.rand(3, 3, 96, 96).astype(np.float32)})
    assert boxes.shape == (3, 3 * (3 * 3 + 6 * 6), 4) and scores.shape == (3, boxes.shape[1], 3)
    r = run_cli("detect", path, *photos(tmp_path), "--img-size", "64", "--no-save")
    one_clear_line(r, "takes inputs of shape", "--img-size")


def test_yolo_export_with_nms_inside(tmp_path):
    """--nms: the graph ends in ONNX NonMaxSuppression and gives the final detections; `cnnkit
    detect` on it prints the checkpoint's (at the graph's threshold or above)."""
    import onnx

    ckpt = untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)
    path, _ = exported(ckpt, "--nms", "--conf", "0.004", "--iou", "0.5", "-o", tmp_path / "nms.onnx")
    graph = onnx.load(str(path))

    def ops(g):  # torchvision's batched_nms is scripted: its NMS sits in an If node's branch
        return {n.op_type for n in g.node} | {op for n in g.node for a in n.attribute if a.g.node for op in ops(a.g)}

    assert "NonMaxSuppression" in ops(graph.graph)
    assert json.loads({p.key: p.value for p in graph.metadata_props}["nms"]) == {"conf": 0.004, "iou": 0.5}
    images = photos(tmp_path)
    r = run_cli("detect", ckpt, *images, "--conf", "0.004", "--iou", "0.5", "--json", "--no-save")
    ours = json.loads(r.stdout)
    assert sum(len(x["detections"]) for x in ours) > 0
    r = run_cli("detect", path, *images, "--conf", "0.004", "--iou", "0.5", "--json", "--no-save")
    assert_same_detections(ours, json.loads(r.stdout))
    one_clear_line(run_cli("export", ckpt, "--nms", "--dynamic-batch"), "one image at a time")
    one_clear_line(run_cli("export", untrained("siamese-small", tmp_path / "s.pt", 32), "--nms"), "--nms")


def test_torchscript_export_runs_like_checkpoint(tmp_path):
    ckpt = untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)
    path, _ = exported(ckpt, "--format", "torchscript")
    assert path.suffix == ".torchscript"
    images = photos(tmp_path)
    ours = detect_json(ckpt, images, 0.004)
    assert sum(len(r["detections"]) for r in ours) > 0
    assert_same_detections(ours, detect_json(path, images, 0.004))


def test_classifier_export_evaluates_like_checkpoint(tmp_path):
    """Probabilities in the graph (rows sum to 1); `cnnkit eval FILE.onnx` gives the checkpoint's metrics."""
    import onnxruntime as ort

    data = "synthetic:textures?n=24&size=32"
    r = run_cli("train", "resnet18", "--data", data, "--epochs", "1", "--batch-size", "8", "--img-size", "32",
                "--out", tmp_path / "run", "--no-track", "--workers", "0")
    assert r.code == 0, r.stderr
    ckpt = tmp_path / "run" / "weights" / "best.pt"
    path, _ = exported(ckpt, "--dynamic-batch")
    probs = ort.InferenceSession(str(path)).run(None, {"images": np.random.rand(4, 3, 32, 32).astype(np.float32)})[0]
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    metrics = []
    for model in (ckpt, path):
        r = run_cli("eval", model, "--json", "--batch-size", "8")
        assert r.code == 0, r.stderr
        metrics.append(json.loads(r.stdout))
    assert metrics[0].keys() == metrics[1].keys()
    assert all(abs(metrics[0][k] - metrics[1][k]) <= 1e-4 for k in metrics[0])


def test_embedder_export_enrolls_and_verifies_like_checkpoint(tmp_path):
    """Embeddings equal within 1e-5; a gallery enrolled with the checkpoint accepts the ONNX file
    (same fingerprint) and verify prints the same decisions."""
    from cnnkit.plugins.siamese.pipeline import Embedder

    ckpt = untrained("siamese-small", tmp_path / "s.pt", 32)
    path, _ = exported(ckpt)
    faces = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8) for i in range(3)]
    a, b = Embedder(ckpt, "cpu"), Embedder(path, "cpu")
    assert a.info == b.info.__class__(**{**vars(b.info), "checkpoint": a.info.checkpoint})
    assert np.abs(a.embed(faces) - b.embed(faces)).max() <= 1e-5
    chips = [write_image(tmp_path / f"f{i}.png", f) for i, f in enumerate(faces)]
    r = run_cli("enroll", "ada", chips[0], chips[1], "--weights", ckpt, "--no-detect", "--gallery", tmp_path / "g.db")
    assert r.code == 0, r.stderr
    outs = [run_cli("verify", *chips, "--weights", w, "--no-detect", "--gallery", tmp_path / "g.db",
                    "--threshold", "0.5", "--json") for w in (ckpt, path)]
    assert outs[0].code == outs[1].code
    ours, theirs = (json.loads(o.stdout) for o in outs)
    assert [{**d, "distance": None} for d in ours] == [{**d, "distance": None} for d in theirs]
    assert np.allclose([d["distance"] for d in ours], [d["distance"] for d in theirs], atol=1e-4)


def test_face_resnet_export_gives_its_descriptors(tmp_path):
    """dlib's face ResNet (the pretrained embedder, exported by name): descriptors within 1e-5."""
    from cnnkit.plugins.siamese.pipeline import Embedder

    path, report = exported(Path("face-resnet"), "-o", tmp_path / "face.onnx")
    assert report["input"] == [1, 3, 150, 150]
    chips = [np.random.default_rng(i).integers(0, 255, (150, 150, 3), np.uint8) for i in range(2)]
    a, b = Embedder("face-resnet", "cpu"), Embedder(path, "cpu")
    assert a.info.fingerprint == b.info.fingerprint and b.threshold == a.threshold == pytest.approx(0.6)
    assert np.abs(a.embed(chips) - b.embed(chips)).max() <= 1e-5


def test_stylizer_export_keeps_any_size(tmp_path):
    """The fast stylizer's graph takes any height and width; `cnnkit stylize --model FILE.onnx`
    writes the checkpoint's image (uint8, at most 1 level apart)."""
    from cnnkit.core.data.images import read_image

    ckpt = untrained("fast-style", tmp_path / "f.pt", 32)
    path, _ = exported(ckpt)
    content = photos(tmp_path, 1, (40, 56))[0]
    for model, out in ((ckpt, "a.png"), (path, "b.png")):
        r = run_cli("stylize", content, "--model", model, "-o", tmp_path / out)
        assert r.code == 0, r.stderr
    a, b = read_image(tmp_path / "a.png").astype(int), read_image(tmp_path / "b.png").astype(int)
    assert a.shape == (40, 56, 3) and np.abs(a - b).max() <= 1


@pytest.mark.slow
def test_torchvision_faster_rcnn_export(tmp_path):
    """torchvision's Faster R-CNN through its ONNX path: one image a run, its detections as the checkpoint's."""
    name = "fasterrcnn_mobilenet_v3_large_fpn"
    ckpt = untrained(name, tmp_path / "f.pt", 128, SHAPES)
    path, _ = exported(ckpt)
    images = photos(tmp_path, 1, (100, 128))
    ours, theirs = detect_json(ckpt, images, 0.0), detect_json(path, images, 0.0)
    assert_same_detections(ours, theirs)


def test_export_beyond_tolerance_writes_nothing(tmp_path, monkeypatch):
    """A graph that differs from torch by more than the tolerance: exit 2, no file (float
    arithmetic differs by about 1e-5 here, so a 1e-9 tolerance must refuse it)."""
    import cnnkit.core.deploy.export as export_module

    ckpt = untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)
    monkeypatch.setattr(export_module, "TOLERANCE", 1e-9)
    one_clear_line(run_cli("export", ckpt), "differs from torch by", "nothing was written")
    assert not (tmp_path / "y.onnx").exists() and not list(tmp_path.glob(".y.onnx*"))


def test_export_refusals(tmp_path):
    ckpt = untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES)
    one_clear_line(run_cli("export", ckpt, "--format", "tflite"), "--format tflite")
    one_clear_line(run_cli("export", tmp_path / "missing.pt"), "no such checkpoint")
    onnx, _ = exported(ckpt)
    one_clear_line(run_cli("export", onnx), "already an exported file")
    one_clear_line(run_cli("export", untrained("fast-rcnn", tmp_path / "r.pt", 64, SHAPES)), "torchvision Faster R-CNN")
    Path(tmp_path / "bad.onnx").write_bytes(b"not onnx")
    one_clear_line(run_cli("detect", tmp_path / "bad.onnx", *photos(tmp_path), "--no-save"), "bad.onnx")
