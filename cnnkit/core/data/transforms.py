"""Albumentations pipelines (bbox-aware for detection), letterboxing and normalisation."""

from __future__ import annotations


import albumentations as A
import cv2


def classification_pipeline(img_size: int, train: bool) -> A.Compose:
    """Random-resized crop and flips for training; resize + centre crop for evaluation."""
    if train:
        return A.Compose([
            A.RandomResizedCrop(size=(img_size, img_size), scale=(0.6, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5),
        ])
    return A.Compose([A.SmallestMaxSize(max_size=img_size), A.CenterCrop(img_size, img_size)])


def detection_pipeline(img_size: int, train: bool, zoom_out: float = 1.0, jitter: float = 0.25) -> A.Compose:
    """Letterbox to ``img_size`` square; in training also scale jitter (half the images scaled by a
    random factor in ``1 +- jitter``), flips and HSV. Boxes
    come with two label fields: ``labels`` and ``kind`` (0 object, 1 difficult, 2 crowd).
    ``zoom_out`` < 1: the letterboxed image is then shrunk by a random factor in [zoom_out, 1]
    and placed at a random spot of the padded square."""
    steps: list[A.BasicTransform] = []
    if train:
        steps += [
            A.Affine(scale=(1 - jitter, 1 + jitter), translate_percent=(-0.1, 0.1), p=0.5,
                     border_mode=cv2.BORDER_CONSTANT, fill=114),
            A.HorizontalFlip(p=0.5),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=40, val_shift_limit=30, p=0.5),
        ]
    steps += letterbox_steps(img_size)
    if zoom_out < 1:
        steps += [A.RandomScale(scale_limit=(zoom_out - 1, 0), p=1.0),
                  A.PadIfNeeded(img_size, img_size, position="random", border_mode=cv2.BORDER_CONSTANT, fill=114)]
    return A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "kind"],
                                                     min_visibility=0.3, min_area=4))


def letterbox_steps(img_size: int, fill: int = 114) -> list[A.BasicTransform]:
    """Long side to ``img_size`` (linear interpolation), then pad to a centred square: the one
    letterbox of training, evaluation and ``cnnkit detect``."""
    return [A.LongestMaxSize(max_size=img_size),
            A.PadIfNeeded(img_size, img_size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=fill)]
