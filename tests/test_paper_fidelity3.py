"""Paper fidelity, round three (issue 33): selective search on the image's own pixels whatever the
trunk's input transform, Faster R-CNN anchors in pixels, the papers' recipes, Darknet's ``random=``,
GoogLeNet's LRN and the pinned Darknet file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnkit.core import plugins
from cnnkit.core.config import TrainConfig
from cnnkit.core.data.transforms import IMAGENET, letterbox, to_tensor
from cnnkit.core.engine import make_task
from cnnkit.core.registry import models
from tests.conftest import assert_detect_maps_back

SHAPES = "synthetic:shapes?n=4&size=64"
NORMS = {"as built": {}, "--pretrained": {"mean": list(IMAGENET[0]), "std": list(IMAGENET[1])}}


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _task(name: str, norm: dict, **kw):
    return make_task(models.get(name), TrainConfig(model=name, data=SHAPES, img_size=64, **norm, **kw))


# ---------------------------------------------------------------- selective search sees the image itself
@pytest.mark.parametrize("name", ["rcnn", "fast-rcnn"])
def test_selective_search_sees_the_same_pixels_with_and_without_pretrained_normalisation(name):
    """`--pretrained` (an ImageNet trunk) makes the data transform apply ImageNet's mean/std; the
    proposals of an image must not change with it: training's (the batches' tensors) and
    `detect`'s (a photo letterboxed by predict's path) are selective search on the letterboxed pixels."""
    from cnnkit.plugins.rcnn.selective_search import selective_search

    raw = _task(name, {}).raw_dataset("train")[0].image
    photo = np.ascontiguousarray(raw[:, :50])  # not square: letterboxed as `cnnkit detect` does
    boxed_photo = letterbox(photo, 64)[0]
    found: dict[str, list[torch.Tensor]] = {}
    for label, norm in NORMS.items():
        task = _task(name, norm)
        assert task.input_norm() == (IMAGENET if norm else ((0.0,) * 3, (1.0,) * 3))
        image, _ = task.dataset("train")[0]
        in_training = task.search(image[None])[0]
        at_detect = task.proposals(None, to_tensor(boxed_photo, task.input_norm())[None])[0]
        found[label] = [in_training, at_detect]
    boxed = letterbox(raw, 64)[0]
    expected = [torch.from_numpy(selective_search(boxed, "fast", 2000)), torch.from_numpy(selective_search(boxed_photo, "fast", 2000))]
    for label, (in_training, at_detect) in found.items():
        assert torch.equal(in_training, expected[0]), label  # same boxes, same order
        assert torch.equal(at_detect, expected[1]), label


@pytest.mark.slow
def test_detect_on_a_checkpoint_trained_with_imagenet_normalisation(cli, tmp_path):
    """A Fast R-CNN checkpoint whose config keeps ImageNet's mean/std (what `--pretrained` writes):
    `cnnkit detect` gives the model's own detections on the letterboxed image normalised the
    checkpoint's way (tests/conftest.py's check normalises with the checkpoint's input transform)."""
    from cnnkit.core.data.images import write_image
    from cnnkit.core.data.synthetic import Shapes

    (tmp_path / "norm.yaml").write_text(json.dumps(NORMS["--pretrained"]))
    r = cli("train", "fast-rcnn", "--data", "synthetic:shapes?n=8&size=64", "--epochs", "1", "--batch-size", "4",
            "--config", tmp_path / "norm.yaml", "--no-track", "--out", "run")
    assert r.code == 0, r.stderr[-2000:]
    image = Shapes("val", n=4, size=80)[1].image[:60]
    write_image(tmp_path / "a.png", image)
    r = cli("detect", "run/weights/best.pt", tmp_path / "a.png", "--json", "--conf", "0.0", "--no-save")
    assert r.code == 0, r.stderr
    assert_detect_maps_back(json.loads(r.stdout)[0]["detections"], "run/weights/best.pt", image, 0.0)


# ---------------------------------------------------------------- Faster R-CNN anchors in pixels
def _anchors(img_size: int, state: dict | None = None, **options) -> torch.Tensor:
    config = TrainConfig(model="faster-rcnn", img_size=img_size, options=options)
    task = make_task(models.get("faster-rcnn"), config, classes=["a", "b"], state=state)
    return task.build_model().rpn.shapes


def test_faster_rcnn_anchors_given_in_pixels_are_those_pixels_at_every_input_size():
    from cnnkit.plugins.rcnn.rpn import anchor_shapes

    given = {"anchor_sizes": "16,32,64", "anchor_ratios": "0.5,1,2"}  # as `--anchor-sizes 16,32,64` gives them
    expected = anchor_shapes((16.0, 32.0, 64.0), (0.5, 1.0, 2.0))
    assert torch.equal(_anchors(64, **given), expected) and torch.equal(_anchors(128, **given), expected)
    # a config file's lists, a single number
    assert torch.equal(_anchors(96, anchor_sizes=[16, 32, 64], anchor_ratios=[0.5, 1, 2]), expected)
    assert torch.equal(_anchors(96, anchor_sizes=40, anchor_ratios=1), anchor_shapes((40.0,), (1.0,)))


def test_faster_rcnn_default_anchors_are_the_papers_at_600_px_and_scale_below():
    from cnnkit.plugins.rcnn.rpn import anchor_shapes

    paper = anchor_shapes((128.0, 256.0, 512.0), (0.5, 1.0, 2.0))
    assert torch.equal(_anchors(600), paper)
    assert torch.equal(models.get("faster-rcnn").create(num_classes=2).rpn.shapes, paper)  # the builder's own default
    assert torch.allclose(_anchors(64), anchor_shapes((128 * 64 / 600, 256 * 64 / 600, 512 * 64 / 600), (0.5, 1.0, 2.0)))
    # a checkpoint keeps the anchors it trained with; one written before they were kept had size/8, /4, /2
    task = make_task(models.get("faster-rcnn"), TrainConfig(model="faster-rcnn", img_size=64), classes=["a"])
    task.build_model()
    assert task.state["anchor_sizes"] == pytest.approx([128 * 64 / 600, 256 * 64 / 600, 512 * 64 / 600])
    assert torch.equal(_anchors(64, state={"anchor_sizes": [10.0], "anchor_ratios": [1.0]}), anchor_shapes((10.0,), (1.0,)))
    assert torch.equal(_anchors(64, state={}), anchor_shapes((8.0, 16.0, 32.0), (0.5, 1.0, 2.0)))


@pytest.mark.parametrize("value", ["0,128", "big", "128,-1", "nan"])
def test_bad_anchor_sizes_are_one_line(cli, value):
    from tests.conftest import one_clear_line

    one_clear_line(cli("train", "faster-rcnn", "--data", SHAPES, "--epochs", "1", "--no-track",
                       "--anchor-sizes", value), "--anchor-sizes", "128,256,512")

