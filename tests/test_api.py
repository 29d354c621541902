"""The Python API: ``import cnnkit`` loads nothing heavy, every command's records equal the API's
``to_json()`` on the same inputs (the command line is a shell over it), results carry what they
say, and errors are ``CnnkitError``s, never ``SystemExit``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.data.images import write_image
from cnnkit.core.data.synthetic import TEXTURES
from cnnkit.core.tasks.base import make_task
from cnnkit.core.weights.checkpoint import save_checkpoint
from tests.conftest import ROOT


def untrained(name: str, path: Path, img_size: int, classes: list[str] | None = None, seed: int = 0) -> Path:
    """A checkpoint of ``name`` as built (seeded random weights)."""
    import torch

    load_plugins()
    torch.manual_seed(seed)
    config = TrainConfig(model=name, img_size=img_size)
    task = make_task(models.get(name), config, classes=classes)
    model = task.build_model().eval()
    return save_checkpoint(path, {"model": name, "task": models.get(name).task, "model_state": model.state_dict(),
                                  "config": config.to_dict(), "classes": classes, "task_state": task.state})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(1)
    photos = [write_image(root / "photos" / f"p{i}.png", rng.integers(0, 255, (72, 96, 3), np.uint8)) for i in range(3)]
    return {"detector": untrained("yolov3-tiny", root / "det.pt", 64, [f"c{i}" for i in range(4)]),
            "classifier": untrained("resnet18", root / "cls.pt", 32, list(TEXTURES)),
            "photo": photos[0], "photos": root / "photos"}


def test_import_cnnkit_loads_no_torch_and_lists_its_api() -> None:
    code = ("import sys, cnnkit; names = dir(cnnkit); "
            "print(sorted(m for m in ('torch', 'torchvision', 'mlflow', 'albumentations', 'cv2', 'numpy') "
            "if m in sys.modules), 'load' in names and 'train' in names and 'Gallery' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["[]", "True"]


def test_list_models_is_cnnkit_models(cli) -> None:
    r = cli("models", "--task", "detect", "--json")
    assert cnnkit.list_models(task="detect") == [row["name"] for row in json.loads(r.stdout)]
    assert "resnet50" in cnnkit.list_models() and "resnet50" not in cnnkit.list_models(task="detect")
    with pytest.raises(cnnkit.CnnkitError, match="no models for task 'segment'"):
        cnnkit.list_models(task="segment")


def test_create_model_is_a_module_with_the_head_asked_for() -> None:
    import torch

    net = cnnkit.create_model("resnet18", num_classes=7)
    assert isinstance(net, torch.nn.Module) and net.train().training
    assert net.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(cnnkit.CnnkitError, match="unknown model 'resnet19'"):
        cnnkit.create_model("resnet19")


def test_detect_records_equal_the_apis(files, cli) -> None:
    r = cli("detect", files["detector"], files["photos"], "--json", "--conf", "0.004", "--no-save")
    assert r.code == 0, r.stderr
    model = cnnkit.load(files["detector"])
    results = model.predict(files["photos"], conf=0.004)
    assert json.loads(r.stdout) == [x.to_json() for x in results]
    first = results[0]
    assert len(first) > 0 and first.boxes.shape == (len(first), 4) and len(first.scores) == len(first.names)
    assert set(first.names) <= set(model.names) and model.names == ["c0", "c1", "c2", "c3"]
    assert list(first.labels) == [model.names.index(n) for n in first.names]
    assert isinstance(first.plot(), Image.Image) and first.plot().size == (96, 72)


def test_predict_takes_paths_folders_arrays_and_pil_images_alike(files) -> None:
    model = cnnkit.load(files["detector"])
    pixels = np.asarray(Image.open(files["photo"]).convert("RGB"))
    by_path = model.predict(files["photo"], conf=0.004)[0]
    for other in (pixels, Image.open(files["photo"]), [pixels]):
        again = model.predict(other, conf=0.004)[0]
        assert again.detections == by_path.detections and again.image == "image0"
    streamed = model.predict([pixels, pixels], conf=0.004, stream=True)
    assert not isinstance(streamed, list) and [len(x) for x in streamed] == [len(by_path)] * 2
    with pytest.raises(cnnkit.CnnkitError, match="RGB uint8"):
        model.predict(np.zeros((8, 8), np.float32))


def test_classify_records_equal_the_apis(files, cli) -> None:
    r = cli("classify", files["classifier"], files["photo"], "--json", "--top", "2")
    assert r.code == 0, r.stderr
    result = cnnkit.load(files["classifier"]).predict(files["photo"], top=2)[0]
    assert json.loads(r.stdout) == [result.to_json()]
    assert len(result.indices) == 2 and abs(float(result.probs.sum()) - 1) < 1e-5
    assert result.names == [list(TEXTURES)[i] for i in result.indices]


def test_eval_and_export_through_the_api_equal_the_commands(files, cli, tmp_path) -> None:
    data = "synthetic:textures?n=12&size=32"
    r = cli("eval", files["classifier"], "--data", data, "--json", "--batch-size", "4")
    assert r.code == 0, r.stderr
    assert cnnkit.evaluate(files["classifier"], data, batch_size=4) == json.loads(r.stdout)
    report = vars(cnnkit.export(files["classifier"], out=tmp_path / "api.onnx"))
    r = cli("export", files["classifier"], "-o", tmp_path / "cli.onnx", "--json")
    assert r.code == 0, r.stderr
    printed = json.loads(r.stdout)
    assert Path(report.pop("output")).is_file() and Path(printed.pop("output")).is_file()
    assert printed == report and report["max_diff"] <= report["tolerance"]


def test_errors_are_cnnkit_errors_never_system_exit(tmp_path) -> None:
    with pytest.raises(cnnkit.CnnkitError, match="no such"):
        cnnkit.load(tmp_path / "missing.pt")
    with pytest.raises(cnnkit.CnnkitError, match="runtime"):
        cnnkit.load("yolov3-tiny", runtime="tensorrt")


def test_the_onnxruntime_runtime_answers_as_torch_does(files) -> None:
    """A checkpoint run through its compiled graph (no torch at prediction) gives torch's detections."""
    pixels = np.asarray(Image.open(files["photo"]).convert("RGB"))
    ours = cnnkit.load(files["detector"], runtime="onnxruntime").predict(pixels, conf=0.004)[0]
    torch_ = cnnkit.load(files["detector"], runtime="torch").predict(pixels, conf=0.004)[0]
    assert len(ours) == len(torch_) > 0
    left = list(torch_.detections)  # equal scores may come in either order: match each detection
    for d in ours.detections:
        same = [t for t in left if t["label"] == d["label"] and abs(t["score"] - d["score"]) <= 2e-4
                and np.abs(np.subtract(t["box"], d["box"])).max() <= 0.02]
        assert same, d
        left.remove(same[0])


def test_verify_records_equal_the_gallerys(tmp_path, cli) -> None:
    """`cnnkit enroll`/`verify` and cnnkit.Gallery on the same chips (dlib's face ResNet, no detection)."""
    rng = np.random.default_rng(2)
    chips = [write_image(tmp_path / f"chip{i}.png", rng.integers(0, 255, (150, 150, 3), np.uint8)) for i in range(3)]
    r = cli("enroll", "ada", chips[0], chips[1], "--no-detect", "--gallery", tmp_path / "cli.db")
    assert r.code == 0, r.stderr
    g = cnnkit.Gallery(tmp_path / "api.db")
    assert g.enroll("ada", [chips[0], chips[1]], detect=False) == 2
    r = cli("verify", chips[2], "--no-detect", "--gallery", tmp_path / "cli.db", "--json")
    assert r.code in (0, 1), r.stderr
    ours = g.verify(chips[2], detect=False)
    assert json.loads(r.stdout) == ours and ours[0]["closest"] == "ada" and ours[0]["distance"] > 0
    assert [p["name"] for p in g.people()] == ["ada"] and g.model.model == "face-resnet"
