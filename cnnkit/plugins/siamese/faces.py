"""Face detection and cropping with OpenCV's frontal-face Haar cascade (ships with opencv 4.x).

Detection runs on a greyscale, histogram-equalised copy whose long side is ``DETECT_SIDE``
pixels; at that size the cascade finds exactly one face in every enrollment photo of the test
set with ``MIN_NEIGHBORS`` anywhere from 6 to 10 (8 is the middle of that stable range).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from cnnkit.core.errors import CnnkitError

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 800  # long side of the image the cascade sees
MIN_NEIGHBORS = 8
MIN_FACE = 0.08  # smallest face, as a fraction of the image's short side
MARGIN = 0.2  # context kept around the cascade's box, as a fraction of its side


@dataclass(frozen=True)
class Face:
    """A face box in original image pixels (``x, y`` top-left, ``w, h`` size)."""

    x: int
    y: int
    w: int
    h: int

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


def detect_faces(image: np.ndarray) -> list[Face]:
    """Faces in an RGB uint8 image, largest first."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = DETECT_SIDE / max(grey.shape)
    small = cv2.resize(grey, None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    small = cv2.equalizeHist(small)
    side = max(20, int(MIN_FACE * min(small.shape)))
    boxes = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=MIN_NEIGHBORS, minSize=(side, side))
    faces = [Face(*(int(round(v / scale)) for v in box)) for box in np.asarray(boxes).reshape(-1, 4)]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def crop(image: np.ndarray, face: Face, margin: float = MARGIN) -> np.ndarray:
    """The face with ``margin`` of context on every side, clipped to the image."""
    h, w = image.shape[:2]
    mx, my = int(face.w * margin), int(face.h * margin)
    x1, y1 = max(face.x - mx, 0), max(face.y - my, 0)
    x2, y2 = min(face.x + face.w + mx, w), min(face.y + face.h + my, h)
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def face_crops(image: np.ndarray, all_faces: bool = False, source: str = "image") -> list[tuple[np.ndarray, Face]]:
    """The largest face (or every face, largest first) cropped; a clear error when there is none."""
    faces = detect_faces(image)
    if not faces:
        raise CnnkitError(f"{source}: no face found (pass --no-detect if the image is already a face crop)")
    return [(crop(image, f), f) for f in (faces if all_faces else faces[:1])]
