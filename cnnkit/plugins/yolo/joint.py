"""YOLO9000's data side: detection and classification sets on one WordTree, mixed in the batches.

- :func:`on_tree`: a dataset whose labels are its class names' nodes in the tree (unknown names
  are refused with one line);
- :func:`joint_dataset`: the detection training set followed by the classification images, each
  a target with no boxes and an ``image_label`` (the node); shuffled batches mix the two, and
  :class:`cnnkit.plugins.yolo.losses.YOLOv2Loss` gives each kind its loss.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit.api import (
    CnnkitError,
    DetectionSample,
    DetectionTransform,
    MappedDataset,
    checked_number,
    paths_of,
    source_of,
)


def tree_nodes(classes: list[str], tree: Any, where: str) -> np.ndarray:
    """The tree node of each class name."""
    try:
        return np.asarray([tree.index(name) for name in classes], dtype=np.int64)
    except CnnkitError as exc:
        raise CnnkitError(f"{where}: {exc}") from None


def label_levels(tree: Any, labelled: np.ndarray) -> np.ndarray:
    """For every node, itself or its nearest ancestor among the ``labelled`` nodes (itself when none is)."""
    keep = set(int(n) for n in labelled)
    level = np.arange(len(tree))
    for node in range(len(tree)):
        for a in tree.ancestors[node].tolist():
            if a in keep:
                level[node] = a
                break
    return level


class TreeLabels:
    """``base`` with every label replaced by its node in the tree (``classes``: the tree's nodes)."""

    def __init__(self, base: Any, nodes: np.ndarray, classes: list[str]) -> None:
        self.base, self.nodes, self.classes = base, nodes, classes

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        sample = self.base[index]
        if isinstance(sample, DetectionSample):
            return replace(sample, labels=self.nodes[np.asarray(sample.labels, np.int64)],
                           ignore_labels=self.nodes[np.asarray(sample.ignore_labels, np.int64)])
        image, label = sample
        return image, int(self.nodes[label])


def on_tree(dataset: Any, tree: Any, where: str) -> TreeLabels:
    return TreeLabels(dataset, tree_nodes(list(getattr(dataset, "classes", []) or []), tree, where), list(tree.labels))


class ClassificationTransform:
    """An ``(image, node)`` sample as a detection-style one: letterboxed (augmented like the
    detection images, then shrunk by a random factor in [``zoom_out``, 1] at a random spot) with no
    boxes and ``image_label`` = the node."""

    def __init__(self, img_size: int, zoom_out: float = 1.0) -> None:
        self.detection = DetectionTransform(img_size, train=True, zoom_out=zoom_out)
        self.pipeline = self.detection.pipeline  # MappedDataset reseeds it per sample

    def __call__(self, sample: tuple[np.ndarray, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, node = sample
        tensor, target = self.detection(DetectionSample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
        return tensor, {**target, "image_label": torch.tensor(node, dtype=torch.long)}


class JointDataset(Dataset):
    """Detection samples then ``cls_count`` classification samples (default: each once); with a
    count other than the set's size they are drawn each epoch from a seeded permutation of the set,
    cycled, so every image comes up as evenly as the count allows. ``seed``/``epoch`` reach both
    parts (the engine sets them each epoch for reproducible augmentation)."""

    def __init__(self, detections: MappedDataset, classifications: MappedDataset, cls_count: int | None = None) -> None:
        self.parts = (detections, classifications)
        self.base = detections  # the detection scan's report (``splits.report_of``)
        self.classes = detections.classes
        self.cls_count = len(classifications) if cls_count is None else int(cls_count)
        self._order: tuple[tuple[int, int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.parts[0]) + self.cls_count

    @property
    def source(self) -> str:
        return f"{source_of(self.parts[0])} plus --cls-data {source_of(self.parts[1])}"

    def paths(self) -> list[Any] | None:
        """The files of both parts, so the engine's train/val overlap check sees every training image."""
        parts = [paths_of(p) for p in self.parts]
        return None if parts == [None, None] else [p for files in parts for p in files or []]

    def _cls_index(self, i: int) -> int:
        n = len(self.parts[1])
        if self.cls_count == n:
            return i
        key = (self.seed, self.epoch)
        if self._order is None or self._order[0] != key:
            rng = np.random.default_rng([self.seed, self.epoch, 9000])
            laps = -(-self.cls_count // n)
            self._order = key, np.concatenate([rng.permutation(n) for _ in range(laps)])
        return int(self._order[1][i])

    def __getitem__(self, index: int) -> Any:
        first = len(self.parts[0])
        return self.parts[0][index] if index < first else self.parts[1][self._cls_index(index - first)]

    @property
    def seed(self) -> int:
        return self.parts[0].seed

    @seed.setter
    def seed(self, value: int) -> None:
        for p in self.parts:
            p.seed = value

    @property
    def epoch(self) -> int:
        return self.parts[0].epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        for p in self.parts:
            p.epoch = value


def joint_dataset(detections: MappedDataset, cls_data: str, tree: Any, img_size: int,
                  cls_ratio: Any = 0.0, cls_zoom: Any = 1.0) -> JointDataset:
    """The training set of joint training: ``detections`` and the train split of ``cls_data``;
    ``cls_ratio`` > 0: that many classification images an epoch per detection image (the paper
    samples ImageNet:COCO 4:1), 0: each classification image once; ``cls_zoom`` < 1: each
    classification image shrunk by a random factor in [cls_zoom, 1], so its object comes in the
    sizes of the detection images' objects (a classification set's objects are larger)."""
    from cnnkit.api import open_dataset

    where = f"--cls-data {cls_data}"
    images = on_tree(open_dataset(cls_data, "train", ("classify",)), tree, where)
    if not len(images):
        raise CnnkitError(f"{where}: the training split is empty")
    ratio = checked_number(cls_ratio, "--cls-ratio", "0 (each classification image once) or more",
                           lambda r: 0 <= r < math.inf)
    count = round(ratio * len(detections)) if ratio > 0 else None
    zoom = checked_number(cls_zoom, "--cls-zoom", "a fraction in (0, 1] (1: no zoom-out)", lambda z: 0 < z <= 1)
    return JointDataset(detections, MappedDataset(images, ClassificationTransform(img_size, zoom)), count)
