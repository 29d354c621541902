"""Find faces and cut them out as aligned 150x150 chips.

Detectors: ``cnn`` (default), dlib's MMOD network (``mmod.py``): a face is a window scoring above
0; ``haar``, OpenCV's frontal-face cascade (ships with opencv 4.x), run on a greyscale,
histogram-equalised copy whose long side is ``DETECT_SIDE`` pixels, each box confirmed by the CNN
detector around it (so paintings are refused by either). Every box then gets dlib's five
landmarks and must pass a geometry check (the points fit the mean face shape by a similarity
transform, at a scale that matches the box); the chip is cut around the landmarks (``align.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from cnnkit.api import CnnkitError

DETECTORS = ("cnn", "haar")
CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 800  # long side of the image the cascade sees
MIN_NEIGHBORS = 8
MIN_FACE = 0.08  # smallest Haar face, as a fraction of the image's short side
MAX_SHAPE_RESIDUAL = 0.1  # landmarks' RMS distance from the fitted mean shape, in face widths (faces: < 0.05)
SHAPE_SCALE = (0.4, 1.6)  # fitted mean-shape width / box width (faces: 0.7 to 0.95)


class NoFaceError(CnnkitError):
    """An image in which no face was found."""


@dataclass(frozen=True)
class Face:
    """A face box in original image pixels (``x, y`` top-left, ``w, h`` size), the detector's
    score (None for Haar) and the five landmarks."""

    x: int
    y: int
    w: int
    h: int
    score: float | None = None
    landmarks: tuple[tuple[float, float], ...] = ()

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@lru_cache(maxsize=1)
def _cascade() -> Any:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    if cascade.empty():
        raise CnnkitError(f"OpenCV's {CASCADE} could not be loaded (is opencv-python-headless 4.x installed?)")
    return cascade


def _haar_boxes(image: np.ndarray) -> list[tuple[int, int, int, int, float | None]]:
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = DETECT_SIDE / max(grey.shape)
    small = cv2.resize(grey, None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    small = cv2.equalizeHist(small)
    side = max(20, int(MIN_FACE * min(small.shape)))
    boxes = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=MIN_NEIGHBORS, minSize=(side, side))
    return [(*(int(round(v / scale)) for v in box), None) for box in np.asarray(boxes).reshape(-1, 4)]


def _confirmed(image: np.ndarray, box: tuple[int, int, int, int, float | None]) -> bool:
    """Does the CNN detector score a face (above 0) around a Haar box? Its window, with half a box
    of margin, is scanned; a detection whose centre falls in the box confirms it (a painting's
    face-like brushstrokes fool the cascade and the landmarks, not the CNN)."""
    x, y, w, h, _ = box
    x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
    window = np.ascontiguousarray(image[y0:y + h + h // 2, x0:x + w + w // 2])
    for x1, y1, bw, bh, _ in _cnn_boxes(window):
        cx, cy = x0 + x1 + bw / 2, y0 + y1 + bh / 2
        if x <= cx <= x + w and y <= cy <= y + h:
            return True
    return False


def _cnn_boxes(image: np.ndarray) -> list[tuple[int, int, int, int, float | None]]:
    from cnnkit.plugins.siamese.mmod import mmod_detector

    out = []
    for det in mmod_detector()(image):
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        out.append((x1, y1, x2 - x1 + 1, y2 - y1 + 1, det.score))
    return out


def plausible(points: np.ndarray, w: int) -> bool:
    """Do five landmarks look like a face of width ``w``? (see ``MAX_SHAPE_RESIDUAL``)"""
    from cnnkit.plugins.siamese.align import TEMPLATE, similarity_transform

    a, t = similarity_transform(TEMPLATE, points)
    scale = float(np.hypot(a[0, 0], a[1, 0]))
    if scale <= 0:
        return False
    residual = np.sqrt(((TEMPLATE @ a.T + t - points) ** 2).sum(1).mean()) / scale
    return residual <= MAX_SHAPE_RESIDUAL and SHAPE_SCALE[0] <= scale / w <= SHAPE_SCALE[1]


def detect_faces(image: np.ndarray, detector: str = "cnn") -> list[Face]:
    """Faces in an RGB uint8 image with their landmarks, largest first."""
    from cnnkit.plugins.siamese.align import landmarker

    if detector not in DETECTORS:
        raise CnnkitError(f"unknown --detector '{detector}' ({', '.join(DETECTORS)})")
    faces = []
    for x, y, w, h, score in (_cnn_boxes if detector == "cnn" else _haar_boxes)(image):
        points = landmarker()(image, (x, y, x + w - 1, y + h - 1))
        if plausible(points, w) and (detector == "cnn" or _confirmed(image, (x, y, w, h, score))):
            faces.append(Face(x, y, w, h, score, tuple((float(px), float(py)) for px, py in points)))
    return sorted(faces, key=lambda f: f.area, reverse=True)


def face_chips(image: np.ndarray, all_faces: bool = False, source: str = "image",
               detector: str = "cnn") -> list[tuple[np.ndarray, Face]]:
    """The largest face's aligned chip (or every face's, largest first); a clear error when there is none."""
    from cnnkit.plugins.siamese.align import extract_chip

    faces = detect_faces(image, detector)
    if not faces:
        raise NoFaceError(f"{source}: no face found (pass --no-detect if the image is already a face crop)")
    return [(extract_chip(image, np.asarray(f.landmarks)), f) for f in (faces if all_faces else faces[:1])]
