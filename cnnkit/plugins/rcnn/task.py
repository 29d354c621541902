"""How the engine feeds and schedules the R-CNN family: data (selective-search proposals cached
per image, the papers' horizontal flips), which parts train when (Faster R-CNN's joint or 4-step
schedule) and evaluation's proposal recall. The networks own their sampling, losses come from the
loss registry and R-CNN's SVMs and regressors from :mod:`cnnkit.plugins.rcnn.svm`.

R-CNN and Fast R-CNN see letterboxed images without random geometry (their proposals are computed
once per image and cached by content) and get horizontal flips in ``loss``; Faster R-CNN uses the
shared detection augmentation.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.api import CnnkitError, DetectionTask, DetectionTransform, MappedDataset, Prediction, box_iou, to_pixels
from cnnkit.plugins.rcnn.matching import UNIT_CODER, Labeller, Sampler
from cnnkit.plugins.rcnn.roi_heads import per_image, postprocess, with_index
from cnnkit.plugins.rcnn.selective_search import MODES, selective_search
from cnnkit.plugins.rcnn.svm import fit_classifiers

Targets = list[dict[str, torch.Tensor]]


def recall(found: list[torch.Tensor], targets: Targets, iou: float = 0.5) -> tuple[int, int]:
    """How many ground-truth boxes some proposal covers at ``iou``, and how many there are."""
    hits = total = 0
    for boxes, t in zip(found, targets):
        gt = t["boxes"].to(boxes.device)
        total += len(gt)
        if len(gt) and len(boxes):
            hits += int((box_iou(gt, boxes).max(1).values >= iou).sum())
    return hits, total


def hflip(images: torch.Tensor, targets: Targets,
          boxes: list[torch.Tensor]) -> tuple[torch.Tensor, Targets, list[torch.Tensor]]:
    """Flip each image (and its targets and proposals) horizontally with probability 1/2."""
    width = images.shape[-1]
    flip = torch.rand(len(images)) < 0.5
    if not flip.any():
        return images, targets, boxes

    def mirror(b: torch.Tensor) -> torch.Tensor:
        return torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)

    images = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    targets = [{**t, "boxes": mirror(t["boxes"])} if f else t for t, f in zip(targets, flip.tolist())]
    boxes = [mirror(b) if f else b for b, f in zip(boxes, flip.tolist())]
    return images, targets, boxes


class RegionTask(DetectionTask):
    """The family's proposal recall at evaluation."""

    default_data = "synthetic:shapes?n=256&size=64"
    eval_iou = 0.3  # the papers' NMS threshold at test time

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Test-time region proposals for a batch (letterboxed pixels)."""
        raise NotImplementedError

    def export_module(self, model: nn.Module, nms: dict[str, float] | None = None) -> nn.Module:
        raise CnnkitError(f"{self.spec.name}: the papers' pipelines (selective search, SVMs, our RoI heads) are "
                          "not exported; export a torchvision Faster R-CNN (fasterrcnn_mobilenet_v3_large_fpn, ...)")

    def explain_targets(self, model: nn.Module, x: torch.Tensor, options: Any) -> list[Any]:
        """Each detection's box held fixed: its class probability from the RoI head on that box
        (:meth:`region_score`), wherever the input moves the proposals."""
        from cnnkit.api import detection_targets

        boxes, scores, labels = self.predict_batch(model, x, options.conf, options.iou)[0]

        def score(i: int) -> Any:
            box, label = boxes[i].float(), int(labels[i])
            return lambda m, t: self.region_score(m, t, box, label)

        return detection_targets(list(self.classes or []), self.spec.name, boxes, scores, labels, options, score)

    def region_score(self, model: nn.Module, images: torch.Tensor, box: torch.Tensor, label: int) -> torch.Tensor:
        """The head's probability of class ``label`` for ``box`` (xyxy) on each image: Fast and
        Faster R-CNN pool it from the trunk's map."""
        logits, _ = model.head(model.trunk(images), with_index([box[None]] * len(images)).to(images))
        return logits.float().softmax(1)[:, label + 1]

    def explain_layer(self, model: nn.Module, x: torch.Tensor) -> str:
        return "trunk"  # the map the RPN and the RoI head read

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        metrics = super().evaluate(model, loader, device)
        hits = total = 0
        for images, targets in loader:
            h, t = recall(self.proposals(model, images.to(device)), targets)
            hits, total = hits + h, total + t
        return {**metrics, "proposal_recall": hits / max(total, 1)}


class SelectiveSearchTask(RegionTask):
    """R-CNN and Fast R-CNN: selective search proposals, cached per image (by content)."""

    options = {"ss_mode": "fast", "max_proposals": 2000, "test_proposals": 2000}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.option("ss_mode") not in MODES:
            raise CnnkitError(f"--ss-mode {self.option('ss_mode')}: choose {' or '.join(MODES)}")
        self._cache: dict[bytes, torch.Tensor] = {}

    def dataset(self, split: str) -> MappedDataset:
        return MappedDataset(self.raw_dataset(split),
                             DetectionTransform(self.config.img_size, False, self.input_norm()))

    def search(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Selective search boxes of each image, computed once and then served from memory. Selective
        search sees the image's own pixels: the input transform (ImageNet's mean/std for a
        ``--pretrained`` trunk) is undone first."""
        out, norm = [], self.input_norm()
        for image in images:
            pixels = to_pixels(image, norm)
            key = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
            if key not in self._cache:
                self._cache[key] = torch.from_numpy(selective_search(
                    pixels, self.option("ss_mode"), int(self.option("max_proposals"))))
            out.append(self._cache[key].to(images.device))
        return out

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        return [p[: int(self.option("test_proposals"))] for p in self.search(images)]


class RCNNTask(SelectiveSearchTask):
    """R-CNN: fine-tune on warped regions ((N+1)-way, IoU >= 0.5 positives, 32 of 128 a batch),
    then in :meth:`finish` the SVMs and box regressors (:func:`fit_classifiers`). About 2000
    proposals an image at test and for the SVMs, SVM C = 0.001 on features scaled to norm 20, ridge
    lambda = 1000 (the paper's)."""

    options = {**SelectiveSearchTask.options, "rois_per_batch": 128, "fg_fraction": 0.25,
               "svm_proposals": 2000, "svm_c": 1e-3, "ridge_lambda": 1000.0}
    explain_refused = {m: "R-CNN's convolutions see each region warped to a crop, not the image, so a layer "
                          "map has no place on the photo; use --method integrated-gradients"
                       for m in ("gradcam", "gradcam++", "eigencam", "scorecam")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labeller = Labeller(0.5, 0.5)
        self.sampler = Sampler(int(self.option("rois_per_batch")), float(self.option("fg_fraction")))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        images, targets, found = hflip(images, targets, self.search(images))
        cands = [torch.cat([t["boxes"], p]) for t, p in zip(targets, found)]
        labels = torch.cat([self.labeller(c, t["boxes"], t["labels"])[0] for c, t in zip(cands, targets)])
        keep = self.sampler([labels])[0]
        rois = with_index(cands)[keep]
        cls = F.cross_entropy(model(model.warp(images, rois)).float(), labels[keep])
        return {"loss": cls, "cls": cls}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        found = self.proposals(model, images)
        pooled, fc = model.region_features(images, with_index(found).to(images.device))
        out = []
        for boxes, p, f in per_image(found, pooled.float(), fc.float()):
            if bool(model.svm_ready):
                scores = torch.sigmoid(f @ model.svm_weight.T + model.svm_bias)
                deltas = torch.einsum("rd,kdc->rkc", F.pad(p, (0, 1), value=1.0), model.reg_weight)
                per_class = UNIT_CODER.decode_single(deltas.reshape(len(boxes), -1), boxes).view(len(boxes), -1, 4)
            else:  # before the SVMs exist: the fine-tuned softmax, no box refinement
                scores = model.cls(f).float().softmax(1)[:, 1:]
                per_class = boxes[:, None].expand(-1, scores.shape[1], 4)
            out.append(postprocess(per_class, scores, images.shape[-1], conf, iou))
        return out

    def region_score(self, model: nn.Module, images: torch.Tensor, box: torch.Tensor, label: int) -> torch.Tensor:
        """The class's SVM score (a probability through the logistic) of ``box`` warped from each
        image, or the fine-tuned softmax before the SVMs exist."""
        _, fc = model.region_features(images, with_index([box[None]] * len(images)).to(images))
        if bool(model.svm_ready):
            return torch.sigmoid(fc.float() @ model.svm_weight[label] + model.svm_bias[label])
        return model.cls(fc).float().softmax(1)[:, label + 1]

    @torch.no_grad()
    def finish(self, model: nn.Module, train: Any, val_loader: Any, device: torch.device) -> bool:
        """Post-training: the SVMs and ridge regressors on the training images' proposals."""
        model.eval()
        n = int(self.option("svm_proposals"))
        batches = ((images.to(device), targets, [p[:n] for p in self.search(images.to(device))])
                   for images, targets in self.loader(train, train=False))
        fit_classifiers(model, batches, float(self.option("svm_c")), float(self.option("ridge_lambda")))
        return True


class FastRCNNTask(SelectiveSearchTask):
    """Fast R-CNN: hierarchical sampling (the batch's N images, R/N RoIs each: the head's own
    sampler), multi-task loss with normalised targets (the ``fast-rcnn`` loss)."""

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        images, targets, found = hflip(images, targets, self.search(images))
        parts = model.head.losses(model.trunk(images), found, targets, self.criterion(model).head)
        return {"loss": parts["cls"] + parts["box"], **parts}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        return model.head.detect(model.trunk(images), self.proposals(model, images), images.shape[-1], conf, iou)


class FasterRCNNTask(RegionTask):
    """Faster R-CNN, trained jointly (approximate joint training: proposals are constants) or with
    ``--schedule 4step`` (Ren et al. sec. 3.2), a quarter of the epochs a step, each step its own
    cosine learning-rate schedule from ``--lr`` (as a factor on its loss; the run-wide scheduler is
    off): 1. trunk + RPN; 2. a Fast R-CNN detector with its own, fresh trunk on step 1's proposals;
    3. the RPN's own layers on the detector's (now shared, fixed) trunk; 4. the head's own layers."""

    options = {**DetectionTask.options, "schedule": "joint"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._from_checkpoint = kwargs.get("state") is not None
        if self.option("schedule") not in ("joint", "4step"):
            raise CnnkitError(f"--schedule {self.option('schedule')}: choose joint or 4step")
        if self.option("schedule") == "4step":
            if self.config.epochs < 4:
                raise CnnkitError("--schedule 4step needs --epochs >= 4 (one quarter a step)")
            self.config.scheduler = "none"
        self._steps_per_epoch = 0

    def build_model(self) -> nn.Module:
        """The network with its anchors in pixels: ``--anchor-sizes``/``--anchor-ratios``, else the
        paper's scaled to ``--img-size / 600`` (the builder's rule). The anchors used are kept in
        ``state``, so a checkpoint rebuilds them; one written before they were kept (1/8, 1/4 and 1/2
        of its input size) gets its own back."""
        size, options = self.config.img_size, self.arch_options()
        if "anchor_sizes" in self.state:
            options.update(anchor_sizes=self.state["anchor_sizes"], anchor_ratios=self.state["anchor_ratios"])
        elif self._from_checkpoint:
            options.update(anchor_sizes=(size / 8, size / 4, size / 2), anchor_ratios=(0.5, 1.0, 2.0))
        model = self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes, img_size=size,
                                 separate_trunks=self.option("schedule") == "4step", **options)
        self.state["anchor_sizes"] = list(model.rpn.sizes)
        self.state["anchor_ratios"] = list(model.rpn.ratios)
        return model

    def dataset(self, split: str) -> MappedDataset:
        ds = super().dataset(split)
        if split == "train":
            self._steps_per_epoch = -(-len(ds) // self.config.batch_size)
        return ds

    def phase(self, step: int) -> tuple[int, float]:
        """The step of the schedule (0: joint, 1-4: alternating) and its learning-rate factor."""
        if self.option("schedule") == "joint":
            return 0, 1.0
        per_epoch = max(self._steps_per_epoch, 1)
        epoch = step // per_epoch
        phase = min(4, 1 + epoch * 4 // self.config.epochs)
        first = -(-(phase - 1) * self.config.epochs // 4)
        length = -(-phase * self.config.epochs // 4) - first if phase < 4 else self.config.epochs - first
        progress = (step - first * per_epoch) / max(length * per_epoch, 1)
        return phase, 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        phase, factor = self.phase(step)
        size, crit = images.shape[-1], self.criterion(model)
        if phase >= 3 and not self.state.get("shared_trunk"):  # steps 3-4 share the detector's convs
            convs = model.trunk.state_dict()  # the detector's trunk also holds the head's fc6/fc7 (vgg16, alexnet)
            model.trunk.load_state_dict({k: v for k, v in model.det_trunk.state_dict().items() if k in convs})
            self.state["shared_trunk"] = True
        out: dict[str, torch.Tensor] = {}
        if phase in (0, 1):
            features = model.trunk(images)
            found, out = model.rpn(features, size, targets, crit.rpn)
        else:  # the trunk is fixed (batch-norm statistics included); step 3 trains the RPN's own layers
            model.trunk.eval()
            with torch.no_grad():
                features = model.trunk(images)
            found, rpn_parts = model.rpn(features, size, targets, crit.rpn if phase == 3 else None)
            out |= rpn_parts
        if phase in (0, 2, 4):
            head_features = model.det_trunk(images) if phase == 2 else features
            out |= model.head.losses(head_features, found, targets, crit.head)
        out = {k: out.get(k, torch.zeros((), device=images.device)) for k in ("rpn_obj", "rpn_box", "cls", "box")}
        total = factor * sum(out.values())
        if not total.requires_grad:  # nothing to learn in this batch (cannot happen with a non-empty batch)
            total = total + sum(p.sum() * 0.0 for p in model.parameters())
        return {"loss": total, **out}

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        return model.propose(images)[1]

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        features, found = model.propose(images)
        return model.head.detect(features, found, images.shape[-1], conf, iou)
