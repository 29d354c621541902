"""How the engine trains and evaluates classifiers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.core.data.transforms import classification_pipeline, to_tensor
from cnnkit.core.errors import CnnkitError
from cnnkit.core.metrics import topk_correct
from cnnkit.core.task import MappedDataset, Task
from cnnkit.plugins.classify.losses import ClassificationLoss


class ClassifySample:
    """Albumentations pipeline + tensor conversion + label check for one ``(image, label)``."""

    def __init__(self, img_size: int, train: bool, num_classes: int) -> None:
        self.pipeline = classification_pipeline(img_size, train)
        self.num_classes = num_classes

    def __call__(self, sample: tuple[np.ndarray, int]) -> tuple[torch.Tensor, int]:
        image, label = sample
        if not 0 <= int(label) < self.num_classes:
            raise CnnkitError(f"label {label} is out of range for {self.num_classes} classes")
        return to_tensor(self.pipeline(image=image)["image"]), int(label)


class ClassifyTask(Task):
    """Cross-entropy training (auxiliary heads weighted by ``--aux-weight``), top-1/top-5 evaluation."""

    data_tasks = ("classify",)
    default_data = "synthetic:textures"
    key_metric = "top1"
    key_mode = "max"
    options: dict[str, Any] = {"aux_weight": 0.3}
    arch_options: tuple[str, ...] = ()  # options passed to the model builder (when given)

    def dataset(self, split: str) -> MappedDataset:
        raw = self.raw_dataset(split)
        return MappedDataset(raw, ClassifySample(self.config.img_size, split == "train", len(self.classes or [])))

    def build_model(self) -> nn.Module:
        chosen = {k: self.option(k) for k in self.arch_options if self.option(k) is not None}
        return self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes, **chosen)

    @property
    def criterion(self) -> ClassificationLoss:
        return ClassificationLoss(self.config.label_smoothing, self.option("aux_weight"))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        return self.criterion(model(images), targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        model.eval()
        n, loss, hits = 0, 0.0, {1: 0, 5: 0}
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images)
            loss += float(F.cross_entropy(logits, targets, reduction="sum"))
            for k, v in topk_correct(logits, targets).items():
                hits[k] += v
            n += len(targets)
        return {"top1": hits[1] / max(n, 1), "top5": hits[5] / max(n, 1), "loss": loss / max(n, 1)}


class ResNetTask(ClassifyTask):
    """ResNets: ``--shortcut A|B|C`` picks the paper's shortcut option (default B)."""

    options = {**ClassifyTask.options, "shortcut": "B"}
    arch_options = ("shortcut",)


class InceptionResNetTask(ClassifyTask):
    """Inception-ResNets: ``--residual-scale S`` scales every residual branch (paper: 0.1-0.3)."""

    options = {**ClassifyTask.options, "residual_scale": None}
    arch_options = ("residual_scale",)
