"""Bad input gets one clear line on stderr and exit code 2, never a traceback."""

import numpy as np
import pytest

from cnnkit.core.data.images import write_image
from tests.conftest import one_clear_line as _one_clear_line
from tests.conftest import write_image_folder

TINY = ["--img-size", "32", "--batch-size", "8", "--epochs", "1", "--no-track"]


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "ds", ("a", "b"), per_class=3, size=16)


@pytest.fixture
def checkpoint(cli):
    r = cli("train", "resnet18", "--data", "synthetic:textures?n=16&size=32", "--out", "r18", *TINY)
    assert r.code == 0, r.stderr
    return "r18/weights/last.pt"


def test_missing_data_path(cli):
    _one_clear_line(cli("train", "resnet18", "--data", "no/such/dir", *TINY), "no/such/dir", "no such file")


def test_unrecognised_layout(cli, tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    _one_clear_line(cli("train", "resnet18", "--data", "junk", *TINY), "unrecognised data layout")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_image(cli, image_folder, workers):
    (image_folder / "train" / "a" / "1.png").write_bytes(b"\x89PNG broken")
    r = cli("train", "resnet18", "--data", str(image_folder), "--workers", workers, *TINY)
    assert r.code == 0 and "1 image(s) skipped: 1.png: not a readable image" in r.stderr, r.stderr  # found by the scan


def test_label_out_of_range(cli, image_folder):
    # a val class the training split does not have: its labels would fall outside the model's outputs
    write_image(image_folder / "val" / "zebra" / "0.png", np.zeros((16, 16, 3), np.uint8))
    _one_clear_line(cli("train", "resnet18", "--data", str(image_folder), *TINY), "zebra")


def test_unknown_model(cli):
    _one_clear_line(cli("eval", "nothing.pt"), "nothing.pt", "no such checkpoint")
    _one_clear_line(cli("train", "resnet-18", *TINY), "unknown model 'resnet-18'", "resnet18")


def test_checkpoint_from_another_model(cli, checkpoint):
    _one_clear_line(cli("train", "alexnet", "--resume", checkpoint, *TINY), "made by model 'resnet18'")
    _one_clear_line(cli("train", "densenet121", "--weights", checkpoint, *TINY), "do not fit densenet121")


def test_not_a_checkpoint(cli, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"definitely not a zip")
    _one_clear_line(cli("eval", "junk.pt"), "junk.pt", "not a readable cnnkit checkpoint")


def test_unreadable_config(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    _one_clear_line(cli("train", "resnet18", "--config", "bad.yaml"), "bad.yaml", "unreadable config")
    (tmp_path / "odd.yaml").write_text("epochz: 3\n")
    _one_clear_line(cli("train", "resnet18", "--config", "odd.yaml"), "epochz")
    _one_clear_line(cli("train", "resnet18", "--config", "none.yaml"), "none.yaml")


def test_unknown_family_option_and_bad_values(cli):
    _one_clear_line(cli("train", "resnet18", "--anchors", "1,2", *TINY), "--anchors")
    _one_clear_line(cli("train", "resnet18", "--optimizer", "lion", *TINY), "unknown optimizer")
    _one_clear_line(cli("train", "resnet18", "--device", "cuda:7", *TINY), "cuda:7")
    _one_clear_line(cli("train", "alexnet", "--img-size", "32", "--no-track"), "--img-size >= 63")


def test_eval_on_data_with_other_classes(cli, checkpoint, image_folder):
    _one_clear_line(cli("eval", checkpoint, "--data", str(image_folder)), "do not match")
