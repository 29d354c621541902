"""`cnnkit summary`: the paper-style layer table, sized by the output-size formula, with the paper's figures."""

import json

from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.models.conv import output_size
from cnnkit.core.models.summary import count_params, formula_shape, summarize

ALEXNET_SIZES = ["55x55x96", "27x27x96", "27x27x256", "13x13x256", "13x13x384", "13x13x384", "13x13x256",
                 "6x6x256", "4096", "4096", "1000"]


def test_summary_prints_the_alexnet_table(cli):
    r = cli("summary", "alexnet-lrn")
    assert r.code == 0, r.stderr
    pos = 0
    for size in ALEXNET_SIZES:  # in the paper's order, one row each
        pos = r.stdout.index(f" {size} ", pos) + len(size)
    for text in ("62,378,344", "paper parameters: 62.30M", "Krizhevsky"):
        assert text in r.stdout


def test_summary_json_rows_follow_the_output_size_formula(cli):
    r = cli("summary", "alexnet-lrn", "--json")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert {"params", "macs", "paper", "layers"} <= set(report)
    assert report["params"] == 62_378_344 and report["paper"]["params"] == 62_300_000
    assert [row["output_text"] for row in report["layers"]] == ALEXNET_SIZES
    assert [row["name"] for row in report["layers"]][:2] == ["features.conv1", "features.pool1"]
    assert sum(row["params"] for row in report["layers"]) == report["params"]
    assert sum(row["macs"] for row in report["layers"]) == report["macs"]
    # the same chain by hand: conv 11/4, pool 3/2, conv 5 p2, pool 3/2, three convs 3 p1, pool 3/2
    n = output_size(227, 11, stride=4)
    n1 = output_size(n, 3, stride=2)
    n2 = output_size(output_size(n1, 5, padding=2), 3, stride=2)
    n3 = output_size(output_size(n2, 3, padding=1), 3, stride=2)
    assert (n, n1, n2, n3) == (55, 27, 13, 6)
    # conv1: 55*55 positions x 96 filters x 11*11*3 weights multiply-adds
    assert report["layers"][0]["macs"] == 55 * 55 * 96 * 11 * 11 * 3


def test_formula_shape_handles_same_padding_and_ceil_mode():
    import torch
    from torch import nn

    layers = [nn.Conv2d(3, 8, (1, 7), padding="same"), nn.Conv2d(3, 8, 3, stride=2, padding="valid"),
              nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(5, 3), nn.Conv2d(3, 4, 3, dilation=2, padding=1)]
    for layer in layers:
        for n in (17, 28, 35, 112):
            x = torch.zeros(1, 3, n, n)
            assert formula_shape(layer, (3, n, n)) == tuple(layer(x).shape[1:]), (layer, n)


def test_summary_paper_macs_only_at_the_paper_size(cli):
    r = cli("summary", "resnet50", "--json")
    full = json.loads(r.stdout)
    assert full["paper"]["macs"] == 3.8e9 and abs(full["paper"]["macs_diff_pct"]) < 3
    r = cli("summary", "resnet50", "--img-size", "112", "--num-classes", "10", "--json")
    small = json.loads(r.stdout)
    assert "macs" not in small["paper"] and "params" not in small["paper"]
    assert 0.2 < small["macs"] / full["macs"] < 0.3  # a quarter of the positions
    load_plugins()
    assert small["params"] == count_params(models.get("resnet50"), num_classes=10)


def test_summary_keeps_aux_classifiers_apart():
    load_plugins()
    report = summarize(models.get("googlenet"))
    assert report["aux_params"] > 6_000_000 and abs(report["params"] - 6.8e6) / 6.8e6 < 0.05
    assert count_params(models.get("googlenet")) == report["params"]
    stem_pools = [row["output_text"] for row in report["layers"] if row["name"].startswith("stem.")
                  and row["type"] == "MaxPool2d"]
    assert stem_pools == ["56x56x64", "28x28x192"]  # Table 1


def test_summary_refuses_too_small_sizes_and_unknown_models(cli):
    r = cli("summary", "alexnet-lrn", "--img-size", "64")
    assert r.code == 2 and "needs --img-size >= 67" in r.stderr and "Traceback" not in r.stderr
    r = cli("summary", "alexnet-lrm")
    assert r.code == 2 and "alexnet-lrn" in r.stderr
