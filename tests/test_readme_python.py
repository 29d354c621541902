"""The README's Python section runs as written, one block after another in one namespace (as a
notebook runs its cells), on tiny data: the photos, the published files it names (stand-ins in the
publishers' key layouts, placed in torch's cache) and, when ../shared is present, the faces."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, SHARED_DATA
from tests.published_files import pin, place

SECTION = "## From Python (notebooks and scripts)"


def blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def stand_ins(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """The published files the README loads: yolov3-tiny.weights, resnet18 and VGG-19 (random weights)."""
    import torch
    import torchvision

    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    load_plugins()
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    pin(monkeypatch, save_darknet_weights(models.get("yolov3-tiny").create(num_classes=80),
                                          cache / "yolov3-tiny.weights"), "yolov3-tiny.weights")
    for name, builder in (("resnet18", torchvision.models.resnet18), ("vgg19-nst", torchvision.models.vgg19)):
        place(monkeypatch, cache, name, builder().state_dict())


@pytest.mark.slow
def test_the_readme_python_section_runs_as_written(tmp_path, monkeypatch) -> None:
    import torch

    from cnnkit.core.data.synthetic import Shapes

    cache = tmp_path / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    stand_ins(monkeypatch, cache)
    shapes = Shapes("val", n=3, size=64)
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(shapes[i].image).save(tmp_path / "photos" / f"{i}.png")
    rng = np.random.default_rng(0)
    for name in ("dog.jpg", "cat.jpg", "content.jpg", "style.jpg"):
        Image.fromarray(rng.integers(0, 255, (72, 96, 3), np.uint8)).save(tmp_path / name)
    found = blocks()
    assert len(found) == 3, "the section's three code blocks"
    faces = SHARED_DATA / "faces"
    if faces.is_dir():
        shutil.copytree(faces / "known" / "obama", tmp_path / "faces" / "obama")
        shutil.copy(faces / "probe" / "obama3.jpg", tmp_path / "faces" / "obama3.jpg")
    namespace: dict = {"np": np, "Image": Image, "Path": Path}
    for i, block in enumerate(found):
        if "cnnkit.Gallery" in block and not faces.is_dir():
            block = block[:block.index("g = cnnkit.Gallery")]  # the faces are in ../shared
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
    assert namespace["r"][0].to_json()["image"] == "dog.jpg"
    assert len(namespace["top"].names) == 3 and isinstance(namespace["net"], torch.nn.Module)
    assert Path(namespace["run"].best).is_file() and Path(namespace["run"].best).parent.parent.is_dir()
    assert namespace["maps"] and namespace["maps"][0].overlay.size[0] > 0
    assert namespace["img"].size == (96, 72) and "losses" in namespace["img"].info["cnnkit"]
    if faces.is_dir():
        assert namespace["g"].verify("faces/obama3.jpg")[0]["name"] == "obama"
