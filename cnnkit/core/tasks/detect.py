"""The ``detect`` task: bbox-aware data, collate, COCO-style evaluation, ``cnnkit detect``
predictions and MLflow artifacts (sample detections, PR curve).

As registered, it trains any model that follows torchvision's detection contract: in training
``model(images, targets)`` returns a dict of losses, in eval mode ``model(images)`` returns one
``{"boxes", "scores", "labels"}`` dict per image (labels 0..C-1, boxes xyxy pixels). A family
with its own head (YOLO, R-CNN) subclasses :class:`DetectionTask` and overrides ``loss`` and
``predict_batch``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.detection import DetectionSample
from cnnkit.core.data.pixels import IMAGENET, RAW, Norm, letterbox, to_tensor
from cnnkit.core.metrics.measures import Detections, coco_map, pr_curve
from cnnkit.core.models.boxes import batched_nms
from cnnkit.core.tasks import results
from cnnkit.core.tasks.base import MappedDataset, Task
from cnnkit.core.tasks.draw import draw_detections, records

Prediction = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # boxes (N,4) xyxy, scores (N,), labels (N,)


class DetectionTransform:
    """Albumentations (bbox-aware) letterbox/augment -> ``(image tensor, target)``; the target
    holds ``boxes`` and ``labels``, and the ignore regions ``ignore_boxes``, ``ignore_labels``,
    ``ignore_crowd`` moved with them (see ``cnnkit.core.data.detection``)."""

    def __init__(self, img_size: int, train: bool, normalize: bool | Norm = False, zoom_out: float = 1.0,
                 jitter: float = 0.25, flip_only: bool = False) -> None:
        from cnnkit.core.data.transforms import detection_pipeline

        self.pipeline = detection_pipeline(img_size, train, zoom_out, jitter, flip_only)
        self.normalize = normalize

    def __call__(self, sample: DetectionSample) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        kind = np.r_[np.zeros(len(sample.labels)), 1 + sample.ignore_crowd].astype(np.int64)
        out = self.pipeline(image=sample.image, bboxes=np.concatenate([sample.boxes, sample.ignore_boxes]),
                            labels=np.r_[sample.labels, sample.ignore_labels].astype(np.int64), kind=kind)
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1))
        kind = torch.as_tensor(np.asarray(out["kind"], dtype=np.int64).reshape(-1))
        obj = kind == 0
        return to_tensor(out["image"], self.normalize), {
            "boxes": boxes[obj], "labels": labels[obj],
            "ignore_boxes": boxes[~obj], "ignore_labels": labels[~obj], "ignore_crowd": kind[~obj] == 2}


def collate_detections(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]
                       ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)


class FirstImage(nn.Module):
    """The exported graph of a torchvision detector: one image ``(1, 3, H, W)`` -> its
    ``boxes (N, 4)`` xyxy pixels, ``scores (N,)``, ``labels (N,)`` before the task's threshold."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(list(x))[0]
        return out["boxes"], out["scores"], out["labels"]


class DetectionTask(Task):
    """Base for YOLO and the R-CNN family. Images reach the model as [0, 1] RGB tensors
    (``normalize = True`` for ImageNet normalisation; a pretrained trunk's weights set their own)
    letterboxed to ``img_size``."""

    data_tasks = ("detect",)
    default_data = "synthetic:shapes"
    key_metric = "map50"
    key_mode = "max"
    noun = "detector"
    run_with = "`cnnkit detect {source} IMAGE...`"
    normalize = False
    eval_conf = 0.001
    eval_iou = 0.6
    batch_export = False  # torchvision's detectors export one image at a time
    options = {"augment": "default"}  # training augmentation: default (jitter, flips, HSV) or flip (flips alone)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "augment" in self.options and self.option("augment") not in ("default", "flip"):
            raise CnnkitError(f"--augment {self.option('augment')}: choose default or flip")

    def default_norm(self) -> Norm:
        return IMAGENET if self.normalize else RAW

    def dataset(self, split: str) -> MappedDataset:
        flip_only = "augment" in self.options and self.option("augment") == "flip"
        return MappedDataset(self.raw_dataset(split), DetectionTransform(self.config.img_size, split == "train",
                                                                         self.input_norm(), jitter=self.jitter(),
                                                                         flip_only=flip_only))

    def jitter(self) -> float:
        """Scale jitter of training images (a factor in ``1 +- jitter``)."""
        return 0.25

    def collate(self, batch: list[Any]) -> Any:
        return collate_detections(batch)

    @staticmethod
    def batch_len(batch: Any) -> int:
        return len(batch[0])

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """The model's own loss dict (torchvision's contract), or the chosen ``--loss``."""
        if self.loss_spec is not None:
            return super().loss(model, batch, step)
        images, targets = batch
        parts = model(list(images), targets)
        return {"loss": sum(parts.values()), **parts}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        """Detections for a batch of letterboxed images, in their pixel coordinates."""
        model.eval()
        found = []
        if getattr(model, "exported", False):  # one image a graph run: (boxes, scores, labels)
            outputs = [dict(zip(("boxes", "scores", "labels"), model(image[None]))) for image in images]
        else:
            outputs = model(list(images))
        for out in outputs:
            keep = out["scores"] >= conf
            kept = batched_nms(out["boxes"][keep], out["scores"][keep], out["labels"][keep], iou)
            found.append((out["boxes"][keep][kept], out["scores"][keep][kept], out["labels"][keep][kept]))
        return found

    def export_module(self, model: nn.Module, nms: dict[str, float] | None = None) -> nn.Module:
        return FirstImage(model)

    @torch.no_grad()
    def detections(self, model: nn.Module, loader: Any, device: torch.device) -> list[Detections]:
        model.eval()
        out = []
        for images, targets in loader:
            for (boxes, scores, labels), t in zip(
                    self.predict_batch(model, images.to(device), self.eval_conf, self.eval_iou), targets):
                out.append(Detections(boxes.float().cpu().numpy(), scores.float().cpu().numpy(),
                                      labels.cpu().numpy(), t["boxes"].numpy(), t["labels"].numpy(),
                                      *(t[k].numpy() for k in ("ignore_boxes", "ignore_labels", "ignore_crowd")
                                        if k in t)))
        return out

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        return coco_map(self.detections(model, loader, device), len(self.classes or []))

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Any, device: torch.device, conf: float = 0.25,
                iou: float = 0.45, img_size: int | None = None, batch_size: int = 16,
                **_: Any) -> list[list[dict[str, Any]]]:
        """Detections for RGB uint8 images, letterboxed and run ``batch_size`` at a time."""
        size = img_size or self.config.img_size
        model.eval()
        images, found = list(images), []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            boxed = [letterbox(image, size) for image in chunk]
            x = torch.stack([to_tensor(b, self.input_norm()) for b, _ in boxed]).to(device, non_blocking=True)
            for image, (_, lb), (boxes, scores, labels) in zip(chunk, boxed, self.predict_batch(model, x, conf, iou)):
                boxes = lb.unmap(boxes.float().cpu(), image.shape[:2])
                found.append(records(boxes, scores.cpu(), labels.cpu(), list(self.classes or [])))
        return found

    def result(self, image: str, pixels: Any, prediction: Any, **_: Any) -> results.Detections:
        return results.Detections(image, prediction, pixels)

    def explain_input(self, image: np.ndarray) -> Any:
        """Letterboxed as for ``cnnkit detect``; maps and boxes are drawn on the original image."""
        import cv2

        from cnnkit.core.tasks.explaining import Prepared

        size, (h, w) = self.config.img_size, image.shape[:2]
        boxed, lb = letterbox(image, size)
        left, top = int(lb.pad[0]), int(lb.pad[1])
        nh, nw = max(1, round(h * lb.scale)), max(1, round(w * lb.scale))

        def to_view(saliency: np.ndarray) -> np.ndarray:
            return cv2.resize(saliency[top:top + nh, left:left + nw], (w, h), interpolation=cv2.INTER_LINEAR)

        return Prepared(to_tensor(boxed, self.input_norm())[None], image,
                        to_tensor(np.zeros_like(boxed), self.input_norm())[None], to_view,
                        lambda box: lb.unmap(torch.tensor([box]), (h, w))[0].tolist())

    def explain_targets(self, model: nn.Module, x: torch.Tensor, options: Any) -> list[Any]:
        """Each detection (``--conf``, ``--iou``): its score, found again on any input as the best
        score x IoU among detections of its class (a torchvision detector's proposals move with the input)."""
        from cnnkit.core.models.boxes import box_iou
        from cnnkit.core.tasks.explaining import detection_targets

        boxes, scores, labels = self.predict_batch(model, x, options.conf, options.iou)[0]

        def score(i: int) -> Any:
            box, label = boxes[i][None].float(), labels[i]

            def matched(m: nn.Module, images: torch.Tensor) -> torch.Tensor:
                found = []
                for out in m(list(images)):
                    same = out["labels"] == label
                    overlap = box_iou(out["boxes"][same].float(), box)[:, 0] * out["scores"][same]
                    found.append(overlap.max() if len(overlap) else out["scores"].sum() * 0)
                return torch.stack(found)

            return matched

        return detection_targets(list(self.classes or []), self.spec.name, boxes, scores, labels, options, score)

    def explain_layer(self, model: nn.Module, x: torch.Tensor) -> str:
        """A torchvision detector's trunk (``backbone.body``): its last map feeds every FPN level."""
        from cnnkit.core.tasks.explaining import last_feature_layer

        prefix = "backbone.body" if hasattr(model, "backbone") and hasattr(model.backbone, "body") else ""
        return last_feature_layer(model, x, prefix, forward=lambda t: model(list(t)) if prefix else model(t))

    def log_artifacts(self, model: nn.Module, val: Any, tracker: Any, device: torch.device) -> None:
        from cnnkit.core.metrics.plots import new_figure

        raw = val.base if isinstance(val, MappedDataset) else val
        samples = [raw[i] for i in range(min(4, len(raw)))]
        for i, (sample, dets) in enumerate(zip(samples, self.predict(model, [s.image for s in samples], device))):
            tracker.log_image(draw_detections(sample.image, dets), f"samples/val_{i}.png")
        loader = self.loader(val, train=False)
        curves = pr_curve(self.detections(model, loader, device), len(self.classes or []))
        fig, ax = new_figure((5, 5))
        for name, (recall, precision) in zip(self.classes or [], curves):
            ax.plot(recall, precision, label=name)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("PR curve at IoU 0.5")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend()
        tracker.log_figure(fig, "pr_curve.png")
