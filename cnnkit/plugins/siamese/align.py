"""Five face landmarks (dlib's ``shape_predictor_5_face_landmarks.dat``) and the aligned chip.

The landmarker is an ensemble of regression trees (Kazemi & Sullivan, CVPR 2014): starting from
a mean shape placed in the face box, each of 15 cascade levels reads 800 grey pixels at offsets
from the current landmarks (the offsets follow the shape's similarity transform), and each of its
500 depth-4 trees compares pixel pairs to pick a leaf whose shape increment is added. Run here in
numpy, all trees of a level at once. The points are the eye corners (outer and inner of each eye)
and the bottom of the nose.

The chip is what dlib's ``get_face_chip`` makes: the similarity transform that puts the five
points on their mean positions in a 150x150 chip with 25% padding, sampled bilinearly from an
image pyramid level at most twice the chip's scale (so large faces are not aliased).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from cnnkit.plugins.siamese.dlib_format import ShapePredictorData, read_shape_predictor
from cnnkit.plugins.siamese.face_resnet import CHIP_SIZE, model_file

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_PADDING = 0.25  # what dlib's compute_face_descriptor uses
# Mean positions of the five points in a face chip without padding (dlib's get_face_chip_details).
TEMPLATE = np.array([(0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
                     (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
                     (0.4901123135679, 0.6277975316475)])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``A, t`` of the least-squares similarity ``dst ~ A @ src + t`` (Umeyama 1991), as dlib's
    ``find_similarity_transform``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum(1).mean()
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        flip[1, 1] = -1
    rot = u @ flip @ vt
    c = (sv * np.diag(flip)).sum() / var if var else 1.0
    return c * rot, mu_d - c * rot @ mu_s


def _cached_predictor(path: Path) -> ShapePredictorData:
    """Parsing the 9 MB file in Python takes seconds: its arrays are kept as an .npz beside
    torch's hub cache, keyed by the file's hash (parsed again when the cache is unwritable)."""
    import torch

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = Path(torch.hub.get_dir()) / "cnnkit" / f"{path.stem}-{digest}.npz"
    fields = list(ShapePredictorData.__dataclass_fields__)
    if cache.is_file():
        try:
            with np.load(cache) as z:
                levels = int(z["levels"])
                return ShapePredictorData(z["initial_shape"], *([z[f"{f}_{i}"] for i in range(levels)]
                                                                 for f in fields[1:]))
        except (OSError, KeyError, ValueError):
            pass
    data = read_shape_predictor(path)
    try:
        from cnnkit.api import atomic_path

        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"initial_shape": data.initial_shape, "levels": len(data.leaves)}
        for f, values in asdict(data).items():
            if f != "initial_shape":
                arrays.update({f"{f}_{i}": v for i, v in enumerate(values)})
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError:
        pass
    return data


class Landmarker:
    """dlib's 5-point shape predictor in numpy."""

    def __init__(self, data: ShapePredictorData) -> None:
        self.d = data
        self.trees = np.arange(data.leaves[0].shape[0])
        self.depth = int(np.log2(data.split_thresh[0].shape[1] + 1))

    def __call__(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """(5, 2) integer landmarks (x, y) in an RGB uint8 image, given an integer box ``l, t, r, b``."""
        d = self.d
        left, top, right, bottom = box
        size = np.array([right - left, bottom - top], np.float64)
        # the features lie within the box grown by its size (a crop keeps large photos cheap)
        x0, y0 = max(left - int(size[0]), 0), max(top - int(size[1]), 0)
        grey = _grey(image[y0:max(bottom + int(size[1]) + 1, y0), x0:max(right + int(size[0]) + 1, x0)])
        origin = np.array([left - x0, top - y0], np.float64)
        h, w = grey.shape
        shape = d.initial_shape.astype(np.float32).copy()
        for level in range(len(d.leaves)):
            a, _ = similarity_transform(d.initial_shape, shape)
            points = d.deltas[level] @ a.T.astype(np.float32) + shape[d.anchor[level]]
            pixel = np.floor(origin + points * size + 0.5).astype(np.int64)
            inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < w) & (pixel[:, 1] >= 0) & (pixel[:, 1] < h)
            feats = np.zeros(len(pixel), np.float32)
            feats[inside] = grey[pixel[inside, 1], pixel[inside, 0]]
            node = np.zeros(len(self.trees), np.int64)
            idx, thresh = d.split_idx[level], d.split_thresh[level]
            for _ in range(self.depth):
                pair = idx[self.trees, node]
                left_branch = feats[pair[:, 0]] - feats[pair[:, 1]] > thresh[self.trees, node]
                node = np.where(left_branch, 2 * node + 1, 2 * node + 2)
            shape += d.leaves[level][self.trees, node - idx.shape[1]].sum(0)
        # dlib's parts are integer points
        return np.floor(origin + shape.astype(np.float64) * size + 0.5) + np.array([x0, y0])


@lru_cache(maxsize=1)
def landmarker() -> Landmarker:
    return Landmarker(_cached_predictor(model_file(LANDMARKS_FILE)))


def _grey(image: np.ndarray) -> np.ndarray:
    """dlib's intensity of an RGB pixel: the integer mean of its channels."""
    return (image.astype(np.uint16).sum(2) // 3).astype(np.uint8)


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>``: a 5x5 [1 4 6 4 1] binomial filter, every other pixel kept
    (integer arithmetic, output (h-3)//2 x (w-3)//2)."""
    k = (1, 4, 6, 4, 1)
    h, w = image.shape[:2]
    rows, cols = (h - 3) // 2, (w - 3) // 2
    x = image.astype(np.uint32)
    tmp = sum(k[j] * x[:, j:j + 2 * cols - 1:2] for j in range(5))
    out = sum(k[i] * tmp[i:i + 2 * rows - 1:2] for i in range(5)) // 256
    return out.astype(np.uint8)


def _rect_down(rect: np.ndarray) -> np.ndarray:
    """dlib's pyramid_down<2>::rect_down of ``l, t, r, b``."""
    return rect / 2 - np.array([1.25, 0.75, 1.25, 0.75])


def _area(rect: np.ndarray) -> float:
    return max(rect[2] - rect[0] + 1, 0) * max(rect[3] - rect[1] + 1, 0)


def _rotate(rect: np.ndarray, angle: float) -> np.ndarray:
    """The rect's top-left, top-right and bottom-left corners rotated by ``angle`` about its centre."""
    corners = np.array([[rect[0], rect[1]], [rect[2], rect[1]], [rect[0], rect[3]], [rect[2], rect[3]]])
    centre = (rect[:2] + rect[2:]) / 2
    c, s = np.cos(angle), np.sin(angle)
    return (corners - centre) @ np.array([[c, s], [-s, c]]) + centre


def extract_chip(image: np.ndarray, points: np.ndarray, size: int = CHIP_SIZE,
                 padding: float = CHIP_PADDING) -> np.ndarray:
    """The aligned ``size`` x ``size`` RGB chip of the face with these five landmarks, as dlib's
    ``get_face_chip`` samples it: the chip's square (rotated) in the image, taken from the
    ``pyramid_down`` level where it is still larger than the chip, bilinearly."""
    template = (padding + TEMPLATE) / (2 * padding + 1) * size
    a, t = similarity_transform(template, points)
    angle, scale = np.arctan2(a[1, 0], a[0, 0]), np.hypot(a[0, 0], a[1, 0])
    centre = a @ np.array([size / 2, size / 2]) + t
    half = (size * scale - 1) / 2
    rect = np.r_[centre - half, centre + half]
    # crop (dlib's bounding box: the rotated square grown by the pyramid's border), then the level
    grow, r = 2.0, _rect_down(rect)
    while _area(r) > size * size:
        r, grow = _rect_down(r), grow * 2 + 2
    corners = _rotate(rect, angle)
    h, w = image.shape[:2]
    x1, y1 = np.floor(np.maximum(corners.min(0) - grow, 0) + 0.5).astype(int)
    x2, y2 = np.floor(np.minimum(corners.max(0) + grow, (w - 1, h - 1)) + 0.5).astype(int)
    region = image[y1:y2 + 1, x1:x2 + 1]
    rect = rect - np.array([x1, y1, x1, y1])
    while _area(_rect_down(rect)) > size * size and min(region.shape[:2]) > 8:
        rect, region = _rect_down(rect), pyramid_down(region)
    tl, tr, bl, _ = _rotate(rect, angle)
    m = np.column_stack([(tr - tl) / (size - 1), (bl - tl) / (size - 1), tl])
    chip = cv2.warpAffine(region.astype(np.float32), m, (size, size),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    return chip.astype(np.uint8)  # truncated, as dlib assigns its bilinear values
