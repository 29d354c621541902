"""One photo, one command: ``cnnkit detect`` on a published Darknet model and ``cnnkit classify`` on a
checkpoint import what their path needs and nothing else (checked in a fresh process: what
``sys.modules`` holds when the command is done)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NEVER = ["cnnkit.core.train.trainer", "cnnkit.core.train.callbacks", "cnnkit.core.train.tracking", "mlflow",
         "albumentations", "torch._dynamo"]
PROBE = """
import json, sys
from cnnkit.commands import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, set[str], str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=600)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    return last["code"], set(last["modules"]), out.stderr


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch"),
            "CNNKIT_CACHE": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def darknet_weights(path: Path) -> Path:
    """yolov3-tiny's network with seeded random weights in Darknet's format."""
    import torch

    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    load_plugins()
    torch.manual_seed(0)
    return save_darknet_weights(models.get("yolov3-tiny").create(num_classes=80), path)


def test_detect_on_a_darknet_model_loads_no_training_and_then_no_torch(tmp_path, env) -> None:
    from PIL import Image

    photo = tmp_path / "dog.jpg"
    Image.new("RGB", (96, 72), (120, 90, 60)).save(photo)
    weights = darknet_weights(tmp_path / "yolov3-tiny.weights")
    args = ("detect", "yolov3-tiny", photo, "--weights", weights, "--no-save", "--json", "--img-size", "64")
    code, first, err = run(*args, env=env, cwd=tmp_path)  # compiles the graph: torch, torchvision's NMS
    assert code in (0, None), err
    assert sorted(m for m in NEVER if m in first) == []
    code, again, err = run(*args, env=env, cwd=tmp_path)
    assert code in (0, None), err
    heavy = ["torch", "torchvision", "timm", *NEVER]
    assert sorted(m for m in heavy if m in again) == []
    assert "onnxruntime" in again


def test_classify_on_a_checkpoint_loads_no_training_and_no_augmentation(tmp_path, env) -> None:
    import numpy as np

    from cnnkit.core.data.images import write_image
    from tests.test_api import untrained

    ckpt = untrained("resnet18", tmp_path / "cls.pt", 32, ["a", "b"])
    photo = write_image(tmp_path / "p.png", np.full((40, 50, 3), 90, np.uint8))
    code, modules, err = run("classify", ckpt, photo, "--json", env=env, cwd=tmp_path)
    assert code in (0, None), err
    assert sorted(m for m in NEVER if m in modules) == []


def test_torchvision_imports_without_torch_dynamo_and_compile_still_works(tmp_path) -> None:
    code = ("import sys\n"
            "from cnnkit.core.models.boxes import batched_nms\n"
            "import torch\n"
            "assert 'torchvision' in sys.modules and 'torch._dynamo' not in sys.modules\n"
            "from torchvision.ops import roi_align\n"
            "roi_align(torch.rand(1, 2, 8, 8), torch.tensor([[0., 0., 0., 4., 4.]]), 2)\n"
            "f = torch.compile(lambda a: a + 1, backend='eager')\n"
            "assert f(torch.zeros(2)).tolist() == [1.0, 1.0] and 'torch._dynamo' in sys.modules\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr
