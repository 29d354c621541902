"""Selective search: the grouping hierarchy, recall on synthetic shapes, and `cnnkit proposals`."""

import json

import numpy as np
import pytest
import torch

from cnnkit.core.data.images import write_image
from cnnkit.core.data.synthetic import Shapes
from cnnkit.core.models.boxes import box_iou
from cnnkit.plugins.rcnn.selective_search import hierarchical_grouping, region_histograms, selective_search


def test_grouping_builds_the_full_hierarchy():
    labels = np.zeros((8, 8), np.int64)
    labels[:, 4:] = 1
    labels[4:, :4] = 2
    labels[4:, 4:] = 3
    colour = np.zeros((8, 8, 3), np.float32)
    colour[:, 4:] = 1.0
    boxes, position = hierarchical_grouping(labels, *region_histograms(labels, colour, colour), "cs")
    assert len(boxes) == 7  # 4 initial regions + 3 merges
    assert boxes[position.argmin()].tolist() == [0, 0, 8, 8]  # rank 1: the last merge, the whole image
    assert sorted(position.tolist()) == [1, 2, 3, 4, 4, 4, 4]
    # colour similarity merges the two left regions (same colour) before anything crosses the edge
    first = boxes[position == 3][0].tolist()
    assert first in ([0, 0, 4, 8], [4, 0, 8, 8])


def test_recall_on_shapes_at_iou_05():
    data = Shapes("val", n=80, size=128)  # 20 images
    hits = total = 0
    for i in range(len(data)):
        sample = data[i]
        boxes = selective_search(sample.image, "fast", max_proposals=2000)
        assert 0 < len(boxes) <= 2000 and boxes.dtype == np.float32
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        if len(sample.boxes):
            iou = box_iou(torch.as_tensor(sample.boxes), torch.as_tensor(boxes))
            hits += int((iou.max(1).values >= 0.5).sum())
            total += len(sample.boxes)
    assert total >= 30
    assert hits / total >= 0.9


def test_ranking_is_deterministic_and_capped():
    image = Shapes("train", n=4, size=96)[0].image
    a, b = selective_search(image, "fast", seed=3), selective_search(image, "fast", seed=3)
    assert np.array_equal(a, b)
    assert len(selective_search(image, "fast", max_proposals=5)) == 5
    assert len(np.unique(a, axis=0)) == len(a)  # duplicates removed
    with pytest.raises(ValueError):
        selective_search(image, "slowest")


def test_proposals_command(cli, tmp_path):
    write_image(tmp_path / "img.png", Shapes("val", n=8, size=96)[2].image)
    r = cli("proposals", tmp_path / "img.png", "--max", "30", "--json", "--save", tmp_path / "out.png")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0 < len(out["boxes"]) <= 30 and len(out["boxes"][0]) == 4
    assert (tmp_path / "out.png").stat().st_size > 0
    r = cli("proposals", tmp_path / "img.png", "--max", "5")
    assert r.code == 0 and "proposals" in r.stdout


def test_proposals_command_errors(cli, tmp_path):
    r = cli("proposals", tmp_path / "missing.png")
    assert r.code == 2 and "missing.png" in r.stderr and "Traceback" not in r.stderr
    write_image(tmp_path / "img.png", np.zeros((16, 16, 3), np.uint8))
    r = cli("proposals", tmp_path / "img.png", "--mode", "quality")
    assert r.code == 2 and "--mode" in r.stderr
