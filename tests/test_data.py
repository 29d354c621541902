"""Data adapters: one small detection set written in three layouts reads back the same."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data import find_dataset, open_dataset
from cnnkit.core.data.detection import write_coco, write_voc, write_yolo
from cnnkit.core.data.images import read_image, write_image
from cnnkit.core.data.synthetic import Glyphs, Shapes, Textures
from tests.conftest import write_image_folder


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


@pytest.fixture(scope="module")
def shapes():
    return {"train": Shapes("train", n=12, size=64, seed=3), "val": Shapes("val", n=12, size=64, seed=3)}


@pytest.mark.parametrize("layout", ["yolo", "coco", "voc"])
def test_three_layouts_yield_the_same_samples(tmp_path, shapes, layout):
    writer = {"yolo": write_yolo, "coco": write_coco, "voc": write_voc}[layout]
    spec = writer(shapes, tmp_path / layout)
    ds_spec, _, _ = find_dataset(str(spec))
    assert ds_spec.name == layout
    for split in ("train", "val"):
        ds = open_dataset(str(spec), split, ("detect",))
        assert ds.classes == ["circle", "square", "triangle"]
        assert len(ds) == len(shapes[split])
        for i in range(len(ds)):
            got, want = ds[i], shapes[split][i]
            assert got.image.dtype == np.uint8 and got.image.shape == want.image.shape
            np.testing.assert_array_equal(got.image, want.image)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
            np.testing.assert_array_equal(got.labels, want.labels)


def test_shapes_has_images_without_objects_and_is_deterministic():
    a, b = Shapes("train", n=200, size=64), Shapes("train", n=200, size=64)
    counts = [len(a[i].labels) for i in range(200)]
    assert 0 in counts and max(counts) <= 3
    np.testing.assert_array_equal(a[17].image, b[17].image)
    assert not np.array_equal(a[0].image, Shapes("val", n=200, size=64)[0].image)


def test_textures_and_glyphs():
    t = Textures("train", n=16, size=32)
    image, label = t[5]
    assert image.shape == (32, 32, 3) and label == 5 and len(t.classes) == 8
    g_train, g_val = Glyphs("train", ids=8, per_id=3), Glyphs("val", ids=8, per_id=3)
    assert set(g_train.classes).isdisjoint(g_val.classes)
    assert g_train[4][1] == 1


def test_yolo_label_out_of_range_names_file_and_line(tmp_path, shapes):
    spec = write_yolo({"train": shapes["train"]}, tmp_path)
    label = tmp_path / "labels" / "train" / "000000.txt"
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(CnnkitError, match=r"000000\.txt:\d+: class 7 is out of range"):
        open_dataset(str(spec), "train")


def test_unrecognised_layout_and_missing_path(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    with pytest.raises(CnnkitError, match="unrecognised data layout"):
        open_dataset(str(tmp_path / "stuff"))
    with pytest.raises(CnnkitError, match="no such file"):
        open_dataset(str(tmp_path / "nope"))
    with pytest.raises(CnnkitError, match="unknown synthetic dataset"):
        open_dataset("synthetic:nope")
    with pytest.raises(CnnkitError, match="unknown parameter"):
        open_dataset("synthetic:shapes?colour=red")


def test_synthetic_parameters_are_parsed():
    ds = open_dataset("synthetic:shapes?n=8&size=48", "train")
    assert len(ds) == 8 and ds[0].image.shape == (48, 48, 3)


def test_image_folder_and_identity_roots(tmp_path):
    write_image_folder(tmp_path / "folder", ("cat", "dog"), per_class=2, size=8)
    ds = open_dataset(str(tmp_path / "folder"), "val", ("classify",))
    assert ds.classes == ["cat", "dog"] and len(ds) == 4 and ds[3][1] == 1
    rng = np.random.default_rng(0)
    for person in ("ann", "bob", "cy", "dee", "eve", "fay"):
        for i in range(2):
            write_image(tmp_path / "people" / person / f"{i}.jpg", rng.integers(0, 255, (8, 8, 3), np.uint8))
    train = open_dataset(str(tmp_path / "people"), "train", ("embed",))
    val = open_dataset(str(tmp_path / "people"), "val", ("embed",))
    assert set(train.classes).isdisjoint(val.classes)
    assert sorted(train.classes + val.classes) == ["ann", "bob", "cy", "dee", "eve", "fay"]
    with pytest.raises(CnnkitError, match="this model needs detect data"):
        open_dataset(str(tmp_path / "people"), "train", ("detect",))


def test_read_image_honours_exif_and_converts_to_rgb(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(wide).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "rot.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[-15:].mean() < 50  # white half now on top

    Image.new("RGBA", (5, 6), (10, 20, 30, 255)).save(tmp_path / "rgba.png")
    Image.new("L", (5, 6), 77).save(tmp_path / "grey.png")
    assert read_image(tmp_path / "rgba.png").shape == (6, 5, 3)
    assert read_image(tmp_path / "grey.png")[0, 0].tolist() == [77, 77, 77]


def test_corrupt_and_missing_images_are_clear_errors(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(CnnkitError, match=r"bad\.jpg: cannot read image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(CnnkitError, match="no such file"):
        read_image(tmp_path / "missing.png")


class _InputRecorder(torch.nn.Module):
    """A detector following torchvision's contract that finds nothing and keeps what it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.seen += [x.cpu() for x in images]
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                for _ in images]


@pytest.mark.parametrize("shape", [(80, 96), (30, 41)])  # shrunk and enlarged, both not square
def test_detect_sees_exactly_the_tensor_evaluation_sees(shape):
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.registry import models
    from cnnkit.core.data.detection import DetectionSample
    from cnnkit.core.tasks.detect import DetectionTask, DetectionTransform

    plugins.load_plugins()
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    task = DetectionTask(models.get("yolov1"), TrainConfig(model="yolov1", img_size=64))
    recorder = _InputRecorder()
    task.predict(recorder, [image], torch.device("cpu"))
    sample = DetectionSample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    evaluated, _ = DetectionTransform(64, train=False, normalize=task.normalize)(sample)
    assert torch.equal(recorder.seen[0], evaluated)
