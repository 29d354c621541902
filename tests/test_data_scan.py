"""The dataset scan: counts, skipped images, clipped and dropped boxes with file:line, malformed
fields as one clear line (exit 2), the cache beside the labels, and `cnnkit data check`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data import open_dataset
from tests.test_data_layouts import _image, coco_json, roboflow_yolo, voc


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _yolo(tmp_path, lines: list[str]):
    root = roboflow_yolo(tmp_path / "ds")
    (root / "train" / "labels" / "0.txt").write_text("\n".join(lines) + "\n")
    return root


def test_yolo_scan_counts_skips_clips_and_drops(tmp_path):
    root = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2", "1 0.95 0.5 0.3 0.2", "0 0.5 0.5 0 0.1", "1 0.1 0.1 0.2 -0.1"])
    (root / "train" / "labels" / "1.txt").unlink()  # an image without objects
    (root / "train" / "images" / "2.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "train" / "labels" / "3.txt").write_text("1 0 0 0.9 0.9 0.9 0.5\n")  # a polygon
    ds = open_dataset(str(root), "train")
    rep = ds.report
    assert (rep.images, rep.empty, rep.boxes, rep.clipped, rep.dropped) == (5, 1, 2 + 1 + 1 + 1, 1, 2)
    assert rep.skipped == ["2.jpg: not a readable image (UnidentifiedImageError)"]
    label = root / "train" / "labels" / "0.txt"
    assert rep.clipped_at == [f"{label}:2"] and rep.dropped_at == [f"{label}:3", f"{label}:4"]
    np.testing.assert_allclose(ds[0].boxes, [[12.8, 12.8, 19.2, 19.2], [25.6, 12.8, 32, 19.2]], atol=1e-4)
    np.testing.assert_allclose(ds[2].boxes, [[0, 0, 28.8, 28.8]], atol=1e-4)  # 3.jpg (2.jpg was skipped)
    assert rep.per_class == {"cat": 1, "dog": 4}
    warnings = rep.warnings()
    assert warnings[0].endswith("1 image(s) skipped: 2.jpg: not a readable image (UnidentifiedImageError)")
    assert f"1 box(es) outside the image clipped to it: {label}:2" in warnings[1]
    assert (f"2 box(es) of zero or negative size (or wholly outside the image) dropped: {label}:3; {label}:4"
            in warnings[2])


def test_scan_is_cached_beside_the_labels_and_redone_when_a_label_changes(tmp_path):
    root = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2"])
    first = open_dataset(str(root), "train")
    assert first.report.cache == "written"
    assert (root / "train" / "labels.cnnkit.cache").is_file()
    again = open_dataset(str(root), "train")
    assert again.report.cache == "hit" and again.report.boxes == first.report.boxes == 6
    np.testing.assert_array_equal(again[0].boxes, first[0].boxes)
    assert [str(p) for p in again.paths()] == [str(p) for p in first.paths()]
    label = root / "train" / "labels" / "0.txt"
    label.write_text("0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    os.utime(label, ns=(1, 1))
    changed = open_dataset(str(root), "train")
    assert changed.report.cache == "written" and changed.report.boxes == 7


def test_read_only_folder_is_scanned_but_not_written(tmp_path):
    root = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2"])
    folder = root / "train"
    os.chmod(folder, 0o555)
    try:
        if os.access(folder, os.W_OK):  # root writes anywhere: stand a folder where the cache goes
            os.chmod(folder, 0o755)
            (folder / "labels.cnnkit.cache").mkdir()
        ds = open_dataset(str(root), "train")
        assert ds.report.cache.startswith("not written (") and len(ds) == 6
        assert not (folder / "labels.cnnkit.cache").is_file()
        assert open_dataset(str(root), "train").report.cache.startswith("not written (")
    finally:
        os.chmod(folder, 0o755)


def _coco_with(tmp_path, annotation: dict) -> str:
    _image(tmp_path / "images" / "a.jpg")
    path = coco_json(tmp_path / "train.json", ["a.jpg"])
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 7, "image_id": 1, "category_id": 1, **annotation})
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("annotation, message", [
    ({"area": 4}, r"train\.json: annotation 1 \(id 7\): no 'bbox'"),
    ({"bbox": [1, 2, "x", 4]}, r"train\.json: annotation 1 \(id 7\): 'bbox' must be \[x, y, width, height\]"),
    ({"bbox": [1, 2, 3, 4], "category_id": 9}, r"train\.json: annotation 1 \(id 7\): unknown category 9"),
])
def test_malformed_coco_fields_name_the_annotation(tmp_path, annotation, message):
    with pytest.raises(CnnkitError, match=message):
        open_dataset(_coco_with(tmp_path, annotation), "train")


def test_coco_zero_size_boxes_and_missing_images_are_counted(tmp_path):
    spec = _coco_with(tmp_path, {"bbox": [5, 5, 0, 3]})
    data = json.loads(open(spec).read())
    data["images"].append({"id": 2, "file_name": "gone.jpg", "width": 32, "height": 32})
    open(spec, "w").write(json.dumps(data))
    ds = open_dataset(spec, "train")
    assert ds.report.dropped == 1 and ds.report.dropped_at == [f"{spec}: annotation 1 (id 7)"]
    assert ds.report.skipped == ["gone.jpg: missing"] and len(ds) == 1


def test_malformed_voc_and_yolo_fields_name_file_and_line(tmp_path):
    root = voc(tmp_path / "VOC2007", {"train": 2, "val": 1})
    xml = root / "Annotations" / "2007_000001.xml"
    xml.write_text(xml.read_text().replace("<xmin>18</xmin>", "<xmin>abc</xmin>"))
    with pytest.raises(CnnkitError, match=r"2007_000001\.xml:12: xmin 'abc' is not a number"):
        open_dataset(str(root), "train")
    bad = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2", "x 0.5 0.5 0.2 0.2"])
    with pytest.raises(CnnkitError, match=r"labels/0\.txt:2: class 'x' is not a class number"):
        open_dataset(str(bad), "train")
    (bad / "train" / "labels" / "0.txt").write_text("0 0.5 abc 0.2 0.2\n")
    with pytest.raises(CnnkitError, match=r"labels/0\.txt:1: 'abc' is not a number"):
        open_dataset(str(bad), "train")


def test_cli_data_check_prints_the_report(cli, tmp_path):
    root = _yolo(tmp_path, ["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0 0.1"])
    r = cli("data", "check", "--data", root)
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"data: {root} (yolo, detect); classes: cat, dog"
    assert lines[1].startswith("train: 6 images, 6 boxes, 0 without objects (YOLO ")
    assert "cache written" in lines[1] and lines[2].startswith("  warning: ") and "1 box(es) of zero" in lines[2]
    assert lines[3].startswith("val: 2 images, 2 boxes") and lines[4].startswith("test: 1 images")
    r = cli("data", "check", "--data", root, "--json")
    report = json.loads(r.stdout)
    assert report["splits"]["train"]["cache"] == "hit" and report["splits"]["train"]["dropped"] == 1
    assert report["splits"]["val"]["per_class"] == {"cat": 0, "dog": 2}

    cfg = yaml.safe_load((root / "data.yaml").read_text())
    del cfg["val"]
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    r = cli("data", "check", "--data", root)
    assert r.code == 0 and "val: none (--data" in r.stdout
    assert r.stdout.splitlines()[-1] == "training needs a validation split: --val PATH or --val-fraction F"
    r = cli("data", "check", "--data", root, "--val-fraction", "0.5", "--json")
    sizes = {k: v.get("images") for k, v in json.loads(r.stdout)["splits"].items()}
    assert sizes == {"train": 3, "val": 3, "test": 1}

    (root / "train" / "labels" / "0.txt").write_text("x 0.5 0.5 0.2 0.2\n")
    r = cli("data", "check", "--data", root)
    assert r.code == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {root / 'train' / 'labels' / '0.txt'}:1: class 'x' is not a class number"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (and holds almost none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b""))


def test_rotated_and_hostile_images_in_a_yolo_set(tmp_path):
    from PIL import Image

    root = _yolo(tmp_path, ["0 0.5 0.25 0.5 0.5"])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 20 high, displayed 20 wide and 40 high
    Image.new("RGB", (40, 20), (90, 90, 90)).save(root / "train" / "images" / "0.jpg", exif=exif)
    (root / "train" / "images" / "1.jpg").unlink()
    (root / "train" / "images" / "1.png").write_bytes(_png_header(100_000, 100_000))
    ds = open_dataset(str(root), "train")
    assert ds[0].image.shape == (40, 20, 3)
    np.testing.assert_allclose(ds[0].boxes, [[5, 0, 15, 20]], atol=1e-4)
    assert ds.report.skipped == ["1.png: image is 100000x100000 pixels, above the limit of 89478485 "
                                 "(raise it with --max-image-pixels N or CNNKIT_MAX_IMAGE_PIXELS=N)"]
    from cnnkit.core.data.images import read_image

    with pytest.raises(CnnkitError, match=r"1\.png: image is 100000x100000 pixels, above the limit"):
        read_image(root / "train" / "images" / "1.png")
