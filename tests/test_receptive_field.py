"""Receptive fields in `cnnkit summary`: each layer's size, effective stride and effective padding,
equal to the published table of Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
Neural Networks" (Distill, 2019), and to the input pixels a unit's gradient actually reaches."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.models.receptive_field import receptive_fields

# The published values: google-research/receptive_field, README.md (the table of the Distill
# article's library) and receptive_field/RECEPTIVE_FIELD_TABLE.md (per end-point, computed on
# TF-Slim's networks): (receptive field, effective stride, effective padding).
PUBLISHED = {
    # model, input, end-point (ours): value, TF-Slim end-point
    ("alexnet-lrn", 227, "features"): ((195, 32, 64), "alexnet_v2/pool5"),
    ("vgg-d", 224, "features"): ((212, 32, 90), "vgg_16/pool5"),
    ("inception-v3", 299, "Mixed_5b"): ((63, 8, 18), "inception_v3 Mixed_5b"),
    ("inception-v3", 299, "Mixed_6a"): ((159, 16, 58), "inception_v3 Mixed_6a"),
    ("inception-v3", 299, "Mixed_6e"): ((927, 16, 442), "inception_v3 Mixed_6e"),
    ("inception-v3", 299, "Mixed_7c"): ((1311, 32, 618), "inception_v3 Mixed_7c"),
    ("inception-v4", 299, "features"): ((2071, 32, 998), "inception_v4 Mixed_7d"),
    ("inception-resnet-v2", 299, "repeat_1"): ((2335, 16, 1146), "inception_resnet_v2 PreAuxLogits"),
    ("inception-resnet-v2", 299, "conv2d_7b"): ((3039, 32, 1482), "inception_resnet_v2 Conv2d_7b_1x1"),
}
# Same size and stride, padding by the frameworks' conventions: TF-Slim's ResNets pad their 3x3
# max pool 'SAME', which at an even input puts no padding before the first row (1 here, x 2 px of
# stride = 2 px), and torchvision's AlexNet pads its first convolution by 2 (TF-Slim's: 'VALID').
PUBLISHED_SIZE_STRIDE = {
    ("resnet50", 224, "layer4"): ((483, 32), 241, (239, "resnet_v1_50/block4")),
    ("resnet101", 224, "layer4"): ((1027, 32), 513, (511, "resnet_v1_101/block4")),
    ("resnet152", 224, "layer4"): ((1507, 32), 753, (751, "resnet_v1_152/block4")),
    ("alexnet", 224, "features"): ((195, 32), 66, (64, "alexnet_v2/pool5")),
}


def _field(model: str, size: int, layer: str):
    load_plugins()
    spec = models.get(model)
    with torch.device("meta"):
        net = spec.create(num_classes=spec.num_classes).eval()
    return receptive_fields(net, torch.empty(1, 3, size, size, device="meta"), [layer])[layer]


@pytest.mark.parametrize("model,size,layer", list(PUBLISHED))
def test_receptive_fields_equal_the_published_table(model, size, layer):
    (rf, stride, padding), _ = PUBLISHED[(model, size, layer)]
    field = _field(model, size, layer)
    assert (field.size, field.stride, field.padding) == ((rf, rf), (stride, stride), (padding, padding))


@pytest.mark.parametrize("model,size,layer", list(PUBLISHED_SIZE_STRIDE))
def test_resnet_and_torchvision_alexnet_sizes_and_strides_are_published_ones(model, size, layer):
    (rf, stride), padding, _ = PUBLISHED_SIZE_STRIDE[(model, size, layer)]
    field = _field(model, size, layer)
    assert (field.size, field.stride, field.padding) == ((rf, rf), (stride, stride), (padding, padding))


class Branches(nn.Module):
    """Every kind of step at once: strides, dilation, non-square kernels, padding by F.pad and a
    crop, a 2-path concatenation (Inception), a strided shortcut addition (ResNet), pooling and a
    space-to-depth."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1))
        self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.b = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, (3, 5), padding=(1, 2)))
        self.down = nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(8, 4, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        joined = torch.cat([self.a(s), self.b(s)], 1)
        y = nn.functional.pad(self.down(joined), (1, 0, 1, 0))[..., :-1, :-1] + self.shortcut(joined)
        return nn.functional.pixel_unshuffle(nn.functional.avg_pool2d(y, 3, 1, 1), 2)  # max: one argmax


def _reach(net: nn.Module, size: int, at: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rows and columns of the input that one output unit's gradient reaches (all weights 1,
    no cancellation): first row, last row, first column, last column."""
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0 if p.dim() > 1 else 0.0)
    x = torch.ones(1, 1, size, size, requires_grad=True)
    out = net(x)
    out[0, :, at[0], at[1]].sum().backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()[:, 0]
    cols = x.grad[0, 0].abs().sum(0).nonzero()[:, 0]
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def test_fields_of_a_branching_net_match_where_gradients_reach():
    """A unit at (i, j) sees input rows -P + i*S ... -P + i*S + R - 1 (Araujo et al., eq. 5):
    measured by backpropagation from units well inside the map, where padding clips nothing."""
    net = Branches()
    size = 96
    field = receptive_fields(net, torch.empty(1, 1, size, size))[""]
    (rh, rw), (sh, sw), (ph, pw) = field.size, field.stride, field.padding
    out_hw = net(torch.zeros(1, 1, size, size)).shape[-2:]
    for i, j in ((out_hw[0] // 2, out_hw[1] // 2), (out_hw[0] // 2 + 1, out_hw[1] // 2 - 1)):
        top, bottom, left, right = _reach(net, size, (i, j))
        # the union of the paths (the padded path starts earlier, the shortcut ends later)
        assert (top, bottom) == (-ph + i * sh, -ph + i * sh + rh - 1), field
        assert (left, right) == (-pw + j * sw, -pw + j * sw + rw - 1), field


def test_summary_has_a_receptive_field_for_every_layer(cli):
    r = cli("summary", "vgg-d", "--json")
    assert r.code == 0, r.stderr
    rows = json.loads(r.stdout)["layers"]
    assert all(row["receptive_field"] for row in rows)
    pool5 = [row for row in rows if row["output_text"] == "7x7x512"][-1]
    assert pool5["receptive_field"] == {"size": [212, 212], "stride": [32, 32], "padding": [90, 90]}
    r = cli("summary", "alexnet-lrn")
    assert r.code == 0 and "RF (s, p): receptive field" in r.stdout and "195 (32, 64)" in r.stdout
    r = cli("summary", "yolov3-tiny", "--json")  # concatenation with an upsampled path: the largest
    last = json.loads(r.stdout)["layers"][-1]
    assert last["receptive_field"] == {"size": [286, 286], "stride": [16, 16], "padding": [111, 111]}
    # Darknet's [reorg] reads rows 4j..4j+3 modulo the height: no window, no field after it
    rows = json.loads(cli("summary", "yolov2", "--json").stdout)["layers"]
    by_name = {row["name"]: row["receptive_field"] for row in rows}
    assert by_name["head1.1.0"]["size"] == [502, 502] and by_name["passthrough.0.0"]["size"] == [166, 166]
    assert by_name["head2.0"] is None and by_name["pred"] is None
