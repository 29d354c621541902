"""Published models run without training: `cnnkit detect|eval MODEL|CFG [--weights X] [--names F]`
(a checkpoint carries its own weights and classes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from conftest import one_clear_line

CFG_DIR = Path(__file__).resolve().parents[1] / "cnnkit" / "plugins" / "yolo" / "cfg"


def _photo(path: Path) -> Path:
    from cnnkit.core.data.images import write_image

    write_image(path, np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8))
    return path


def _darknet_file(path: Path, model: str) -> Path:
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    load_plugins()
    save_darknet_weights(models.get(model).create(num_classes=80), path)
    return path


def test_a_cfg_with_weights_and_names_detects_with_those_names(cli, tmp_path):
    cfg = shutil.copy(CFG_DIR / "yolov3-tiny.cfg", tmp_path / "tiny.cfg")
    weights = _darknet_file(tmp_path / "tiny.weights", "yolov3-tiny")
    names = tmp_path / "mine.names"
    names.write_text("\n".join(f"thing{i}" for i in range(80)) + "\n\n")
    r = cli("detect", cfg, "--weights", weights, "--names", names, _photo(tmp_path / "a.jpg"),
            "--conf", "0.0", "--img-size", "160", "--json", "--no-save")
    assert r.code == 0, r.stderr
    found = json.loads(r.stdout)[0]["detections"]
    assert found and {d["class"] for d in found} <= {f"thing{i}" for i in range(80)}
    assert "70/70 tensors from" in r.stderr


def test_a_registered_model_runs_its_cached_published_file_with_its_class_names(cli, tmp_path, monkeypatch):
    import hashlib
    from dataclasses import replace

    from cnnkit.core.base import registry

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    stand_in = _darknet_file(tmp_path / "torch" / "hub" / "checkpoints" / "yolov3-tiny.weights", "yolov3-tiny")
    entry = registry.weights.get("yolov3-tiny.weights")  # pinned by the published file's SHA-256: the stand-in's here
    monkeypatch.setitem(registry.weights._items, entry.name,
                        replace(entry, sha256=hashlib.sha256(stand_in.read_bytes()).hexdigest()))
    r = cli("detect", "yolov3-tiny", _photo(tmp_path / "a.jpg"), "--conf", "0.0", "--img-size", "160",
            "--json", "--no-save")
    assert r.code == 0, r.stderr
    from cnnkit.core.weights.classnames import class_names

    found = json.loads(r.stdout)[0]["detections"]
    assert found and {d["class"] for d in found} <= set(class_names("coco"))


def test_published_sources_fail_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    photo = _photo(tmp_path / "a.jpg")
    one_clear_line(cli("detect", "yolov3-tiny", photo), "yolov3-tiny.weights", "by hand")  # offline, not cached
    one_clear_line(cli("detect", "yolov3-tiny", photo, "--weights", "nope.weights"), "--weights nope.weights")
    one_clear_line(cli("detect", "yolov3-tiny", photo, "--names", "nope.names"), "--names nope.names")
    one_clear_line(cli("eval", "alexnet-lrn"), "alexnet-lrn has no published weights")
    fake = tmp_path / "run.pt"
    fake.write_bytes(b"x")
    one_clear_line(cli("eval", fake, "--weights", "w.pth"), "--weights and --names go with a model name")
