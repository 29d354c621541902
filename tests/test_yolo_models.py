"""YOLO architectures: Darknet's parameter counts, output shapes, the passthrough layer, anchors."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.core.base import plugins
from cnnkit.core.base.registry import models
from cnnkit.core.models.summary import count_params
from cnnkit.plugins.yolo import models as yolo_models

DARKNET_PARAMS = {"yolov3": 61_949_149, "yolov3-tiny": 8_852_366, "darknet53": 41_609_928, "darknet19": 20_842_376}


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


@pytest.mark.parametrize("name", sorted(DARKNET_PARAMS))
def test_parameter_counts_equal_darknet(name):
    spec = models.get(name)
    assert spec.paper_params == DARKNET_PARAMS[name]
    assert count_params(spec) == DARKNET_PARAMS[name]


@pytest.mark.parametrize("name,grids,anchors", [
    ("yolov3", [2, 4, 8], 3), ("yolov3-tiny", [2, 4], 3), ("yolov2", [2], 5), ("yolov2-tiny", [2], 5)])
def test_anchor_heads_shapes(name, grids, anchors):
    with torch.device("meta"):
        model = models.get(name).create(num_classes=3)
        outputs = model(torch.zeros(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, anchors * 8, g, g) for g in grids]
    assert [len(a) for a in model.anchors] == [anchors] * len(grids)
    areas = torch.cat(model.anchors[::-1]).prod(1)  # coarsest head takes the largest anchors
    assert torch.all(areas[1:] >= areas[:-1])


@pytest.mark.parametrize("name", ["yolov1", "yolov1-fast"])
def test_yolov1_output_is_s_by_s_by_b5_plus_c(name):
    with torch.device("meta"):
        model = models.get(name).create(num_classes=20)
        out = model(torch.zeros(1, 3, 448, 448))
    assert tuple(out.shape) == (1, 7, 7, 2 * 5 + 20)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (len(convs), len(fcs)) == ((24, 2) if name == "yolov1" else (9, 1))
    assert all(isinstance(m.negative_slope, float) and m.negative_slope == 0.1
               for m in model.modules() if isinstance(m, torch.nn.LeakyReLU))
    # as published: no batch norm (it came with YOLOv2), biased convs; YOLOv1's dropout 0.5 after FC 4096
    assert not [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(c.bias is not None for c in convs)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == ([0.5] if name == "yolov1" else [])
    if name == "yolov1":
        head = list(model.head)
        assert head.index(fcs[0]) < [i for i, m in enumerate(head) if isinstance(m, torch.nn.Dropout)][0] \
            < head.index(fcs[1]) and fcs[0].out_features == 4096


def test_yolov1_bn_puts_batch_norm_after_every_convolution():
    with torch.device("meta"):
        model = models.get("yolov1-bn").create(num_classes=20)
    assert len([m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 24


def test_fast_yolo_takes_batch_norm_as_an_option(cli):
    plain = cli("summary", "yolov1-fast", "--json")
    bn = cli("summary", "yolov1-fast", "--batch-norm", "true", "--json")
    assert plain.code == 0 and bn.code == 0, bn.stderr
    with torch.device("meta"):
        model = models.get("yolov1-fast").create(num_classes=20, batch_norm=True)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # each of the 9 convs loses its bias and gains a BN scale and shift: + one channel count per conv
    added = sum(c.out_channels for c in convs)
    assert json.loads(bn.stdout)["params"] == json.loads(plain.stdout)["params"] + added


def test_yolov2_passthrough_turns_26x26x512_into_13x13x2048():
    """Shapes only; the element order is Darknet's reorg_cpu (tests/test_yolo_cfgs.py)."""
    y = yolo_models.Reorg(2)(torch.zeros(1, 512, 26, 26))
    assert y.shape == (1, 2048, 13, 13)


def test_darknet_classifiers_give_logits():
    with torch.device("meta"):
        assert models.get("darknet19").create(num_classes=10)(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
        assert models.get("darknet53").create(num_classes=7)(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    assert models.get("darknet53").task == "classify" and models.get("yolov3").task == "detect"
