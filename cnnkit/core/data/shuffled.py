"""``?shuffle_labels=SEED`` on any ``--data``: each image keeps its pixels and takes the labels
of another image (a seeded permutation), so nothing links an image to its labels. A network
trained on it can only memorise: the data-randomisation test of Adebayo et al., "Sanity Checks
for Saliency Maps" (NeurIPS 2018), whose maps should no longer point at the objects."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from cnnkit.core.data.detection import DetectionSample


class ShuffledLabels:
    """``base`` with the labels of sample i taken from sample ``order[i]`` (a classification
    ``(image, label)`` or a detection sample's boxes and labels)."""

    def __init__(self, base: Any, seed: int) -> None:
        self.base = base
        self.order = np.random.default_rng(seed).permutation(len(base))
        for key in ("classes", "source"):
            if hasattr(base, key):
                setattr(self, key, getattr(base, key))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        sample, other = self.base[index], self.base[int(self.order[index])]
        if isinstance(sample, DetectionSample):
            return replace(sample, boxes=other.boxes, labels=other.labels, ignore_boxes=other.ignore_boxes,
                           ignore_labels=other.ignore_labels, ignore_crowd=other.ignore_crowd)
        return (sample[0], other[1], *sample[2:])
