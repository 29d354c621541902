"""Real dataset layouts as users have them (COCO 2017, Roboflow COCO and YOLO exports, Ultralytics
data.yaml variants, VOC roots, ImageFolder) and explicit splits: no validation on training or
test images without a word, --val PATH, --val-fraction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data import find_dataset, open_dataset
from cnnkit.core.data.images import write_image
from cnnkit.core.data.splits import split_summary
from tests.conftest import write_image_folder

CLASSES = ["cat", "dog"]


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


def _image(path: Path, size: int = 32, seed: int = 0) -> None:
    write_image(path, np.random.default_rng(seed).integers(0, 255, (size, size, 3), np.uint8))


def coco_json(path: Path, names: list[str], boxes: dict[str, list[tuple]] | None = None) -> Path:
    """A COCO json naming ``names`` (32x32 images); ``boxes[name]`` lists ``(x, y, w, h, cat,
    iscrowd)``; by default one 10x10 box of class 1 an image."""
    boxes = boxes or {}
    images, anns = [], []
    for i, name in enumerate(names, 1):
        images.append({"id": i, "file_name": name, "width": 32, "height": 32})
        for x, y, w, h, cat, crowd in boxes.get(name, [(4, 4, 10, 10, 1, 0)]):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": crowd})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return path


def coco_2017(root: Path, images_under: str = "") -> Path:
    """COCO as downloaded: annotations/instances_{train,val}2017.json with train2017/ and val2017/
    beside annotations/ (or under images/)."""
    for split, n in (("train2017", 4), ("val2017", 2)):
        names = [f"{i:012d}.jpg" for i in range(1, n + 1)]
        for i, name in enumerate(names):
            _image(root / images_under / split / name, seed=i)
        coco_json(root / "annotations" / f"instances_{split}.json", names)
    return root


def roboflow_coco(root: Path) -> Path:
    for split, n in (("train", 5), ("valid", 2), ("test", 3)):
        names = [f"img{i}_jpg.rf.abc.jpg" for i in range(n)]
        for i, name in enumerate(names):
            _image(root / split / name, seed=i)
        coco_json(root / split / "_annotations.coco.json", names)
    return root


def roboflow_yolo(root: Path, names: object = None) -> Path:
    for split, n in (("train", 6), ("valid", 2), ("test", 1)):
        for i in range(n):
            _image(root / split / "images" / f"{i}.jpg", seed=i)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{i}.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    cfg = {"train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 2,
           "names": names if names is not None else CLASSES}
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    return root


VOC_XML = """<annotation>
  <filename>{id}.jpg</filename>
  <size><width>32</width><height>32</height><depth>3</depth></size>
  <object>
    <name>dog</name>
    <difficult>0</difficult>
    <bndbox><xmin>5</xmin><ymin>5</ymin><xmax>{xmax}</xmax><ymax>14</ymax></bndbox>
  </object>
  <object>
    <name>cat</name>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>18</xmin><ymin>18</ymin><xmax>30</xmax><ymax>30</ymax></bndbox>
  </object>
</annotation>
"""


def voc(root: Path, splits: dict[str, int], difficult: int = 1) -> Path:
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (root / "Annotations").mkdir()
    n = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            image_id = f"2007_{n:06d}"
            _image(root / "JPEGImages" / f"{image_id}.jpg", seed=n)
            (root / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, xmax=14,
                                                                                 difficult=difficult))
            ids.append(image_id)
            n += 1
        (main / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def _sizes(spec: str, **kw) -> dict[str, int]:
    out = {}
    for split in ("train", "val", "test"):
        try:
            out[split] = len(open_dataset(spec, split, ("detect",), **kw))
        except CnnkitError:
            pass
    return out


@pytest.mark.parametrize("images_under", ["", "images"])
def test_coco_2017_as_downloaded(tmp_path, images_under):
    root = coco_2017(tmp_path / "coco", images_under)
    assert find_dataset(str(root))[0].name == "coco"
    assert _sizes(str(root)) == {"train": 4, "val": 2}
    train_json = root / "annotations" / "instances_train2017.json"
    assert _sizes(str(train_json)) == {"train": 4, "val": 2}
    assert _sizes(str(root / "annotations")) == {"train": 4, "val": 2}
    val = open_dataset(str(train_json), "val", ("detect",))
    assert val.source == f"COCO {root / 'annotations' / 'instances_val2017.json'}"
    sample = val[1]
    assert sample.path.endswith("val2017/000000000002.jpg") and sample.image.shape == (32, 32, 3)
    np.testing.assert_allclose(sample.boxes, [[4, 4, 14, 14]])
    assert val.classes == CLASSES and sample.labels.tolist() == [0]


def test_roboflow_coco_export(tmp_path):
    root = roboflow_coco(tmp_path / "rf")
    assert _sizes(str(root)) == {"train": 5, "val": 2, "test": 3}
    assert _sizes(str(root / "train" / "_annotations.coco.json")) == {"train": 5, "val": 2, "test": 3}
    lines, params = split_summary(open_dataset(str(root), "train"), open_dataset(str(root), "val"))
    assert lines[0] == (f"data: train 5 images (COCO {root / 'train' / '_annotations.coco.json'}), "
                        f"val 2 images (COCO {root / 'valid' / '_annotations.coco.json'})")
    assert params["data_val"] == f"2 images (COCO {root / 'valid' / '_annotations.coco.json'})"


@pytest.mark.parametrize("names", [CLASSES, {0: "cat", 1: "dog"}])
def test_roboflow_yolo_export(tmp_path, names):
    root = roboflow_yolo(tmp_path / "rfy", names)
    for spec in (root, root / "data.yaml"):
        assert find_dataset(str(spec))[0].name == "yolo"
        assert _sizes(str(spec)) == {"train": 6, "val": 2, "test": 1}
    ds = open_dataset(str(root), "val")
    assert ds.classes == CLASSES and ds[0].labels.tolist() == [1]
    np.testing.assert_allclose(ds[0].boxes, [[12, 12, 20, 20]])


def test_ultralytics_yaml_absolute_path_and_image_lists(tmp_path):
    data = tmp_path / "ds"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _image(data / "images" / split / f"{i}.png", seed=i)
            (data / "labels" / split).mkdir(parents=True, exist_ok=True)
            (data / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (data / "train.txt").write_text("./images/train/0.png\n./images/train/2.png\n")
    (data / "val.txt").write_text(f"{data / 'images' / 'val' / '1.png'}\n")
    cfg = tmp_path / "elsewhere" / "my.yaml"
    cfg.parent.mkdir()
    cfg.write_text(yaml.safe_dump({"path": str(data), "train": "train.txt", "val": "val.txt", "names": {0: "a"}}))
    assert _sizes(str(cfg)) == {"train": 2, "val": 1}
    relative = data / "rel.yaml"
    relative.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "names": ["a"]}))
    assert _sizes(str(relative)) == {"train": 3, "val": 2}


def test_voc_root_keeps_difficult_objects_as_ignore_regions(tmp_path):
    root = voc(tmp_path / "VOCdevkit" / "VOC2007", {"train": 3, "val": 2, "test": 2})
    for spec in (root, root.parent):
        assert _sizes(str(spec)) == {"train": 3, "val": 2, "test": 2}
    ds = open_dataset(str(root), "train")
    assert len(ds.classes) == 20 and ds.classes[:2] == ["aeroplane", "bicycle"]  # VOC's own twenty
    s = ds[0]
    np.testing.assert_allclose(s.boxes, [[4, 4, 14, 14]])
    assert [ds.classes[c] for c in s.labels] == ["dog"]
    np.testing.assert_allclose(s.ignore_boxes, [[17, 17, 30, 30]])
    assert [ds.classes[c] for c in s.ignore_labels] == ["cat"] and s.ignore_crowd.tolist() == [False]
    assert ds.report.ignored == 3 and ds.report.boxes == 3


def test_voc_val_never_falls_back_to_test(tmp_path):
    root = voc(tmp_path / "VOC2007", {"trainval": 3, "test": 2})
    assert len(open_dataset(str(root), "train")) == 3
    with pytest.raises(CnnkitError) as err:
        open_dataset(str(root), "val")
    message = str(err.value)
    assert "no validation split" in message and "--val PATH" in message and "--val-fraction F" in message
    assert len(open_dataset(str(root), "test")) == 2


def test_single_json_without_a_val_sibling_is_refused(tmp_path):
    names = [f"{i}.jpg" for i in range(4)]
    for i, n in enumerate(names):
        _image(tmp_path / "images" / n, seed=i)
    single = coco_json(tmp_path / "labels.json", names)
    assert len(open_dataset(str(single), "train")) == 4
    with pytest.raises(CnnkitError, match=r"no validation split.*--val PATH.*--val-fraction F"):
        open_dataset(str(single), "val")
    with pytest.raises(CnnkitError, match="test"):
        open_dataset(str(single), "test")


def test_val_fraction_is_a_seeded_cut_by_image(tmp_path):
    names = [f"{i}.jpg" for i in range(20)]
    for i, n in enumerate(names):
        _image(tmp_path / "images" / n, seed=i)
    spec = str(coco_json(tmp_path / "labels.json", names))
    train = open_dataset(spec, "train", val_fraction=0.25, seed=3)
    val = open_dataset(spec, "val", val_fraction=0.25, seed=3)
    assert (len(train), len(val)) == (15, 5)
    assert set(train.paths()).isdisjoint(val.paths()) and len(set(train.paths()) | set(val.paths())) == 20
    assert val.paths() == open_dataset(spec, "val", val_fraction=0.25, seed=3).paths()
    assert val.paths() != open_dataset(spec, "val", val_fraction=0.25, seed=4).paths()
    assert val[0].path == str(val.paths()[0]) and val.classes == CLASSES
    line = split_summary(train, val)[0][0]
    assert line == (f"data: train 15 images (COCO {spec} minus the --val-fraction 0.25, seed 3), "
                    f"val 5 images (--val-fraction 0.25 of COCO {spec}, seed 3)")
    with pytest.raises(CnnkitError, match="not both"):
        open_dataset(spec, "val", val=spec, val_fraction=0.2)


def test_val_path_takes_any_layout(tmp_path):
    names = [f"{i}.jpg" for i in range(3)]
    for i, n in enumerate(names):
        _image(tmp_path / "a" / "images" / n, seed=i)
    train = str(coco_json(tmp_path / "a" / "labels.json", names))
    rf = roboflow_coco(tmp_path / "rf")
    val = open_dataset(train, "val", val=str(rf))  # a root with splits: its val split
    assert len(val) == 2 and val.source.endswith("valid/_annotations.coco.json")
    val = open_dataset(train, "val", val=str(rf / "test" / "_annotations.coco.json"))  # a single json: all of it
    assert len(val) == 3
    with pytest.raises(CnnkitError, match="validation images are training images"):
        split_summary(open_dataset(train, "train"), open_dataset(train, "val", val=train))

    folder = write_image_folder(tmp_path / "cls", ("x", "y"), per_class=2, size=8, splits=("train",))
    with pytest.raises(CnnkitError, match="--val-fraction"):
        open_dataset(str(folder), "val", ("classify",))
    other = write_image_folder(tmp_path / "more", ("x", "y"), per_class=3, size=8, splits=("val",))
    val = open_dataset(str(folder), "val", ("classify",), val=str(other / "val"))  # one folder of classes
    assert len(val) == 6 and val.classes == ["x", "y"] and val.source == f"ImageFolder {other / 'val'}"


def test_cli_data_check_on_classification_and_identity_roots(cli, tmp_path):
    folder = write_image_folder(tmp_path / "cls", ("x", "y"), per_class=2, size=8, splits=("train", "valid"))
    r = cli("data", "check", "--data", folder)
    assert r.code == 0, r.stderr
    lines = [line.split("; scan ")[0] for line in r.stdout.splitlines()]  # the scan's time and cache
    assert lines == [
        f"data: {folder} (image-folder, classify); classes: x, y",
        f"train: 4 images (ImageFolder {folder / 'train'})",
        f"val: 4 images (ImageFolder {folder / 'valid'})",
        f"test: none (--data {folder}: {folder} has no test/ folder)"]
    people = folder / "train"  # one folder a person, read as identities unless --task says otherwise
    r = cli("data", "check", "--data", people, "--json")
    report = json.loads(r.stdout)
    assert report["layout"] == "identities" and "missing" in report["splits"]["test"]
    r = cli("data", "check", "--data", people, "--task", "classify", "--json")
    report = json.loads(r.stdout)
    assert report["layout"] == "image-folder" and report["splits"]["train"]["per_class"] == {"x": 2, "y": 2}
