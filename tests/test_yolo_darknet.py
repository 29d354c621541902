"""Darknet interop: .cfg parsing and building, .weights round trips, the darknet commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import models
from cnnkit.plugins.yolo.darknet import model_from_cfg
from cnnkit.plugins.yolo.weights import load_darknet_weights, save_darknet_weights, weight_layers

CFG_DIR = Path(__file__).resolve().parents[1] / "cnnkit" / "plugins" / "yolo" / "cfg"


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Make every tensor a .weights file holds distinct (BN statistics included)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return model.eval()


def _darknet_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t for layer, bn in weight_layers(model)
            for t in ([bn.bias, bn.weight, bn.running_mean, bn.running_var] if bn is not None else [layer.bias])
            + [layer.weight]]


@pytest.mark.parametrize("name", ["yolov3", "yolov3-tiny", "darknet53"])
def test_cfg_builds_the_registered_network(name):
    with torch.device("meta"):
        from_cfg = model_from_cfg(cfg=CFG_DIR / f"{name}.cfg", num_classes=80)
        registered = models.get(name).create(num_classes=models.get(name).num_classes)
    count = sum(p.numel() for p in from_cfg.parameters())
    assert count == sum(p.numel() for p in registered.parameters()) == models.get(name).paper_params
    if name != "darknet53":
        assert all(torch.allclose(a, b) for a, b in zip(from_cfg.anchors, registered.anchors, strict=True))


def test_weights_round_trip_into_the_cfg_model(tmp_path):
    registered = _randomize(models.get("yolov3-tiny").create(num_classes=80))
    path = save_darknet_weights(registered, tmp_path / "tiny.weights", seen=1234)
    from_cfg = model_from_cfg(cfg=CFG_DIR / "yolov3-tiny.cfg", num_classes=80).eval()
    assert load_darknet_weights(from_cfg, path) == (13, 1234)
    assert all(torch.equal(a, b) for a, b in zip(_darknet_tensors(registered), _darknet_tensors(from_cfg)))
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(registered(x), from_cfg(x)))
    again = save_darknet_weights(from_cfg, tmp_path / "again.weights", seen=1234)
    assert again.read_bytes() == path.read_bytes()
    header = torch.frombuffer(bytearray(path.read_bytes()[:20]), dtype=torch.int32)
    assert header[:3].tolist() == [0, 2, 0] and header[3].item() == 1234  # major, minor, revision, seen (int64)


def test_yolov3_round_trip_gives_identical_tensors(tmp_path):
    a = models.get("yolov3").create(num_classes=3).eval()
    for bn in (m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_()  # the rest is randomly initialised already
    path = save_darknet_weights(a, tmp_path / "yolov3.weights")
    assert path.stat().st_size == 20 + 4 * sum(t.numel() for k, t in a.state_dict().items()
                                              if not k.endswith("num_batches_tracked"))
    b = models.get("yolov3").create(num_classes=3)
    assert load_darknet_weights(b, path) == (75, 0)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("num_batches_tracked"))


def test_truncated_and_oversized_files(tmp_path):
    model = _randomize(models.get("yolov3-tiny").create(num_classes=3))
    path = save_darknet_weights(model, tmp_path / "w.weights")
    data = path.read_bytes()
    (first, bn), = [next(weight_layers(model))]
    first_layer = 4 * (first.weight.numel() + 4 * bn.weight.numel())
    (tmp_path / "head.weights").write_bytes(data[:20 + first_layer])  # like darknet53.conv.74
    fresh = models.get("yolov3-tiny").create(num_classes=3)
    assert load_darknet_weights(fresh, tmp_path / "head.weights")[0] == 1
    assert torch.equal(next(weight_layers(fresh))[0].weight, first.weight)
    (tmp_path / "cut.weights").write_bytes(data[:20 + first_layer + 8])
    with pytest.raises(CnnkitError, match="ends inside layer 2"):
        load_darknet_weights(fresh, tmp_path / "cut.weights")
    (tmp_path / "long.weights").write_bytes(data + b"\0" * 8)
    with pytest.raises(CnnkitError, match="2 more values"):
        load_darknet_weights(fresh, tmp_path / "long.weights")


@pytest.mark.parametrize("text,message", [
    ("[convolutional]\nfilters=8\n", "starts with a \\[net\\]"),
    ("[net]\nwidth=64\n[warp]\n", "unsupported section"),
    ("[net]\n[route]\nlayers=-3\n", "does not come before it"),
    ("[net]\nwidth 64\n", "expected"),
])
def test_bad_cfg_files_are_refused_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(CnnkitError, match=message):
        model_from_cfg(cfg=path)


def test_cfg_path_works_where_a_model_name_does(cli, tmp_path):
    cfg = tmp_path / "my-tiny.cfg"
    shutil.copy(CFG_DIR / "yolov3-tiny.cfg", cfg)
    r = cli("summary", cfg, "--img-size", "64", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 8_852_366
    r = cli("summary", tmp_path / "missing.cfg")
    assert r.code == 2 and "no such file" in r.stderr


@pytest.mark.slow
def test_train_a_cfg_then_export_and_import_weights(cli, tmp_path):
    cfg = tmp_path / "tiny.cfg"
    shutil.copy(CFG_DIR / "yolov3-tiny.cfg", cfg)
    r = cli("train", cfg, "--data", "synthetic:shapes?n=8&size=64", "--img-size", "64", "--epochs", "1",
            "--batch-size", "8", "--no-track", "--out", "run")
    assert r.code == 0, r.stderr
    r = cli("darknet", "export", "run/weights/best.pt", "--out", "tiny.weights")
    assert r.code == 0, r.stderr
    r = cli("darknet", "import", "tiny.weights", "--model", "yolov3-tiny", "--num-classes", "3", "--out", "tiny.pt")
    assert r.code == 0, r.stderr
    trained = torch.load("run/weights/best.pt", weights_only=True)["model_state"]
    imported = torch.load("tiny.pt", weights_only=True)
    assert len(trained) == len(imported)
    assert all(torch.equal(a, b) for a, b in zip(
        (v for k, v in trained.items() if "num_batches" not in k),
        (v for k, v in imported.items() if "num_batches" not in k)))
    r = cli("darknet", "import", "tiny.weights", "--model", "yolov3", "--out", "x.pt")
    assert r.code == 2 and "wrong .cfg" in r.stderr


def test_train_starts_from_darknet_weights_of_the_80_class_network(cli, tmp_path):
    """`--weights yolov3-tiny.weights` (COCO's 80 classes) fine-tunes on 3 classes: the backbone
    and neck are copied, the two 80-class output convolutions are skipped."""
    coco = models.get("yolov3-tiny").create(num_classes=80)
    save_darknet_weights(coco, tmp_path / "yolov3-tiny.weights")
    r = cli("train", "yolov3-tiny", "--weights", tmp_path / "yolov3-tiny.weights", "--data",
            "synthetic:shapes?n=8&size=64", "--img-size", "64", "--epochs", "1", "--batch-size", "4",
            "--no-track", "--out", "ft")
    assert r.code == 0, r.stderr
    total = len(coco.state_dict())
    assert f"weights: {total - 4}/{total} tensors from" in r.stderr  # 2 heads x (weight, bias)
    from cnnkit.core.weights.checkpoint import load_checkpoint

    state = load_checkpoint("ft/weights/last.pt")["model_state"]
    first = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    assert state[first].shape == coco.state_dict()[first].shape


def test_detect_with_a_cfg_by_path_uses_its_classes_and_numbers_them_without_names(cli, tmp_path):
    """yolov2-tiny-voc.cfg says 20 classes: its .weights load completely into the network built as
    written (an 80-class build would skip the head), and without --names the classes are numbers."""
    from cnnkit.core.data.images import write_image

    cfg = shutil.copy(CFG_DIR / "yolov2-tiny-voc.cfg", tmp_path / "voc.cfg")
    weights = save_darknet_weights(_randomize(model_from_cfg(cfg=cfg)), tmp_path / "voc.weights")
    image = tmp_path / "a.png"
    write_image(image, (torch.rand(96, 128, 3) * 255).to(torch.uint8).numpy())
    r = cli("detect", cfg, "--weights", weights, image, "--conf", "0.0", "--img-size", "96", "--json", "--no-save")
    assert r.code == 0, r.stderr
    total = len(model_from_cfg(cfg=cfg).state_dict())
    assert f"{total}/{total} tensors from" in r.stderr
    found = json.loads(r.stdout)[0]["detections"]
    assert found and all(d["class"] == str(d["label"]) and 0 <= d["label"] < 20 for d in found)
    assert {d["label"] for d in found} - set(range(10))  # labels past 10 exist: 20 classes, not fewer
