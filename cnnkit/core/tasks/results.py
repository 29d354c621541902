"""What a model predicts for one image, as small objects: their ``to_json()`` is the record the
command line prints (``cnnkit detect --json``, ``cnnkit classify --json``), so a script and the
command line cannot disagree. No torch here: results are numpy arrays and PIL images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Result:
    """A prediction for one image: ``image`` names it (its path, or ``image<N>`` for an array)."""

    image: str

    def to_json(self) -> dict[str, Any]:
        """The record the command line prints for this image."""
        raise NotImplementedError


@dataclass
class Detections(Result):
    """Boxes found in one image, in its own pixel coordinates, highest score first."""

    detections: list[dict[str, Any]] = field(default_factory=list)  # {box: [x1, y1, x2, y2], score, label, class}
    pixels: np.ndarray | None = field(default=None, repr=False)  # the RGB image, for plot()

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` float32 ``x1, y1, x2, y2``."""
        return np.asarray([d["box"] for d in self.detections], np.float32).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.asarray([d["score"] for d in self.detections], np.float32)

    @property
    def labels(self) -> np.ndarray:
        """Class indices (into the model's ``names``)."""
        return np.asarray([d["label"] for d in self.detections], np.int64)

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [d["class"] for d in self.detections]

    def __len__(self) -> int:
        return len(self.detections)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "detections": self.detections}

    def plot(self) -> Any:
        """The image with its boxes and "class score" labels drawn (a PIL image)."""
        from PIL import Image

        from cnnkit.core.tasks.draw import draw_detections

        if self.pixels is None:
            raise ValueError(f"{self.image}: no pixels kept to draw on")
        return Image.fromarray(draw_detections(self.pixels, self.detections))


@dataclass
class Classification(Result):
    """Class probabilities of one image; ``top`` of them are reported."""

    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # every class's probability
    classes: list[str] = field(default_factory=list, repr=False)
    top: int = 5

    @property
    def indices(self) -> list[int]:
        """The ``top`` class indices, most probable first."""
        k = min(self.top, len(self.probs))
        return [int(i) for i in np.argsort(-self.probs, kind="stable")[:k]]

    @property
    def names(self) -> list[str]:
        return [self.classes[i] if i < len(self.classes) else str(i) for i in self.indices]

    @property
    def scores(self) -> list[float]:
        """The probabilities of the ``top`` classes."""
        return [float(self.probs[i]) for i in self.indices]

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "top": [{"index": i, "class": n, "prob": p}
                                             for i, n, p in zip(self.indices, self.names, self.scores)]}


@dataclass
class Embedding(Result):
    """One image's embedding (float32; L2-normalised where the model makes it so)."""

    vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "embedding": [float(v) for v in self.vector]}


@dataclass
class Stylized(Result):
    """One image stylized: ``pixels`` RGB uint8 at the input's size."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.uint8), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "size": [int(self.pixels.shape[1]), int(self.pixels.shape[0])]}

    def plot(self) -> Any:
        """The stylized image (a PIL image)."""
        from PIL import Image

        return Image.fromarray(self.pixels)
