"""Malformed Darknet files (reliability issue, rows 11 and 12): every bad .cfg value is one
``file:line`` line and exit 2, sizes are checked before anything is allocated; .weights files too
short for their header are refused in one line; `darknet import --out` is checked before loading."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import one_clear_line

NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"
CONV = "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
HEAD = ("[convolutional]\nfilters=21\nsize=1\nstride=1\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14, 23,27, 37,58\nclasses=2\nnum=3\n")


def _cfg(tmp_path, *sections: str, net: str = NET):
    path = tmp_path / "bad.cfg"
    path.write_text(net + "".join(sections))
    return path


@pytest.mark.parametrize("sections,line,needle", [
    ((CONV.replace("filters=16\n", ""), HEAD), 5, "needs filters="),
    ((CONV.replace("filters=16", "filters=-16"), HEAD), 5, "filters=-16 must be between 1"),
    ((CONV.replace("filters=16", "filters=many"), HEAD), 5, "filters=many is not an integer"),
    ((CONV.replace("size=3", "size=-3"), HEAD), 5, "size=-3 must be between 1"),
    ((CONV.replace("stride=1", "stride=0"), HEAD), 5, "stride=0 must be between 1"),
    ((CONV, "[shortcut]\nactivation=linear\n", HEAD), 12, "needs from="),
    ((CONV, HEAD.replace("mask=0,1,2", "mask=0,1,7")), 17, "mask=0,1,7 must pick among the 3 anchors"),
    ((CONV, HEAD.replace("mask=0,1,2", "mask=a,b")), 17, "mask=a,b is not a list of integers"),
    ((CONV, HEAD.replace("37,58", "37")), 17, "anchors= must be positive w,h pairs (got 5 values)"),
    ((CONV, "[maxpool]\nsize=2\nstride=0\n", HEAD), 12, "stride=0 must be between 1"),
    ((CONV.replace("filters=16", "filters=60000").replace("size=3", "size=4000"), HEAD), 5,
     "weights in one layer"),
    ((CONV, "[connected]\noutput=2000000000\n", HEAD), 12, "weights in one layer"),
])
def test_a_malformed_cfg_is_one_line_naming_file_and_line(cli, tmp_path, sections, line, needle):
    path = _cfg(tmp_path, *sections)
    one_clear_line(cli("summary", path), f"{path}:{line}", needle)
    # import builds the network for real: the huge layers are refused before their terabytes are asked for
    one_clear_line(cli("darknet", "import", tmp_path / "none.weights", "--model", path, "--out", tmp_path / "w.pt"),
                   f"{path}:{line}", needle)


def test_a_negative_or_huge_net_size_is_refused(cli, tmp_path):
    path = _cfg(tmp_path, CONV, HEAD, net=NET.replace("width=64", "width=-64"))
    one_clear_line(cli("summary", path), f"{path}:1", "width=-64 must be between 1 and 8192")
    path = _cfg(tmp_path, CONV, HEAD, net=NET.replace("height=64", "height=1000000"))
    one_clear_line(cli("summary", path), f"{path}:1", "height=1000000 must be between 1 and 8192")


def test_a_well_formed_small_cfg_still_builds(cli, tmp_path):
    r = cli("summary", _cfg(tmp_path, CONV, HEAD), "--json")
    assert r.code == 0, r.stderr


@pytest.mark.parametrize("size", [17, 18, 19])
def test_weights_shorter_than_their_header_are_too_short(cli, tmp_path, size):
    header = np.array([0, 2, 0], dtype=np.int32).tobytes() + np.array([0], dtype=np.int64).tobytes()
    path = tmp_path / "short.weights"
    path.write_bytes(header[:size])
    out = tmp_path / "out.pt"
    one_clear_line(cli("darknet", "import", path, "--model", "yolov3-tiny", "--out", out), str(path), "too short")
    assert not out.exists()


def test_darknet_import_checks_out_before_loading(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    missing = tmp_path / "never-read.weights"  # never opened: --out fails first
    one_clear_line(cli("darknet", "import", missing, "--model", "yolov3-tiny", "--out", blocker / "w.pt"),
                   "--out", "is a file")
