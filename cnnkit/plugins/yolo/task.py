"""How the engine trains YOLO: anchors (from the model, ``--anchors`` or k-means), multi-scale
training, the family's loss, and decoding + class-wise NMS for evaluation and ``cnnkit detect``."""

from __future__ import annotations

import math
import re
import random
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.core.boxes import batched_nms, box_convert, clip_boxes
from cnnkit.core.errors import CnnkitError
from cnnkit.core.tasks.detect import DetectionTask, Prediction
from cnnkit.plugins.yolo.losses import decode_anchor_boxes, decode_v1_boxes, grid_view

MAX_DETECTIONS = 100
MAX_CANDIDATES = 3000  # highest-scoring (box, class) pairs an image keeps before NMS


def parse_anchors(value: Any, img_size: int) -> torch.Tensor:
    """``"w,h w,h ..."`` (pixels at ``img_size``; a list of pairs from a config file works too)
    -> ``(K, 2)`` fractions of the input size."""
    pairs = value if isinstance(value, (list, tuple)) else str(value).replace(";", " ").split()
    try:
        wh = [[float(v) for v in (p.split(",") if isinstance(p, str) else p)] for p in pairs]
    except ValueError:
        wh = []
    if not wh or any(len(p) != 2 or min(p) <= 0 for p in wh):
        raise CnnkitError(f"--anchors {value!r}: expected positive 'w,h' pixel pairs separated by spaces")
    return torch.tensor(wh, dtype=torch.float32) / img_size


def scale_choices(img_size: int) -> list[int]:
    """Multi-scale sizes: multiples of 32 from about 0.75x to 1.5x ``img_size`` (320..608 at 416)."""
    lo = max(32, math.ceil(0.75 * img_size / 32) * 32)
    hi = max(lo, math.floor(1.5 * img_size / 32) * 32)
    return list(range(lo, hi + 1, 32))


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class YoloTask(DetectionTask):
    """YOLOv1/v2/v3 (and Darknet .cfg detectors). ``state["anchors"]`` keeps the anchors used."""

    options = {
        "anchors": "",  # "w,h w,h ..." in pixels at --img-size, or "auto" (k-means on the training boxes)
        "multi_scale": True,  # YOLOv2/v3: a new input size every `scale_every` batches
    }
    scale_every = 10  # batches between multi-scale size changes

    def default_loss(self) -> str:
        """The model's loss; a detector read from a .cfg trains with the loss of its head."""
        if self.spec.loss:
            return self.spec.loss
        from cnnkit.plugins.yolo.darknet import head_loss

        return head_loss(self.spec.build_kwargs["cfg"]) if "cfg" in self.spec.build_kwargs else "yolov3"

    # ---------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        num_classes = len(self.classes or []) or self.spec.num_classes
        anchors = self.state.get("anchors")
        if anchors is None and self.option("anchors"):
            anchors = self._requested_anchors(num_classes)
        model = self.spec.create(num_classes=num_classes, **({} if anchors is None else {"anchors": anchors.tolist()}))
        if getattr(model, "anchors", None) is not None:  # kept sorted by area, as builders take them
            table = torch.cat(model.anchors).float()
            self.state["anchors"] = table[table.prod(1).argsort(stable=True)]
        return model

    def load_weights(self, model: nn.Module, path: str) -> int:
        """``--weights`` also takes a Darknet .weights file (for this network with its reference
        number of classes): read into that twin, then every tensor that fits is copied, so a
        COCO-trained head is skipped when fine-tuning on other classes."""
        if not re.search(r"\.weights$|\.conv\.\d+$", str(path)):  # yolov3.weights, darknet53.conv.74
            return super().load_weights(model, path)
        from cnnkit.core.checkpoint import load_weights_into
        from cnnkit.plugins.yolo.darknet import load_darknet_weights

        anchors = self.state.get("anchors")
        twin = self.spec.create(num_classes=self.spec.num_classes,
                                **({} if anchors is None else {"anchors": anchors.tolist()}))
        load_darknet_weights(twin, path)
        return load_weights_into(model, twin.state_dict(), self.spec.name, path, strict=False)

    def _requested_anchors(self, num_classes: int) -> torch.Tensor:
        with torch.device("meta"):
            probe = self.spec.create(num_classes=num_classes)
        if getattr(probe, "anchors", None) is None:
            raise CnnkitError(f"{self.spec.name} has no anchors; drop --anchors")
        k, heads = sum(len(a) for a in probe.anchors), len(probe.anchors)
        value = self.option("anchors")
        if str(value).strip().lower() == "auto":
            from cnnkit.plugins.yolo.anchors import dataset_box_sizes, kmeans_anchors

            size = self.config.img_size
            return kmeans_anchors(dataset_box_sizes(self.raw_dataset("train"), size), k)[0] / size
        anchors = parse_anchors(value, self.config.img_size)
        if len(anchors) % heads:
            raise CnnkitError(f"--anchors: {self.spec.name} has {heads} output scales, so it needs a multiple "
                              f"of {heads} anchors (got {len(anchors)})")
        return anchors[(anchors[:, 0] * anchors[:, 1]).argsort()]

    # ---------------------------------------------------------------- training
    @property
    def fixed_input_size(self) -> bool:
        """Multi-scale training changes the shape every ``scale_every`` batches, so cuDNN would
        autotune each of its ~10 sizes (and batch lengths) on first sight; the engine leaves
        autotuning off then (``bench/gpu_check.sh`` measures both)."""
        return not self.option("multi_scale")

    def train_size(self, step: int) -> int:
        """The input size for batch ``step``: a new one every ``scale_every`` batches, fixed by ``step``."""
        return random.Random(step // self.scale_every).choice(scale_choices(self.config.img_size))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        core = unwrap(model)
        size = images.shape[-1]
        if self.option("multi_scale") and core.family != "yolov1":
            new = self.train_size(step)
            if new != size:
                images = F.interpolate(images, size=(new, new), mode="bilinear", align_corners=False)
                targets = [{"boxes": t["boxes"] * (new / size), "labels": t["labels"]} for t in targets]
                size = new
        return self.criterion(model)(model(images), targets, size)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        core = unwrap(model)
        size = images.shape[-1]
        boxes, scores = decode(core, model(images), size)
        out = []
        for b, s in zip(boxes, scores):
            flat = s.flatten()
            keep = (flat > conf).nonzero()[:, 0]
            keep = keep[flat[keep].topk(min(MAX_CANDIDATES, len(keep))).indices]
            box_i, label = keep // s.shape[1], keep % s.shape[1]
            xyxy = clip_boxes(box_convert(b[box_i], "cxcywh", "xyxy"), images.shape[-2], size)
            kept = batched_nms(xyxy, flat[keep], label, iou)[:MAX_DETECTIONS]
            out.append((xyxy[kept], flat[keep][kept], label[kept]))
        return out


def decode(model: nn.Module, outputs: Any, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prediction of a batch as cxcywh pixel boxes ``(B, N, 4)`` and class scores ``(B, N, C)``
    (objectness x class probability: softmax for v2, logistic for v3, linear for v1)."""
    if model.family == "yolov1":
        p = outputs.float()
        n, nb = len(p), model.boxes
        boxes = decode_v1_boxes(p, nb, img_size).reshape(n, -1, 4)
        conf = p[..., 4: nb * 5: 5]  # (B, S, S, boxes)
        scores = (conf[..., None] * p[..., None, nb * 5:]).clamp(0, 1).reshape(n, -1, model.num_classes)
        return boxes, scores
    all_boxes, all_scores = [], []
    for raw, anchors in zip(outputs, model.anchors):
        p = grid_view(raw.float(), len(anchors))
        cls = p[..., 5:].softmax(-1) if model.family == "yolov2" else p[..., 5:].sigmoid()
        all_boxes.append(decode_anchor_boxes(p, anchors, img_size).reshape(len(p), -1, 4))
        all_scores.append((p[..., 4:5].sigmoid() * cls).reshape(len(p), -1, cls.shape[-1]))
    return torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
