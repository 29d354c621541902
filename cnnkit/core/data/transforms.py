"""Training's augmentation: albumentations pipelines (bbox-aware for detection), imported when a
pipeline is built, so the names here (``AUGMENTATIONS``) cost nothing to import. Inference prepares
pixels without them (:mod:`cnnkit.core.data.pixels`)."""

from __future__ import annotations

from typing import Any

from cnnkit.core.base.errors import CnnkitError

AUGMENTATIONS = ("default", "alexnet", "vgg", "resnet", "inception", "darknet")


def _shorter_sides(img_size: int, lo: int, hi: int) -> list[int]:
    """The papers' shorter sides ``lo..hi`` (for 224 crops) at ``img_size``."""
    scale = img_size / 224
    return sorted({max(img_size, round(s * scale)) for s in range(lo, hi + 1)})


def classification_pipeline(img_size: int, train: bool, augment: str = "default") -> Any:
    """Training augmentation ``augment``, or resize + centre crop for evaluation. The papers' (sizes
    for their 224 crops, scaled with ``img_size``): ``alexnet`` (shorter side 256, random crops, flips,
    PCA colour noise: Krizhevsky et al. 2012 sec. 4.1), ``vgg`` (shorter side random in 256..512:
    Simonyan & Zisserman's scale jittering), ``resnet`` (256..480: He et al. sec. 3.4), ``inception``
    (8-100% of the area at ratios 3/4..4/3, photometric distortions: GoogLeNet sec. 6), ``darknet``
    (rotations up to 7 degrees, crops, hue/saturation/exposure: darknet19.cfg); ``default`` is
    cnnkit's milder crop (60-100%) for short runs."""
    import albumentations as A

    if augment not in AUGMENTATIONS:
        raise CnnkitError(f"--augment {augment}: choose {', '.join(AUGMENTATIONS)}")
    if not train:
        return A.Compose([A.SmallestMaxSize(max_size=img_size), A.CenterCrop(img_size, img_size)])
    size, flip = (img_size, img_size), A.HorizontalFlip(p=0.5)
    pca = A.FancyPCA(alpha=0.1, p=1.0)  # AlexNet's lighting noise (the image's own principal components)
    if augment in ("alexnet", "vgg", "resnet"):
        lo, hi = {"alexnet": (256, 256), "vgg": (256, 512), "resnet": (256, 480)}[augment]
        return A.Compose([A.SmallestMaxSize(max_size=_shorter_sides(img_size, lo, hi)),
                          A.RandomCrop(img_size, img_size), flip, pca])
    if augment == "inception":
        return A.Compose([A.RandomResizedCrop(size=size, scale=(0.08, 1.0)), flip,
                          A.ColorJitter(0.4, 0.4, 0.4, 0.0, p=0.5)])
    if augment == "darknet":
        return A.Compose([A.Affine(rotate=(-7, 7), p=1.0), A.RandomResizedCrop(size=size, scale=(0.25, 1.0)), flip,
                          A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=60, val_shift_limit=60, p=1.0)])
    return A.Compose([A.RandomResizedCrop(size=size, scale=(0.6, 1.0)), flip,
                      A.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5)])


def detection_pipeline(img_size: int, train: bool, zoom_out: float = 1.0, jitter: float = 0.25,
                       flip_only: bool = False) -> Any:
    """Letterbox to ``img_size`` square; in training also scale jitter (half the images scaled by a
    random factor in ``1 +- jitter``), flips and HSV (``flip_only``: flips alone, the R-CNN papers'). Boxes
    come with two label fields: ``labels`` and ``kind`` (0 object, 1 difficult, 2 crowd).
    ``zoom_out`` < 1: the letterboxed image is then shrunk by a random factor in [zoom_out, 1]
    and placed at a random spot of the padded square."""
    import albumentations as A
    import cv2

    steps: list[Any] = []
    if train and flip_only:
        steps.append(A.HorizontalFlip(p=0.5))
    elif train:
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


def letterbox_steps(img_size: int, fill: int = 114) -> list[Any]:
    """Long side to ``img_size`` (linear interpolation), then pad to a centred square: the one
    letterbox of training, evaluation and ``cnnkit detect``."""
    import albumentations as A
    import cv2

    return [A.LongestMaxSize(max_size=img_size),
            A.PadIfNeeded(img_size, img_size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=fill)]
