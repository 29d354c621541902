"""Inference prepares pixels with numpy, OpenCV and PIL alone (cnnkit/core/data/pixels.py), so that
``cnnkit detect`` and ``classify`` import neither albumentations nor torchvision's transforms. Each
function is checked pixel for pixel against the library that defines the transform: albumentations
(training's letterbox and crops) and torchvision (the publishers' evaluation transforms)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from cnnkit.core.data.pixels import letterbox, publisher_crop, resize, resize_short_crop, to_array
from cnnkit.core.data.transforms import letterbox_steps

SHAPES = [(480, 640), (640, 480), (416, 416), (37, 1000), (1000, 37), (123, 321), (300, 299), (5, 7)]


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + h * 7 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("size", [32, 320, 416])
def test_letterbox_is_albumentations_letterbox(h: int, w: int, size: int) -> None:
    img = image(h, w)
    resize_step, pad_step = letterbox_steps(size)
    expected = pad_step(image=resize_step(image=img)["image"])["image"]
    got, lb = letterbox(img, size)
    np.testing.assert_array_equal(got, expected)
    boxes = np.array([[0.0, 0.0, w, h]], np.float32)  # the whole image maps into the square and back
    inside = boxes * lb.scale + np.array([*lb.pad, *lb.pad], np.float32)
    np.testing.assert_allclose(lb.unmap(inside, (h, w)), boxes, atol=1e-3)


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("size", [32, 224])
def test_resize_short_crop_is_albumentations_eval_transform(h: int, w: int, size: int) -> None:
    img = image(h, w)
    expected = A.Compose([A.SmallestMaxSize(max_size=size), A.CenterCrop(size, size)])(image=img)["image"]
    np.testing.assert_array_equal(resize_short_crop(img, size), expected)


@pytest.mark.parametrize("h,w", SHAPES)
def test_resize_is_albumentations_resize(h: int, w: int) -> None:
    img = image(h, w)
    np.testing.assert_array_equal(resize(img, 150, 150), A.Resize(150, 150)(image=img)["image"])


@pytest.mark.parametrize("h,w", SHAPES)
@pytest.mark.parametrize("resize_to,crop,mode", [(256, 224, "bilinear"), (342, 299, "bilinear"), (256, 224, "bicubic")])
def test_publisher_crop_is_torchvisions_transform(h: int, w: int, resize_to: int, crop: int, mode: str) -> None:
    from torchvision import transforms as T

    img = image(h, w)
    theirs = T.Compose([T.Resize(resize_to, interpolation=T.InterpolationMode(mode)), T.CenterCrop(crop),
                        T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(Image.fromarray(img))
    ours = to_array(publisher_crop(img, resize_to, crop, mode), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
