"""`cnnkit explain` on every family: the overlays it writes (PNG files of the right size), the
--json records (peak, box of the top 10 %, what was explained), feature maps and filters, MLflow
tracking, and bad input as one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import one_clear_line, run_cli
from PIL import Image


def _train(root: Path, name: str, model: str, data: str, size: int, *extra: str) -> Path:
    r = run_cli("train", model, "--data", data, "--epochs", "1", "--img-size", size, "--batch-size", 8,
                "--no-track", "--workers", 0, "--out", root / name, *extra)
    assert r.code == 0, r.stderr
    return root / name / "weights" / "best.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny checkpoint a family (one epoch on a few synthetic images: the files are checked, not the maps)."""
    root = tmp_path_factory.mktemp("explain-runs")
    return {
        "classify": _train(root, "cls", "resnet18", "synthetic:figure-crops?n=16&size=48", 48),
        "yolo": _train(root, "yolo", "yolov3-tiny", "synthetic:shapes?n=8&size=64", 64),
        "faster-rcnn": _train(root, "frcnn", "faster-rcnn", "synthetic:shapes?n=8&size=64", 64),
        "embed": _train(root, "emb", "siamese-small", "synthetic:glyphs?ids=8&per_id=2&size=32", 32),
        "stylize": _train(root, "sty", "fast-style", "synthetic:textures?n=4&size=32", 32, "--vgg-weights", "random"),
    }


def _image(path: Path, h: int = 72, w: int = 96, seed: int = 0) -> Path:
    from cnnkit.core.data.images import write_image

    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 90, np.uint8)
    image[h // 4: h // 2, w // 3: w // 2] = rng.integers(150, 255, 3)  # a bright block to look at
    write_image(path, (image + rng.integers(0, 20, image.shape)).astype(np.uint8))
    return path


def _records(r) -> list[dict]:
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def _check_map_record(rec: dict, width: int, height: int) -> None:
    """The PNG opens at the size the record gives; the peak and the top-10 % box lie inside it."""
    with Image.open(rec["file"]) as img:
        img.load()
        assert img.size == (width, height) == tuple(rec["size"])
    x, y = rec["peak"]
    assert 0 <= x < width and 0 <= y < height
    x1, y1, x2, y2 = rec["box_top10"]
    assert 0 <= x1 <= x < x2 <= width and 0 <= y1 <= y < y2 <= height  # the peak is in its own top 10 %
    assert (x2 - x1) * (y2 - y1) < width * height  # not the whole picture


def test_classifier_top_classes_each_get_an_overlay(runs, tmp_path):
    photo = _image(tmp_path / "photo.png")
    recs = _records(run_cli("explain", runs["classify"], photo, "--top", "2", "--json", "-o", tmp_path / "out"))
    assert [r["method"] for r in recs] == ["gradcam"] * 2
    assert {r["target"] for r in recs} <= {"ring", "cross", "bar"} and recs[0]["score"] >= recs[1]["score"]
    assert recs[0]["layer"] == "layer4"  # resnet18's last feature map (2x2 at 48 px) before its pooling
    for rec in recs:
        _check_map_record(rec, 48, 48)  # drawn on the crop the classifier saw


@pytest.mark.parametrize("family,method", [("classify", "scorecam"), ("faster-rcnn", "gradcam++"),
                                           ("yolo", "gradcam++"), ("yolo", "scorecam"),
                                           ("faster-rcnn", "integrated-gradients")])
def test_every_method_runs(runs, tmp_path, family, method):
    size = {"classify": (48, 48)}.get(family, (96, 72))
    recs = _records(run_cli("explain", runs[family], _image(tmp_path / "p.png"), "--method", method, "--json",
                            "--conf", "0", "--top", "1", "-o", tmp_path))
    assert len(recs) == 1 and recs[0]["method"] == method
    _check_map_record(recs[0], *size)


@pytest.mark.parametrize("family,model,method", [("classify", "resnet18", "gradcam++"),
                                                 ("classify", "resnet18", "eigencam"),
                                                 ("classify", "resnet18", "integrated-gradients"),
                                                 ("yolo", "yolov3-tiny", "eigencam")])
def test_methods_that_fail_the_randomisation_check_are_refused(runs, tmp_path, family, model, method):
    one_clear_line(run_cli("explain", runs[family], _image(tmp_path / "p.png"), "--method", method),
                   f"--method {method} is refused for {model}", "model-randomisation check", "Spearman")


def test_a_published_classifier_is_explained_with_its_weights(tmp_path, monkeypatch):
    """`cnnkit explain resnet18 photo` loads the published file (here: torchvision's model in the
    published layout, from torch's cache) like `cnnkit classify`, and names ImageNet classes."""
    import torch
    import torchvision
    from published_files import old_layout, place, randomise, torchvision_weights

    from cnnkit.core.base import plugins, registry
    from cnnkit.core.weights.classnames import class_names

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    plugins.load_plugins()
    arch, _ = torchvision_weights(registry.weights.get("resnet18"))
    torch.manual_seed(0)
    place(monkeypatch, tmp_path / "torch" / "hub" / "checkpoints", "resnet18",
          old_layout(randomise(torchvision.models.get_model(arch, weights=None)).state_dict()))
    recs = _records(run_cli("explain", "resnet18", _image(tmp_path / "cat.png", 300, 400), "--json", "-o", tmp_path))
    assert recs[0]["layer"] == "layer4" and recs[0]["target"] in class_names("imagenet")
    _check_map_record(recs[0], 224, 224)  # the publisher's 224 centre crop


def test_detectors_get_a_map_per_detection_drawn_on_the_photo(runs, tmp_path):
    photo = _image(tmp_path / "street.png", 72, 96)
    for family, layers in (("yolo", {"out5.1", "out4.1"}), ("faster-rcnn", {"trunk"})):
        recs = _records(run_cli("explain", runs[family], photo, "--conf", "0", "--top", "3", "--json",
                                "-o", tmp_path / family))
        assert len(recs) == 3 and {r["layer"] for r in recs} <= layers, recs
        assert [r["score"] for r in recs] == sorted((r["score"] for r in recs), reverse=True)
        for rec in recs:
            _check_map_record(rec, 96, 72)  # the original photo, not the letterboxed square
            x1, y1, x2, y2 = rec["detection_box"]
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 72
            assert rec["target"] in {"circle", "square", "triangle"}


def test_a_darknet_cfg_with_weights_is_explained(tmp_path):
    import shutil

    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    load_plugins()
    cfg_dir = Path(__file__).resolve().parents[1] / "cnnkit/plugins/yolo/cfg"
    cfg = shutil.copy(cfg_dir / "yolov2-tiny.cfg", tmp_path / "t.cfg")
    save_darknet_weights(models.get("yolov2-tiny").create(num_classes=80), tmp_path / "t.weights")
    recs = _records(run_cli("explain", cfg, _image(tmp_path / "a.png"), "--weights", tmp_path / "t.weights",
                            "--conf", "0", "--top", "1", "--method", "scorecam", "--json", "-o", tmp_path))
    assert len(recs) == 1 and recs[0]["layer"].startswith("layers.")
    _check_map_record(recs[0], 96, 72)


def test_an_embedder_explains_a_pair_side_by_side(runs, tmp_path):
    a, b = _image(tmp_path / "a.png", 40, 40, 1), _image(tmp_path / "b.png", 40, 40, 2)
    recs = _records(run_cli("explain", runs["embed"], a, b, "--json", "-o", tmp_path))
    assert len(recs) == 1 and recs[0]["target"] == "similarity" and recs[0]["pair"] == str(b)
    assert -1 <= recs[0]["score"] <= 1
    with Image.open(recs[0]["file"]) as img:
        assert img.width >= 2 * 32 and img.height >= 32  # both images, side by side
    one_clear_line(run_cli("explain", runs["embed"], a, "-o", tmp_path), "give images in pairs")


def test_a_stylizer_shows_its_style_layers(runs, tmp_path):
    recs = _records(run_cli("explain", runs["stylize"], _image(tmp_path / "c.png", 32, 32), "--json", "-o", tmp_path))
    layers = [row["layer"] for row in recs[0]["layers"]]
    assert layers == ["conv1_2", "conv2_2", "conv3_3", "conv4_3"]  # the perceptual loss's style layers
    assert all(row["gram_distance"] >= 0 for row in recs[0]["layers"])
    with Image.open(recs[0]["file"]) as img:
        assert img.height > 5 * 32  # the images and one row a layer


def test_feature_maps_and_filters(runs, tmp_path):
    photo = _image(tmp_path / "p.png")
    recs = _records(run_cli("explain", runs["classify"], photo, "--feature-maps", "layer1", "--json", "-o", tmp_path))
    # 7x7/2 conv, 3x3/2 pool, four 3x3 convs at stride 4: 7 + 2*2 + 4*2*4 = 43 px
    assert recs[0]["channels"] == 64 and recs[0]["receptive_field"]["size"] == [43, 43]
    assert Path(recs[0]["file"]).name == "p_features_layer1.png" and Image.open(recs[0]["file"]).size[0] > 8 * 40
    recs = _records(run_cli("explain", runs["classify"], "--filters", "--json", "-o", tmp_path))
    assert recs[0]["kernels"] == 64 and recs[0]["kernel_size"] == [7, 7] and recs[0]["in_channels"] == 3
    with Image.open(recs[0]["file"]) as img:
        assert img.mode == "RGB" and img.width >= 16 * 28


def test_track_logs_the_overlays_as_run_images(runs, tmp_path):
    import mlflow

    r = run_cli("explain", runs["classify"], _image(tmp_path / "p.png"), "--top", "2", "--track", "-o", tmp_path)
    assert r.code == 0, r.stderr
    run_id = r.stdout.split("mlflow run: ")[1].split()[0]
    names = sorted(a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "explain"))
    assert len(names) == 2 and all(n.endswith(".png") for n in names)


def test_bad_input_is_one_line(runs, tmp_path):
    photo = _image(tmp_path / "p.png")
    cls = runs["classify"]
    one_clear_line(run_cli("explain", cls, photo, "--layer", "layer9"), "--layer layer9", "no such layer", "conv1")
    one_clear_line(run_cli("explain", cls, photo, "--layer", "fc"), "--layer fc", "not a feature map")
    one_clear_line(run_cli("explain", cls, photo, "--target", "3"), "--target 3", "3 classes (0-2)")
    one_clear_line(run_cli("explain", cls, photo, "--target", "zebra"), "--target zebra", "not a class")
    one_clear_line(run_cli("explain", cls, photo, "--method", "lime"), "--method lime", "gradcam")
    one_clear_line(run_cli("explain", cls), "give one or more images")
    one_clear_line(run_cli("explain", cls, tmp_path / "none.png"), "none.png")
    one_clear_line(run_cli("explain", runs["yolo"], photo, "--conf", "1.0"), "nothing detected", "--conf")
    r = run_cli("export", cls, "--format", "onnx", "-o", tmp_path / "cls.onnx")
    assert r.code == 0, r.stderr
    for method, why in (("gradcam", "no gradients"), ("integrated-gradients", "no gradients"),
                        ("eigencam", "no layer activations")):
        one_clear_line(run_cli("explain", tmp_path / "cls.onnx", photo, "--method", method), "exported file", why)
    one_clear_line(run_cli("explain", tmp_path / "cls.onnx", photo, "--feature-maps", "layer1"), "exported file")


def test_rcnn_refuses_layer_maps_with_the_reason():
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.errors import CnnkitError
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.explain.explain import check_method
    from cnnkit.core.tasks.base import make_task

    load_plugins()
    task = make_task(models.get("rcnn"), TrainConfig(model="rcnn"), classes=["a"])
    with pytest.raises(CnnkitError, match="R-CNN's convolutions see each region warped"):
        check_method(task, object(), "gradcam")
    check_method(task, object(), "integrated-gradients")  # the pixel method is allowed
