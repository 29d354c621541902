"""The three YOLO losses, summed over the batch's cells and divided by the batch size (as Darknet).

Each loss is called as ``loss(outputs, targets, img_size)`` with the model's raw outputs and
targets ``[{"boxes": (N, 4) xyxy pixels, "labels": (N,)}]``; it returns ``{"loss", "box", "obj",
"cls"}``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.api import CnnkitError, box_convert, checked_number, unwrap, wh_iou

Targets = Sequence[dict[str, torch.Tensor]]


def flatten_targets(targets: Targets, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image index (M,), boxes as cxcywh pixels (M, 4) and labels (M,) of every ground truth."""
    index = torch.cat([torch.full((len(t["labels"]),), i, dtype=torch.long) for i, t in enumerate(targets)])
    boxes = torch.cat([t["boxes"].float().reshape(-1, 4) for t in targets]).to(device)
    labels = torch.cat([t["labels"].long().reshape(-1) for t in targets]).to(device)
    return index.to(device), box_convert(boxes, "xyxy", "cxcywh"), labels


def grid_view(p: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """A head map ``(B, A*(5+C), H, W)`` as ``(B, A, H, W, 5+C)`` (Darknet's channel layout)."""
    b, _, h, w = p.shape
    return p.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def anchor_pixels(anchors: torch.Tensor, cells: bool, img_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Anchors in Darknet's units as input pixels: ``[yolo]`` anchors are pixels at every input
    size (``get_yolo_box``: ``biases / net.w``); ``[region]`` anchors (``cells=True``) are grid
    cells (``get_region_box``: ``biases / l.w``), so one cell is ``img_size / grid`` pixels."""
    if not cells:
        return anchors
    h, w = grid
    return anchors * torch.tensor([img_size / w, img_size / h], device=anchors.device)


def decode_anchor_boxes(p: torch.Tensor, anchors: torch.Tensor, img_size: int, cells: bool = False) -> torch.Tensor:
    """Direct location prediction: ``b_xy = (sigmoid(t_xy) + c) * stride``, ``b_wh = p_wh * e^t_wh``.
    ``p`` is a ``(B, A, H, W, 5+C)`` view, ``anchors`` ``(A, 2)`` in Darknet's units (pixels, or
    grid cells when ``cells``); returns cxcywh pixel boxes ``(B, A, H, W, 4)``."""
    _, _, h, w, _ = p.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
    stride = torch.tensor([img_size / w, img_size / h], device=p.device)
    xy = (p[..., :2].sigmoid() + torch.stack([gx, gy], -1)) * stride
    wh = p[..., 2:4].clamp(max=10).exp() * anchor_pixels(anchors.to(p.device), cells, img_size,
                                                         (h, w))[None, :, None, None]
    return torch.cat([xy, wh], -1)


def decode_v1_boxes(p: torch.Tensor, boxes: int, img_size: int) -> torch.Tensor:
    """YOLOv1 boxes ``(B, S, S, boxes, 4)`` cxcywh pixels from a ``(B, S, S, boxes*5+C)`` output:
    x, y relative to the cell, w, h as square roots of the image fraction."""
    s = p.shape[1]
    gy, gx = torch.meshgrid(torch.arange(s, device=p.device), torch.arange(s, device=p.device), indexing="ij")
    raw = p[..., : boxes * 5].reshape(*p.shape[:3], boxes, 5)
    xy = (raw[..., :2] + torch.stack([gx, gy], -1)[:, :, None]) * (img_size / s)
    wh = raw[..., 2:4].square() * img_size
    return torch.cat([xy, wh], -1)


def _cxcywh_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of matching rows of two cxcywh box sets."""
    a, b = box_convert(a, "cxcywh", "xyxy"), box_convert(b, "cxcywh", "xyxy")
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    return inter / area.clamp(min=1e-9)


def _best_iou_with_gt(pred: torch.Tensor, index: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``pred`` ``(B, ..., 4)`` cxcywh, the best IoU of each box with its image's ground truths,
    and the row of ``gt`` that gives it."""
    n = len(pred)
    counts = torch.bincount(index, minlength=n)
    if not len(gt):
        zeros = pred.new_zeros(pred.shape[:-1])
        return zeros, zeros.long()
    first = counts.cumsum(0) - counts  # each image's first row of gt
    slot = torch.arange(len(gt), device=gt.device) - first[index]
    padded = gt.new_zeros(n, int(counts.max()), 4)  # zero-size boxes overlap nothing
    padded[index, slot] = gt
    a = box_convert(pred.reshape(n, -1, 4), "cxcywh", "xyxy")[:, :, None]
    b = box_convert(padded, "cxcywh", "xyxy")[:, None]
    inter = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    union = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1) - inter
    best = (inter / union.clamp(min=1e-9)).max(2)
    values = best.values.view(pred.shape[:-1])
    return values, (best.indices + first[:, None]).view(pred.shape[:-1])


def grid_cells(gt: torch.Tensor, h: int, w: int, img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid cell (column ``gi``, row ``gj``) of an ``h`` x ``w`` output holding each cxcywh
    pixel box's centre: where YOLOv2 and v3 give a ground truth to its anchor."""
    gi = (gt[:, 0] * w / img_size).long().clamp(0, w - 1)
    gj = (gt[:, 1] * h / img_size).long().clamp(0, h - 1)
    return gi, gj


def box_error(pp: torch.Tensor, gt: torch.Tensor, gi: torch.Tensor, gj: torch.Tensor, anchors: torch.Tensor,
              h: int, w: int, img_size: int) -> torch.Tensor:
    """YOLOv2/v3's coordinate loss of the predictions ``pp`` given the truths ``gt`` (cxcywh pixels)
    in cells ``gi, gj`` with pixel ``anchors``: squared error of ``sigmoid(t_xy)`` against the centre's
    offset in its cell and of ``t_wh`` against ``log(size / anchor)``, weighted ``2 - w*h``, summed."""
    txy = torch.stack([gt[:, 0] * w / img_size - gi, gt[:, 1] * h / img_size - gj], 1)
    twh = torch.log(gt[:, 2:] / anchors).clamp(min=-10)
    scale = 2.0 - gt[:, 2] * gt[:, 3] / img_size ** 2
    return (scale[:, None] * ((pp[:, :2].sigmoid() - txy) ** 2 + (pp[:, 2:4] - twh) ** 2)).sum()


class YOLOv3Loss(nn.Module):
    """YOLOv3: each ground truth is given to the one anchor (of all scales) whose shape fits it
    best; coordinates by squared error on ``sigmoid(t_xy)`` and ``t_wh`` weighted ``2 - w*h``;
    objectness and classes by binary cross-entropy; a prediction whose best IoU with a ground
    truth exceeds ``ignore_thresh`` gets no objectness loss, and one above ``truth_thresh``
    (Darknet's ``yolo_layer.c``; 1 in its cfgs: never) is trained as a positive of that truth."""

    def __init__(self, num_classes: int, anchors: Sequence[torch.Tensor], ignore_thresh: float = 0.5,
                 truth_thresh: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.ignore_thresh, self.truth_thresh = num_classes, ignore_thresh, truth_thresh
        self.anchors = [a.float() for a in anchors]

    def forward(self, outputs: Sequence[torch.Tensor], targets: Targets, img_size: int) -> dict[str, torch.Tensor]:
        device = outputs[0].device
        index, gt, labels = flatten_targets(targets, device)
        all_anchors = torch.cat(self.anchors).to(device)  # pixels at every input size
        scale_of = torch.cat([torch.full((len(a),), i, device=device) for i, a in enumerate(self.anchors)])
        local_of = torch.cat([torch.arange(len(a), device=device) for a in self.anchors])
        best = wh_iou(gt[:, 2:], all_anchors).argmax(1) if len(gt) else torch.zeros(0, dtype=torch.long, device=device)
        zero = outputs[0].new_zeros(()).float()
        box, obj, cls = zero, zero, zero
        for s, (raw, anchors) in enumerate(zip(outputs, self.anchors)):
            p = grid_view(raw.float(), len(anchors))
            _, _, h, w, _ = p.shape
            sel = scale_of[best] == s
            b, a, g, c = index[sel], local_of[best[sel]], gt[sel], labels[sel]
            gi, gj = grid_cells(g, h, w, img_size)
            with torch.no_grad():
                pred = decode_anchor_boxes(p.detach(), anchors, img_size)
                target_obj = torch.zeros(p.shape[:4], device=device)
                best_iou, best_gt = _best_iou_with_gt(pred, index, gt)
                weight = (best_iou <= self.ignore_thresh).float()
                sure = best_iou > self.truth_thresh
                sure[b, a, gj, gi] = False  # the assigned anchor's loss is its own truth's
                if sure.any():  # positives of the truth they overlap most
                    rows = best_gt[sure]
                    b, a, gj, gi, g, c = [torch.cat(t) for t in zip(
                        (b, a, gj, gi, g, c), (*sure.nonzero(as_tuple=True), gt[rows], labels[rows]))]
                target_obj[b, a, gj, gi] = 1.0
                weight[b, a, gj, gi] = 1.0
            obj = obj + (F.binary_cross_entropy_with_logits(p[..., 4], target_obj, reduction="none") * weight).sum()
            if len(b):
                pp = p[b, a, gj, gi]
                box = box + box_error(pp, g, gi, gj, anchors.to(device)[a], h, w, img_size)
                onehot = F.one_hot(c, self.num_classes).float()
                cls = cls + F.binary_cross_entropy_with_logits(pp[:, 5:], onehot, reduction="sum")
        n = len(outputs[0])
        box, obj, cls = box / n, obj / n, cls / n
        return {"loss": box + obj + cls, "box": box, "obj": obj, "cls": cls}


CLS_OBJECTNESS = ("paper", "darknet")
CLS_BOX = ("class", "objectness")


def class_nll(logits: torch.Tensor, labels: torch.Tensor, tree: Any) -> torch.Tensor:
    """Summed softmax cross-entropy, hierarchical over ``tree`` (YOLO9000) when there is one."""
    if tree is not None:
        return tree.path_nll(logits, labels).sum()
    return F.cross_entropy(logits, labels, reduction="sum")


def classification_image_loss(p: torch.Tensor, conf: torch.Tensor, label: torch.Tensor, tree: Any, mode: str,
                              object_scale: float, noobject_scale: float,
                              pick: str = "objectness") -> tuple[torch.Tensor, torch.Tensor]:
    """YOLO9000's loss on a classification image (no boxes): the class loss only at one prediction,
    and (class, objectness) back. ``pick``: ``class`` (the paper, ``region_layer.c``) takes the
    prediction that gives ``label`` the highest probability (objectness x class); ``objectness``
    the most confident box whatever the label. With few classes and many predictions, ``class``
    can be met by position alone (each class kept high in a box of its own, so the best box for
    any label is right whatever the image shows); ``objectness`` leaves the class to be read from
    the image.

    ``p`` is the image's ``(A, H, W, 5+C)`` view, ``conf`` its objectness. Objectness, ``mode``:
    ``paper`` (the paper's text, "assuming the predicted box overlaps the label by at least .3 IOU"):
    the chosen prediction is pushed up to 0.3 and the others get no objectness loss; ``darknet``
    (``region_layer.c``): every other prediction is pushed to 0 (``noobject_scale``) and the chosen
    one gets no objectness gradient."""
    label = label.long().reshape(1)
    logits = p[..., 5:].reshape(-1, p.shape[-1] - 5)
    flat = conf.reshape(-1)
    with torch.no_grad():
        if pick == "objectness":
            log_class = logits.new_zeros(len(logits))
        elif tree is not None:
            log_class = tree.path_nll(logits, label.expand(len(logits))).neg()
        else:
            log_class = logits.log_softmax(-1)[:, label[0]]
        best = (F.logsigmoid(p[..., 4].reshape(-1)) + log_class).argmax()
    cls = class_nll(logits[best][None], label, tree)
    if mode == "darknet":
        others = torch.ones_like(flat).index_fill(0, best.reshape(1), 0.0)
        return cls, noobject_scale * (others * flat ** 2).sum()
    return cls, object_scale * F.relu(0.3 - flat[best]) ** 2


class YOLOv2Loss(nn.Module):
    """YOLOv2 (Darknet's region layer): each ground truth goes to the anchor of its cell with the
    best-fitting shape; squared error on coordinates (weight ``coord_scale * (2 - w*h)``) and on
    objectness, whose target is the IoU of the predicted box with its ground truth (1 without
    ``rescore``; weight ``object_scale``); other predictions are pushed to 0 unless their best IoU
    exceeds ``ignore_thresh``; softmax classes (weight ``class_scale``).

    With a WordTree (YOLO9000) the class loss is the cross-entropy in every sibling group from the
    label up to the root, so a label at an inner node teaches nothing below it. A target with an
    ``image_label`` (a classification image, no boxes) is scored by
    :func:`classification_image_loss` (``cls_objectness``: ``paper`` or ``darknet``; ``cls_box``:
    ``class`` or ``objectness``)."""

    def __init__(self, num_classes: int, anchors: Sequence[torch.Tensor], ignore_thresh: float = 0.6,
                 object_scale: float = 5.0, noobject_scale: float = 1.0, tree: Any = None,
                 cls_objectness: str = "paper", cls_box: str = "objectness", coord_scale: float = 1.0,
                 class_scale: float = 1.0, rescore: bool = True) -> None:
        super().__init__()
        for flag, value, choices in (("--cls-objectness", cls_objectness, CLS_OBJECTNESS),
                                     ("--cls-box", cls_box, CLS_BOX)):
            if value not in choices:
                raise CnnkitError(f"{flag} {value!r}: expected one of {', '.join(choices)}")
        self.cls_objectness, self.cls_box = cls_objectness, cls_box
        self.num_classes, self.ignore_thresh = num_classes, ignore_thresh
        self.object_scale, self.noobject_scale = object_scale, noobject_scale
        self.coord_scale, self.class_scale, self.rescore = coord_scale, class_scale, rescore
        self.anchors = torch.cat([a.float() for a in anchors])
        self.tree = tree

    def forward(self, outputs: Sequence[torch.Tensor], targets: Targets, img_size: int) -> dict[str, torch.Tensor]:
        device = outputs[0].device
        anchors = self.anchors.to(device)
        index, gt, labels = flatten_targets(targets, device)
        p = grid_view(outputs[0].float(), len(anchors))
        _, _, h, w, _ = p.shape
        pred = decode_anchor_boxes(p, anchors, img_size, cells=True)
        anchors = anchor_pixels(anchors, True, img_size, (h, w))  # grid cells -> pixels at this size
        conf = p[..., 4].sigmoid()
        classify = [i for i, t in enumerate(targets) if "image_label" in t]
        with torch.no_grad():
            noobj = (_best_iou_with_gt(pred.detach(), index, gt)[0] <= self.ignore_thresh).float()
            noobj[classify] = 0.0  # classification images: no objectness loss but the one below
        zero = p.new_zeros(())
        box, cls, pos = zero, zero, zero
        if len(gt):
            a = wh_iou(gt[:, 2:], anchors).argmax(1)
            gi, gj = grid_cells(gt, h, w, img_size)
            noobj[index, a, gj, gi] = 0.0
            pp = p[index, a, gj, gi]
            box = self.coord_scale * box_error(pp, gt, gi, gj, anchors[a], h, w, img_size)
            target = _cxcywh_iou(pred[index, a, gj, gi].detach(), gt) if self.rescore else 1.0
            pos = self.object_scale * ((conf[index, a, gj, gi] - target) ** 2).sum()
            cls = class_nll(pp[:, 5:], labels, self.tree)
        for i in classify:
            c, o = classification_image_loss(p[i], conf[i], targets[i]["image_label"].to(device), self.tree,
                                             self.cls_objectness, self.object_scale, self.noobject_scale,
                                             self.cls_box)
            cls, pos = cls + c, pos + o
        obj = pos + self.noobject_scale * (noobj * conf ** 2).sum()
        n = len(p)
        box, obj, cls = box / n, obj / n, self.class_scale * cls / n
        return {"loss": box + obj + cls, "box": box, "obj": obj, "cls": cls}


class YOLOv1Loss(nn.Module):
    """YOLOv1's sum-squared error: ``lambda_coord`` on x, y and on the square roots of w, h of the
    responsible predictor (the one of the object's cell with the highest IoU), confidence towards
    that IoU (towards 1 without ``rescore``, Darknet's ``detection_layer.c``) weighted
    ``object_scale``, ``lambda_noobj`` on the other predictors' confidence, class error in object
    cells weighted ``class_scale``."""

    def __init__(self, num_classes: int, boxes: int = 2, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
                 object_scale: float = 1.0, class_scale: float = 1.0, rescore: bool = True) -> None:
        super().__init__()
        self.num_classes, self.boxes = num_classes, boxes
        self.lambda_coord, self.lambda_noobj = lambda_coord, lambda_noobj
        self.object_scale, self.class_scale, self.rescore = object_scale, class_scale, rescore

    def forward(self, output: torch.Tensor, targets: Targets, img_size: int) -> dict[str, torch.Tensor]:
        p = output.float()
        device, s, nb = p.device, p.shape[1], self.boxes
        index, gt, labels = flatten_targets(targets, device)
        raw = p[..., : nb * 5].reshape(*p.shape[:3], nb, 5)
        conf = raw[..., 4]
        responsible = torch.zeros(conf.shape, dtype=torch.bool, device=device)
        zero = p.new_zeros(())
        box, pos, cls = zero, zero, zero
        if len(gt):
            cell = img_size / s
            gi = (gt[:, 0] / cell).long().clamp(0, s - 1)
            gj = (gt[:, 1] / cell).long().clamp(0, s - 1)
            pred = decode_v1_boxes(p, nb, img_size)[index, gj, gi]  # (M, boxes, 4)
            with torch.no_grad():
                ious = torch.stack([_cxcywh_iou(pred[:, j], gt) for j in range(nb)], 1)
            j = ious.argmax(1)
            responsible[index, gj, gi, j] = True
            r = raw[index, gj, gi, j]
            txy = torch.stack([gt[:, 0] / cell - gi, gt[:, 1] / cell - gj], 1)
            twh = (gt[:, 2:] / img_size).sqrt()
            box = self.lambda_coord * (((r[:, :2] - txy) ** 2).sum() + ((r[:, 2:4] - twh) ** 2).sum())
            target = ious.gather(1, j[:, None])[:, 0] if self.rescore else torch.ones_like(r[:, 4])
            pos = self.object_scale * ((r[:, 4] - target) ** 2).sum()
            cls = self.class_scale * self._class_error(p[..., nb * 5:], index, gj, gi, labels)
        obj = pos + self.lambda_noobj * (conf[~responsible] ** 2).sum()
        n = len(p)
        box, obj, cls = box / n, obj / n, cls / n
        return {"loss": box + obj + cls, "box": box, "obj": obj, "cls": cls}

    def _class_error(self, probs: torch.Tensor, index: torch.Tensor, gj: torch.Tensor, gi: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
        """Eq. 3's last term: once per cell that holds an object (``1_i^obj``), not once per object.
        The target is Pr(class | object) in that cell: one-hot, or the share of each class when
        several objects fall into one cell."""
        s = probs.shape[1]
        flat = (index * s + gj) * s + gi
        cells, which = flat.unique(return_inverse=True)
        target = probs.new_zeros(len(cells), self.num_classes)
        target.index_put_((which, labels), torch.ones_like(labels, dtype=target.dtype), accumulate=True)
        target = target / target.sum(1, keepdim=True)
        return ((probs.reshape(-1, self.num_classes)[cells] - target) ** 2).sum()


# ---------------------------------------------------------------- factories: build(model, task)
def setting(model: nn.Module, task: Any, name: str, head_key: str = "") -> float:
    """A loss setting: the user's ``--name``, else what the model's .cfg head sets (``head_key``,
    default ``name``: Darknet's [region] calls its ignore threshold ``thresh``), else the loss's
    registered default (its ``LossSpec.options``, the one place the defaults are written)."""
    if name in task.config.options:
        return checked_number(task.config.options[name], f"--{name.replace('_', '-')}", "a number", math.isfinite)
    return float(getattr(model, "head_settings", {}).get(head_key or name, task.options[name]))


def yolov1(model: nn.Module, task: Any) -> YOLOv1Loss:
    """Sum-squared error over the S x S grid (Redmon et al. 2016, eq. 3)."""
    core = unwrap(model)
    return YOLOv1Loss(num_classes=core.num_classes, boxes=core.boxes,
                      lambda_coord=setting(core, task, "coord_scale"),
                      lambda_noobj=setting(core, task, "noobject_scale"),
                      object_scale=setting(core, task, "object_scale"),
                      class_scale=setting(core, task, "class_scale"),
                      rescore=bool(setting(core, task, "rescore")))


def yolov2(model: nn.Module, task: Any) -> YOLOv2Loss:
    """Anchor-based loss with softmax classes (YOLOv2 / Darknet's region layer), hierarchical
    over the model's WordTree when it has one (YOLO9000); ``--cls-objectness paper|darknet``: the
    objectness on classification images (:func:`classification_image_loss`)."""
    core = unwrap(model)
    return YOLOv2Loss(num_classes=core.num_classes, anchors=core.anchors, tree=getattr(core, "tree", None),
                      ignore_thresh=setting(core, task, "ignore_thresh", "thresh"),
                      object_scale=setting(core, task, "object_scale"),
                      noobject_scale=setting(core, task, "noobject_scale"),
                      coord_scale=setting(core, task, "coord_scale"),
                      class_scale=setting(core, task, "class_scale"),
                      rescore=bool(setting(core, task, "rescore")),
                      cls_objectness=str(task.option("cls_objectness")), cls_box=str(task.option("cls_box")))


def yolov3(model: nn.Module, task: Any) -> YOLOv3Loss:
    """Three-scale loss with logistic classes; ``--ignore-thresh`` (0.5 in the paper; a .cfg's own)."""
    core = unwrap(model)
    return YOLOv3Loss(num_classes=core.num_classes, anchors=core.anchors,
                      ignore_thresh=setting(core, task, "ignore_thresh"),
                      truth_thresh=setting(core, task, "truth_thresh"))
