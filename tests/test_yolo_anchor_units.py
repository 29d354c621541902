"""Anchors in Darknet's units, fixed at every input size: ``[yolo]`` anchors are input pixels
(``get_yolo_box`` divides by the network's width), ``[region]`` anchors grid cells
(``get_region_box`` divides by the grid's). A head that predicts t_w = t_h = 0 must give boxes of
exactly the anchor's size in pixels at 320, 416 and 608 -- the test that fails if anchors are
scaled with the input again."""

from __future__ import annotations

import pytest
import torch

from cnnkit.core.base import plugins
from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.registry import models
from cnnkit.plugins.yolo.darknet import packaged_cfg
from cnnkit.plugins.yolo.task import ANCHOR_UNITS, YoloTask, decode


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _zero_heads(model: torch.nn.Module, size: int) -> list[torch.Tensor]:
    """Raw head maps of zeros at ``size`` (shapes from a meta forward)."""
    with torch.no_grad():
        shapes = [o.shape for o in model(torch.empty(1, 3, size, size))]
    return [torch.zeros(s) for s in shapes]


@pytest.mark.parametrize("name,pixels", [
    ("yolov3-tiny", [[81, 82], [135, 169], [344, 319], [10, 14], [23, 27], [37, 58]]),
    ("yolov3-tiny.cfg", [[81, 82], [135, 169], [344, 319], [10, 14], [23, 27], [37, 58]]),
    ("yolov2-tiny", [[0.57273 * 32, 0.677385 * 32], [9.77052 * 32, 9.16828 * 32]]),  # cells x 32 px
    ("yolov2-voc.cfg", [[1.3221 * 32, 1.73145 * 32], [11.2364 * 32, 10.0071 * 32]]),
])
def test_anchor_sizes_in_pixels_do_not_change_with_the_input(name, pixels):
    spec = models.get(str(packaged_cfg(name)) if name.endswith(".cfg") else name)
    model = spec.create(num_classes=3)
    for size in (320, 416, 608):
        boxes, _ = decode(model, _zero_heads(model, size), size)
        sizes = {tuple(round(float(v), 3) for v in wh) for wh in boxes[0, :, 2:]}
        for w, h in pixels:
            assert (round(w, 3), round(h, 3)) in sizes, (size, w, h)
        assert len(sizes) == sum(len(a) for a in model.anchors)


def test_checkpoint_anchors_from_before_are_converted_to_darknet_units():
    """A checkpoint written before kept fractions of its --img-size: rebuilt, it gets the pixels
    ([yolo]) or grid cells ([region]) those fractions were at that size."""
    config = TrainConfig(model="yolov3-tiny", img_size=64)
    old = {"anchors": torch.tensor([[0.125, 0.25], [0.25, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0], [1.0, 0.5]])}
    task = YoloTask(models.get("yolov3-tiny"), config, classes=["a"], state=old)
    with torch.device("meta"):
        model = task.build_model()
    assert torch.equal(torch.cat(model.anchors[::-1]), old["anchors"] * 64)
    assert task.state["anchor_units"] == ANCHOR_UNITS

    config = TrainConfig(model="yolov2-tiny", img_size=64)  # 2x2 grid: one cell is 32 px
    old = {"anchors": torch.tensor([[0.25, 0.25], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0], [1.5, 1.0]])}
    task = YoloTask(models.get("yolov2-tiny"), config, classes=["a"], state=old)
    with torch.device("meta"):
        model = task.build_model()
    assert torch.equal(model.anchors[0], old["anchors"] * 2)


def test_pixel_anchors_given_to_a_region_model_become_grid_cells():
    config = TrainConfig(model="yolov2-tiny", img_size=416, options={"anchors": "32,32 64,64 96,96 128,64 160,160"})
    task = YoloTask(models.get("yolov2-tiny"), config, classes=["a"])
    with torch.device("meta"):
        model = task.build_model()
    assert torch.allclose(model.anchors[0], torch.tensor([[1.0, 1.0], [2.0, 2.0], [4.0, 2.0], [3.0, 3.0], [5.0, 5.0]]))
