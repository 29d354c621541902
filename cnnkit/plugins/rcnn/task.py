"""How the engine trains and evaluates the R-CNN family.

R-CNN and Fast R-CNN see letterboxed images without random geometry (their selective-search
proposals are computed once per image and cached by content) and get the papers' horizontal
flips in ``loss``; Faster R-CNN uses the shared detection augmentation.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.core.boxes import batched_nms, box_iou, clip_boxes, decode_deltas, encode_deltas
from cnnkit.core.tasks.detect import DetectionTask, DetectionTransform, Prediction
from cnnkit.core.errors import CnnkitError
from cnnkit.core.task import MappedDataset
from cnnkit.plugins.rcnn.losses import BOX_WEIGHTS, fast_rcnn_loss, rpn_loss
from cnnkit.plugins.rcnn.rpn import label_anchors, proposals, sample_labels
from cnnkit.plugins.rcnn.sampling import label_rois, sample_rois
from cnnkit.plugins.rcnn.selective_search import MODES, selective_search

Targets = list[dict[str, torch.Tensor]]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A [0, 1] CHW tensor back to the HWC uint8 image it came from."""
    return (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, size: int, conf: float, iou: float,
                max_det: int = 100) -> Prediction:
    """Per-class boxes (R, K, 4) and scores (R, K) -> the ``max_det`` best after greedy per-class NMS."""
    r, k = scores.shape
    boxes = clip_boxes(boxes, size, size).reshape(-1, 4)
    labels = torch.arange(k, device=scores.device).expand(r, k).reshape(-1)
    scores = scores.reshape(-1)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = (scores > conf) & (wh > 1).all(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes.float(), scores.float(), labels, iou)[:max_det]
    return boxes[keep], scores[keep], labels[keep]


def recall(found: list[torch.Tensor], targets: Targets, iou: float = 0.5) -> tuple[int, int]:
    """How many ground-truth boxes some proposal covers at ``iou``, and how many there are."""
    hits = total = 0
    for boxes, t in zip(found, targets):
        gt = t["boxes"].to(boxes.device)
        total += len(gt)
        if len(gt) and len(boxes):
            hits += int((box_iou(gt, boxes).max(1).values >= iou).sum())
    return hits, total


def hflip(images: torch.Tensor, targets: Targets, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, Targets, list[torch.Tensor]]:
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
    """The family's shared options, model building and proposal recall."""

    default_data = "synthetic:shapes?n=256&size=64"
    eval_iou = 0.3  # the papers' NMS threshold at test time
    options: dict[str, Any] = {"backbone": "small"}

    def build_model(self) -> nn.Module:
        if self.option("backbone") not in ("small", "resnet18"):
            raise CnnkitError(f"--backbone {self.option('backbone')}: choose small or resnet18")
        return self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes,
                                backbone=self.option("backbone"))

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Test-time region proposals for a batch (letterboxed pixels)."""
        raise NotImplementedError

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

    options = {**RegionTask.options, "ss_mode": "fast", "max_proposals": 2000, "test_proposals": 2000}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.option("ss_mode") not in MODES:
            raise CnnkitError(f"--ss-mode {self.option('ss_mode')}: choose {' or '.join(MODES)}")
        self._cache: dict[bytes, torch.Tensor] = {}

    def dataset(self, split: str) -> MappedDataset:
        return MappedDataset(self.raw_dataset(split), DetectionTransform(self.config.img_size, False, self.normalize))

    def search(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Selective search boxes of each image, computed once and then served from memory."""
        out = []
        for image in images:
            pixels = to_uint8(image)
            key = hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()
            if key not in self._cache:
                self._cache[key] = torch.from_numpy(selective_search(
                    pixels, self.option("ss_mode"), int(self.option("max_proposals"))))
            out.append(self._cache[key].to(images.device))
        return out

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        return [p[: int(self.option("test_proposals"))] for p in self.search(images)]


def _with_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes -> (R, 5) RoIs with the batch index first (torchvision.ops layout)."""
    if not boxes:
        return torch.zeros(0, 5)
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


# ------------------------------------------------------------------------------------------ R-CNN
class RCNNTask(SelectiveSearchTask):
    """R-CNN: fine-tune on warped regions ((N+1)-way, IoU >= 0.5 positives, 32 of 128 a batch),
    then in :meth:`finish` one linear SVM a class with hard negative mining and ridge box
    regression on the pooled features."""

    options = {**SelectiveSearchTask.options, "rois_per_batch": 128, "fg_fraction": 0.25,
               "test_proposals": 500, "svm_proposals": 200, "svm_lambda": 1e-3, "ridge_lambda": 100.0}

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        images, targets, found = hflip(images, targets, self.search(images))
        cands = [torch.cat([t["boxes"], p]) for t, p in zip(targets, found)]
        labels = torch.cat([label_rois(c, t["boxes"], t["labels"], 0.5, (0.0, 0.5))[0] for c, t in zip(cands, targets)])
        keep = sample_rois(labels, int(self.option("rois_per_batch")), float(self.option("fg_fraction")))
        rois = _with_index(cands)[keep]
        cls = F.cross_entropy(model(model.warp(images, rois)).float(), labels[keep])
        return {"loss": cls, "cls": cls}

    @staticmethod
    def _features(model: nn.Module, images: torch.Tensor, rois: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [model.features(model.warp(images, rois[i:i + chunk])) for i in range(0, len(rois), chunk)]
        if not parts:
            return model.features(model.warp(images, rois))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        found = self.proposals(model, images)
        pooled, fc = self._features(model, images, _with_index(found).to(images.device))
        out, start = [], 0
        for boxes in found:
            p, f = pooled[start:start + len(boxes)].float(), fc[start:start + len(boxes)].float()
            start += len(boxes)
            if bool(model.svm_ready):
                scores = torch.sigmoid(f @ model.svm_weight.T + model.svm_bias)
                deltas = torch.einsum("rd,kdc->rkc", F.pad(p, (0, 1), value=1.0), model.reg_weight)
                per_class = decode_deltas(boxes, deltas.reshape(len(boxes), -1)).view(len(boxes), -1, 4)
            else:  # before the SVMs exist: the fine-tuned softmax, no box refinement
                scores = model.cls(f).float().softmax(1)[:, 1:]
                per_class = boxes[:, None].expand(-1, scores.shape[1], 4)
            out.append(postprocess(per_class, scores, images.shape[-1], conf, iou))
        return out

    @torch.no_grad()
    def finish(self, model: nn.Module, train: Any, val_loader: Any, device: torch.device) -> bool:
        """Post-training: per-class SVMs (GT positives, IoU < 0.3 negatives, hard negative mining)
        on fc features and class-specific ridge regression (IoU >= 0.6) on pooled features."""
        model.eval()
        k = model.num_classes
        fcs, best_iou, best_cls, reg_x, reg_t, reg_c = [], [], [], [], [], []
        loader = self.loader(train, train=False)
        for images, targets in loader:
            images = images.to(device)
            found = [p[: int(self.option("svm_proposals"))] for p in self.search(images)]
            cands = [torch.cat([t["boxes"].to(device), p]) for t, p in zip(targets, found)]
            pooled, fc = self._features(model, images, _with_index(cands).to(device))
            start = 0
            for c, t in zip(cands, targets):
                gt, gl = t["boxes"].to(device), t["labels"].to(device)
                p, f = pooled[start:start + len(c)], fc[start:start + len(c)]
                start += len(c)
                # per class: the best IoU of each candidate with that class's boxes (-1 for GT rows)
                iou = torch.zeros(len(c), k, device=device)
                if len(gt):
                    overlaps = box_iou(c, gt)
                    for j in range(k):
                        if (gl == j).any():
                            iou[:, j] = overlaps[:, gl == j].max(1).values
                    best, match = overlaps.max(1)
                    sel = best >= 0.6
                    reg_x.append(p[sel].float().cpu())
                    reg_t.append(encode_deltas(c[sel], gt[match[sel]]).cpu())
                    reg_c.append(gl[match[sel]].cpu())
                is_gt = torch.zeros(len(c), dtype=torch.long, device=device)
                is_gt[: len(gt)] = gl + 1
                fcs.append(f.float().cpu())
                best_iou.append(iou.cpu())
                best_cls.append(is_gt.cpu())
        fc_all, iou_all, gt_cls = torch.cat(fcs), torch.cat(best_iou), torch.cat(best_cls)
        weight, bias = torch.zeros(k, fc_all.shape[1]), torch.zeros(k)
        for j in range(k):
            pos = fc_all[gt_cls == j + 1]
            neg = fc_all[(gt_cls == 0) & (iou_all[:, j] < 0.3)]
            if len(pos) and len(neg):
                weight[j], bias[j] = train_svm(pos, neg, float(self.option("svm_lambda")))
        reg = torch.zeros_like(model.reg_weight).cpu()
        if reg_x:
            x, t, cls = torch.cat(reg_x), torch.cat(reg_t), torch.cat(reg_c)
            for j in range(k):
                if (cls == j).any():
                    reg[j] = ridge(x[cls == j], t[cls == j], float(self.option("ridge_lambda")))
        model.svm_weight.copy_(weight)
        model.svm_bias.copy_(bias)
        model.reg_weight.copy_(reg)
        model.svm_ready.fill_(True)
        return True


def train_svm(pos: torch.Tensor, neg: torch.Tensor, lam: float, rounds: int = 4,
              pos_weight: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear L2-SVM (squared hinge, as liblinear's default) with hard negative mining: start from
    a random set of negatives, then add every negative inside the margin (score > -1), retrain."""
    gen = torch.Generator().manual_seed(0)
    active = torch.randperm(len(neg), generator=gen)[: max(4 * len(pos), 1000)]
    w, b = torch.zeros(pos.shape[1]), torch.zeros(())
    for _ in range(rounds):
        w, b = _fit_l2svm(pos, neg[active], lam, pos_weight, w, b)
        hard = torch.nonzero(neg @ w + b > -1.0).flatten()
        new = hard[~torch.isin(hard, active)]
        if len(new) == 0:
            break
        active = torch.cat([active, new])
    return w, b


def _fit_l2svm(pos: torch.Tensor, neg: torch.Tensor, lam: float, pos_weight: float,
               w0: torch.Tensor, b0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), -torch.ones(len(neg))])
    c = torch.where(y > 0, pos_weight, 1.0)
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        margin = (1 - y * (x @ w + b)).clamp(min=0)
        loss = (c * margin ** 2).sum() / len(x) + 0.5 * lam * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def ridge(x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression with a bias column: (D + 1, 4) weights minimising |[x 1] W - t|^2 + lam |W|^2."""
    xb = F.pad(x.double(), (0, 1), value=1.0)
    reg = lam * torch.eye(xb.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0  # the bias is not shrunk
    return torch.linalg.solve(xb.T @ xb + reg, xb.T @ t.double()).float()


# ------------------------------------------------------------------------------------ Fast R-CNN
class FastRCNNTask(SelectiveSearchTask):
    """Fast R-CNN: hierarchical sampling (the batch's N images, R/N RoIs each, 25% foreground with
    IoU >= 0.5, background IoU in [0.1, 0.5)), multi-task loss with normalised targets."""

    options = {**SelectiveSearchTask.options, "rois_per_image": 64, "fg_fraction": 0.25, "bg_iou_lo": 0.1,
               "box_weight": 1.0}

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        images, targets, found = hflip(images, targets, self.search(images))
        rois, labels, gts = [], [], []
        for i, (t, p) in enumerate(zip(targets, found)):
            cand = torch.cat([t["boxes"], p])
            lab, gt, _ = label_rois(cand, t["boxes"], t["labels"], 0.5, (float(self.option("bg_iou_lo")), 0.5))
            keep = sample_rois(lab, int(self.option("rois_per_image")), float(self.option("fg_fraction")))
            rois.append(cand[keep])
            labels.append(lab[keep])
            gts.append(gt[keep])
        roi_t = _with_index(rois)
        cls_logits, box_deltas = model(images, roi_t)
        parts = fast_rcnn_loss(cls_logits, box_deltas, torch.cat(labels), roi_t[:, 1:], torch.cat(gts),
                               float(self.option("box_weight")))
        return {"loss": parts["cls"] + parts["box"], **parts}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        found = self.proposals(model, images)
        return head_detections(model.head, model.trunk(images), found, images.shape[-1], conf, iou)


def head_detections(head: nn.Module, features: torch.Tensor, found: list[torch.Tensor], size: int,
                    conf: float, iou: float) -> list[Prediction]:
    """Softmax scores and class-specific refined boxes for each image's proposals, then NMS."""
    cls_logits, box_deltas = head(features, _with_index(found).to(features.device))
    out, start = [], 0
    for boxes in found:
        n = len(boxes)
        scores = cls_logits[start:start + n].float().softmax(1)[:, 1:]
        deltas = box_deltas[start:start + n].float()
        start += n
        per_class = decode_deltas(boxes, deltas, BOX_WEIGHTS).view(n, -1, 4)
        out.append(postprocess(per_class, scores, size, conf, iou))
    return out


# ---------------------------------------------------------------------------------- Faster R-CNN
class FasterRCNNTask(RegionTask):
    """Faster R-CNN: RPN (256 anchors an image 1:1, IoU > 0.7 or best anchor positive, < 0.3
    negative; NMS 0.7, top-N) + the Fast R-CNN head, trained jointly (approximate joint training:
    proposals are constants) or with ``--schedule 4step``: RPN; detector on the step-1 RPN's
    proposals; RPN-only layers on the now-fixed shared convs; head-only layers. The four steps
    split the epochs in quarters."""

    options = {**RegionTask.options, "schedule": "joint", "rpn_batch": 256, "rpn_pre_nms": 1000,
               "rpn_post_nms": 300, "rpn_test_pre_nms": 600, "rpn_test_post_nms": 100, "rpn_nms": 0.7,
               "rois_per_image": 64, "fg_fraction": 0.25}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.option("schedule") not in ("joint", "4step"):
            raise CnnkitError(f"--schedule {self.option('schedule')}: choose joint or 4step")
        if self.option("schedule") == "4step" and self.config.epochs < 4:
            raise CnnkitError("--schedule 4step needs --epochs >= 4 (one quarter a step)")
        self._steps_per_epoch = 0
        self._step1: nn.Module | None = None

    def build_model(self) -> nn.Module:
        """Anchors of 1/8, 1/4 and 1/2 the input size (the paper's 128-512 at ~600 px) x 3 ratios."""
        if self.option("backbone") not in ("small", "resnet18"):
            raise CnnkitError(f"--backbone {self.option('backbone')}: choose small or resnet18")
        size = self.config.img_size
        return self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes,
                                backbone=self.option("backbone"), anchor_sizes=(size / 8, size / 4, size / 2))

    def dataset(self, split: str) -> MappedDataset:
        ds = super().dataset(split)
        if split == "train":
            self._steps_per_epoch = -(-len(ds) // self.config.batch_size)
        return ds

    def phase(self, step: int) -> int:
        """0 for joint training; 1-4 for the alternating schedule's step."""
        if self.option("schedule") == "joint":
            return 0
        epoch = step // max(self._steps_per_epoch, 1)
        return min(4, 1 + epoch * 4 // self.config.epochs)

    def _rpn_proposals(self, anchors: torch.Tensor, logits: torch.Tensor, deltas: torch.Tensor, size: int,
                       train: bool) -> list[torch.Tensor]:
        pre, post = ("rpn_pre_nms", "rpn_post_nms") if train else ("rpn_test_pre_nms", "rpn_test_post_nms")
        return proposals(anchors, logits.detach(), deltas.detach(), size, int(self.option(pre)),
                         int(self.option(post)), float(self.option("rpn_nms")))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        phase = self.phase(step)
        size = images.shape[-1]
        if phase != 2:
            self._step1 = None
        if phase in (3, 4):  # shared convs fixed (batch-norm statistics included)
            model.trunk.eval()
            with torch.no_grad():
                features = model.trunk(images)
        else:
            features = model.trunk(images)
        out: dict[str, torch.Tensor] = {}
        logits, deltas = model.rpn(features)
        anchors = model.rpn.anchors(features)
        if phase in (0, 1, 3):
            labels, matched = [], []
            for t in targets:
                lab, match = label_anchors(anchors, t["boxes"])
                labels.append(sample_labels(lab, int(self.option("rpn_batch")), 0.5))
                matched.append(t["boxes"][match] if len(t["boxes"]) else torch.zeros_like(anchors))
            out |= rpn_loss(logits.reshape(-1, 2), deltas.reshape(-1, 4), torch.cat(labels),
                            anchors.repeat(len(targets), 1), torch.cat(matched))
        if phase in (0, 2, 4):
            if phase == 2:  # proposals from the RPN as step 1 left it
                if self._step1 is None:
                    self._step1 = copy.deepcopy(model).eval()
                with torch.no_grad():
                    _, logits_p, deltas_p = self._step1(images)
            else:
                logits_p, deltas_p = logits, deltas
            found = self._rpn_proposals(anchors, logits_p, deltas_p, size, train=True)
            rois, labels, gts = [], [], []
            for t, p in zip(targets, found):
                cand = torch.cat([t["boxes"], p])
                lab, gt, _ = label_rois(cand, t["boxes"], t["labels"], 0.5, (0.0, 0.5))
                keep = sample_rois(lab, int(self.option("rois_per_image")), float(self.option("fg_fraction")))
                rois.append(cand[keep])
                labels.append(lab[keep])
                gts.append(gt[keep])
            roi_t = _with_index(rois)
            cls_logits, box_deltas = model.head(features, roi_t)
            out |= fast_rcnn_loss(cls_logits, box_deltas, torch.cat(labels), roi_t[:, 1:], torch.cat(gts))
        out = {k: out.get(k, torch.zeros((), device=images.device)) for k in ("rpn_obj", "rpn_box", "cls", "box")}
        total = sum(out.values())
        if not total.requires_grad:  # nothing to learn in this batch (cannot happen with a non-empty batch)
            total = total + sum(p.sum() * 0.0 for p in model.parameters())
        return {"loss": total, **out}

    def proposals(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        features, logits, deltas = model(images)
        return self._rpn_proposals(model.rpn.anchors(features), logits, deltas, images.shape[-1], train=False)

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        features, logits, deltas = model(images)
        found = self._rpn_proposals(model.rpn.anchors(features), logits, deltas, images.shape[-1], train=False)
        return head_detections(model.head, features, found, images.shape[-1], conf, iou)


# ------------------------------------------------------------------------- torchvision production
class TorchvisionTask(DetectionTask):
    """torchvision's Faster R-CNNs (FPN): the model computes its own losses and post-processing."""

    default_data = "synthetic:shapes?n=256&size=64"
    eval_iou = 0.5
    options = {"pretrained": False}
    keys = {"loss_objectness": "rpn_obj", "loss_rpn_box_reg": "rpn_box", "loss_classifier": "cls",
            "loss_box_reg": "box"}

    def build_model(self) -> nn.Module:
        from cnnkit.plugins.rcnn.models import load_cached_weights

        model = self.spec.create(num_classes=len(self.classes or []) or self.spec.num_classes,
                                 img_size=self.config.img_size)
        if self.option("pretrained"):
            load_cached_weights(model, self.spec.build_kwargs["arch"])
        return model

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        parts = {self.keys[k]: v for k, v in model(list(images), targets).items()}
        return {"loss": sum(parts.values()), **parts}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        model.eval()
        model.roi_heads.score_thresh, model.roi_heads.nms_thresh = conf, iou
        return [(o["boxes"], o["scores"], o["labels"] - 1) for o in model(list(images))]
