"""YOLO9000's data side: detection and classification sets on one WordTree, mixed in the batches.

- :func:`on_tree`: a dataset whose labels are its class names' nodes in the tree (unknown names
  are refused with one line);
- :func:`joint_dataset`: the detection training set followed by the classification images, each
  a target with no boxes and an ``image_label`` (the node); shuffled batches mix the two, and
  :class:`cnnkit.plugins.yolo.losses.YOLOv2Loss` gives each kind its loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit.core.data.detection import DetectionSample
from cnnkit.core.tasks.detect import DetectionTransform
from cnnkit.core.errors import CnnkitError
from cnnkit.core.task import MappedDataset


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
    detection images) with no boxes and ``image_label`` = the node."""

    def __init__(self, img_size: int) -> None:
        self.detection = DetectionTransform(img_size, train=True)
        self.pipeline = self.detection.pipeline  # MappedDataset reseeds it per sample

    def __call__(self, sample: tuple[np.ndarray, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, node = sample
        tensor, target = self.detection(DetectionSample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
        return tensor, {**target, "image_label": torch.tensor(node, dtype=torch.long)}


class JointDataset(Dataset):
    """Detection samples then classification samples; ``seed``/``epoch`` reach both (the engine
    sets them each epoch for reproducible augmentation)."""

    def __init__(self, detections: MappedDataset, classifications: MappedDataset) -> None:
        self.parts = (detections, classifications)
        self.classes = detections.classes

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, index: int) -> Any:
        first = len(self.parts[0])
        return self.parts[0][index] if index < first else self.parts[1][index - first]

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


def joint_dataset(detections: MappedDataset, cls_data: str, tree: Any, img_size: int) -> JointDataset:
    """The training set of joint training: ``detections`` and the train split of ``cls_data``."""
    from cnnkit.core.data import open_dataset

    where = f"--cls-data {cls_data}"
    images = on_tree(open_dataset(cls_data, "train", ("classify",)), tree, where)
    if not len(images):
        raise CnnkitError(f"{where}: the training split is empty")
    return JointDataset(detections, MappedDataset(images, ClassificationTransform(img_size)))
