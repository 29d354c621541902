"""The ``classify`` task: cross-entropy training (auxiliary heads weighted), top-1/top-5 evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.pixels import IMAGENET, Norm, publisher_crop, resize_short_crop, to_tensor
from cnnkit.core.data.transforms import AUGMENTATIONS
from cnnkit.core.metrics.measures import topk_correct
from cnnkit.core.tasks import results
from cnnkit.core.tasks.base import MappedDataset, Task


class ClassifySample:
    """Albumentations pipeline + tensor conversion + label check for one ``(image, label)``;
    ``publisher``: published weights' own evaluation transform (on a PIL image) instead."""

    def __init__(self, img_size: int, train: bool, num_classes: int, norm: Norm = IMAGENET,
                 publisher: Any = None, augment: str = "default") -> None:
        self.pipeline = None
        if train:
            from cnnkit.core.data.transforms import classification_pipeline

            self.pipeline = classification_pipeline(img_size, train, augment)
        self.img_size, self.num_classes, self.norm, self.publisher = img_size, num_classes, norm, publisher

    def image(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 image as the model's input."""
        if self.pipeline is not None:
            image = self.pipeline(image=image)["image"]
        elif self.publisher is not None:
            image = publisher_crop(image, self.publisher.resize, self.publisher.crop, self.publisher.interpolation)
        else:
            image = resize_short_crop(image, self.img_size)
        return to_tensor(image, self.norm)

    def __call__(self, sample: tuple[np.ndarray, int]) -> tuple[torch.Tensor, int]:
        image, label = sample
        if not 0 <= int(label) < self.num_classes:
            raise CnnkitError(f"label {label} is out of range for {self.num_classes} classes")
        return self.image(image), int(label)


class ClassificationLoss(nn.Module):
    """Cross-entropy on the main logits; during training, networks with auxiliary classifiers
    (GoogLeNet, Inception-v3) return ``(logits, aux, ...)`` and each aux term is weighted."""

    def __init__(self, label_smoothing: float = 0.0, aux_weight: float = 0.3) -> None:
        super().__init__()
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight

    def forward(self, outputs: torch.Tensor | tuple[torch.Tensor, ...],
                targets: torch.Tensor) -> dict[str, torch.Tensor]:
        main, *aux = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        losses = {"cls": F.cross_entropy(main, targets, label_smoothing=self.label_smoothing)}
        if aux:
            losses["aux"] = sum(F.cross_entropy(a, targets, label_smoothing=self.label_smoothing) for a in aux)
        losses["loss"] = losses["cls"] + self.aux_weight * losses.get("aux", 0.0)
        return losses


def cross_entropy(model: nn.Module, task: Task) -> ClassificationLoss:
    """The ``cross_entropy`` loss factory: ``--label-smoothing`` from the config, ``--aux-weight``."""
    return ClassificationLoss(task.config.label_smoothing, float(task.option("aux_weight")))


class Probabilities(nn.Module):
    """A classifier's exported graph: softmax probabilities ``(B, C)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(1)


class ClassifyTask(Task):
    """Image classification on ImageFolder-like data; best.pt is chosen by top-1."""

    data_tasks = ("classify",)
    default_data = "synthetic:textures"
    key_metric = "top1"
    key_mode = "max"
    # bench/explain.py (resnet18 on synthetic:figure-crops?n=1024, 12 epochs, 48 val images, layer3): trained vs
    # re-initialised maps' Spearman rho 0.51 (gradcam++), 0.55 (eigencam), 0.58 (integrated-gradients) >= RANK_BOUND
    # 0.5; gradcam 0.12, scorecam 0.31
    explain_refused = {
        "gradcam++": "it fails the model-randomisation check on classifiers (its maps of a re-initialised network "
                     "correlate with the trained one's: Spearman 0.51 >= 0.5); use gradcam",
        "eigencam": "it fails the model-randomisation check on classifiers (class-agnostic, it follows the image, "
                    "not the weights: Spearman 0.55 >= 0.5); use gradcam",
        "integrated-gradients": "it fails the model-randomisation check on classifiers (at the input, the image "
                                "dominates its maps: Spearman 0.58 >= 0.5 against a re-initialised network); "
                                "use gradcam",
    }
    noun = "classifier"
    run_with = "`cnnkit classify {source} IMAGE...`"
    options = {"augment": "default"}  # training augmentation: default, or a paper's (transforms.AUGMENTATIONS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.option("augment") not in AUGMENTATIONS:
            raise CnnkitError(f"--augment {self.option('augment')}: choose {', '.join(AUGMENTATIONS)}")

    def default_loss(self) -> str:
        return self.spec.loss or "cross_entropy"

    def dataset(self, split: str) -> MappedDataset:
        return MappedDataset(self.raw_dataset(split), self.sample_transform(split == "train"))

    def sample_transform(self, train: bool) -> ClassifySample:
        """Training augmentation, or the evaluation transform: the publisher's (resize, centre crop,
        their mean/std) for weights from the registry run at their own crop size, else the task's."""
        from cnnkit.core.base.registry import weights

        entry = weights.get(self.config.weights) if self.config.weights in weights else None
        publisher = None if train or entry is None or entry.crop != self.config.img_size else entry
        return ClassifySample(self.config.img_size, train, len(self.classes or []), self.input_norm(), publisher,
                              str(self.option("augment")))

    def export_module(self, model: nn.Module, nms: dict[str, float] | None = None) -> nn.Module:
        return Probabilities(model)

    @staticmethod
    def logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's logits; an exported file's log-probabilities serve as logits (same softmax)."""
        if getattr(model, "exported", False):
            return model(images).clamp_min(1e-30).log()
        return model(images)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Any, device: torch.device, **kwargs: Any) -> list[list[float]]:
        """Class probabilities of RGB uint8 images, prepared as for validation."""
        prepare = self.sample_transform(train=False).image
        x = torch.stack([prepare(image) for image in images]).to(device)
        return self.inference(model.eval())(x).float().cpu().tolist()

    def result(self, image: str, pixels: Any, prediction: Any, top: int = 5, **_: Any) -> results.Classification:
        return results.Classification(image, np.asarray(prediction, np.float32), list(self.classes or []), top)

    def explain_input(self, image: np.ndarray) -> Any:
        """As for evaluation (the publisher's resize and crop for published weights); the map is
        drawn on that crop."""
        from cnnkit.core.tasks.explaining import prepared

        return prepared(self.sample_transform(train=False).image, image, self.input_norm())

    def explain_targets(self, model: nn.Module, x: torch.Tensor, options: Any) -> list[Any]:
        """The ``--top`` most probable classes (1), ``--target CLASS`` or ``all``: each class's logit."""
        from cnnkit.core.tasks.explaining import Target, class_indices

        classes = list(self.classes or [])
        with torch.no_grad():
            probs = model(x).float().softmax(1)[0]
        names = classes + [str(i) for i in range(len(classes), len(probs))]
        chosen = class_indices(options.target, names, self.spec.name)
        if chosen is None:
            k = len(probs) if options.target == "all" else options.top or 1
            chosen = probs.topk(min(k, len(probs))).indices.tolist()
        return [Target(names[c], lambda m, t, c=c: m(t)[:, c], float(probs[c]), c) for c in chosen]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        model.eval()
        n, loss, hits = 0, 0.0, {1: 0, 5: 0}
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = self.logits(model, images)
            loss += float(F.cross_entropy(logits, targets, reduction="sum"))
            for k, v in topk_correct(logits, targets).items():
                hits[k] += v
            n += len(targets)
        return {"top1": hits[1] / max(n, 1), "top5": hits[5] / max(n, 1), "loss": loss / max(n, 1)}
