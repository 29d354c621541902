"""How the engine trains YOLO: anchors (from the model, ``--anchors`` or k-means), multi-scale
training, the family's loss, and decoding + class-wise NMS for evaluation and ``cnnkit detect``.

YOLO9000 (``--tree TREE``, any YOLOv2-family model): the classes are the WordTree's nodes, the
data's class names are matched to them by name, the class loss is hierarchical, and predictions
name the deepest node whose probability stays above ``--tree-thresh``. ``--cls-data CLS`` mixes a
classification set into the training batches (joint training, :mod:`cnnkit.plugins.yolo.joint`)."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.api import (
    CnnkitError,
    DetectionTask,
    Prediction,
    batched_nms,
    box_convert,
    checked_number,
    clip_boxes,
    unwrap,
)
from cnnkit.plugins.yolo.losses import decode_anchor_boxes, decode_v1_boxes, grid_view

MAX_DETECTIONS = 100
MAX_CANDIDATES = 3000  # highest-scoring (box, class) pairs an image keeps before NMS
ANCHOR_UNITS = "darknet"  # state["anchor_units"]: anchors kept as Darknet keeps them (not input fractions)


def parse_anchors(value: Any) -> torch.Tensor:
    """``"w,h w,h ..."`` (input pixels; a list of pairs from a config file works too) -> ``(K, 2)``."""
    pairs = value if isinstance(value, (list, tuple)) else str(value).replace(";", " ").split()
    try:
        wh = [[float(v) for v in (p.split(",") if isinstance(p, str) else p)] for p in pairs]
    except ValueError:
        wh = []
    if not wh or any(len(p) != 2 or min(p) <= 0 for p in wh):
        raise CnnkitError(f"--anchors {value!r}: expected positive 'w,h' pixel pairs separated by spaces")
    return torch.tensor(wh, dtype=torch.float32, device="cpu")


def scale_choices(img_size: int) -> list[int]:
    """Multi-scale sizes: multiples of 32 from about 0.75x to 1.5x ``img_size`` (320..608 at 416)."""
    lo = max(32, math.ceil(0.75 * img_size / 32) * 32)
    hi = max(lo, math.floor(1.5 * img_size / 32) * 32)
    return list(range(lo, hi + 1, 32))



class YoloTask(DetectionTask):
    """YOLOv1/v2/v3 (and Darknet .cfg detectors). ``state["anchors"]`` keeps the anchors used, in
    Darknet's units (``state["anchor_units"] == "darknet"``: ``[yolo]`` pixels, ``[region]`` grid
    cells); a checkpoint from before kept fractions of its ``--img-size`` and is converted."""

    options = {
        "anchors": "",  # "w,h w,h ..." in input pixels, or "auto" (k-means on the training boxes at --img-size)
        # YOLOv2/v3: a new input size every `scale_every` batches (None: a .cfg's random=, else on)
        "multi_scale": None,
        "tree": "",  # YOLO9000: a WordTree file (Darknet's `name parent_index` lines); the classes are its nodes
        "cls_data": "",  # YOLO9000 joint training: a classification set mixed into the batches (needs --tree)
        "tree_thresh": 0.5,  # predictions descend the tree while the probability stays above this
        "cls_ratio": 0.0,  # classification images an epoch per detection image (0: each once; the paper: 4)
        "cls_zoom": 0.4,  # classification images shrunk by a random factor in [cls_zoom, 1] (1: not)
        "jitter": None,  # scale jitter of training images, 1 +- jitter (None: a .cfg head's jitter=, else 0.25)
    }
    # bench/explain.py (yolov3-tiny on synthetic:shapes?n=512, 15 epochs, 48 val images): trained vs re-initialised
    # maps' Spearman rho 0.53 for eigencam >= RANK_BOUND 0.5; gradcam 0.11, gradcam++ 0.26, scorecam 0.49
    explain_refused = {
        "eigencam": "it fails the model-randomisation check on YOLO (class-agnostic, it follows the image, not the "
                    "weights: Spearman 0.53 >= 0.5); use gradcam",
    }
    scale_every = 10  # batches between multi-scale size changes
    batch_export = True
    export_nms = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tree: Any = None
        self._cfg_random: bool | None = None
        if "cfg" in self.spec.build_kwargs:
            from cnnkit.plugins.yolo.cfgfile import describe

            self._cfg_random = bool(describe(self.spec.build_kwargs["cfg"])["multi_scale"])
        if self.option("cls_data") and not (self.option("tree") or self.state.get("tree")):
            raise CnnkitError("--cls-data needs --tree: classification labels are matched to the tree's nodes")

    # ---------------------------------------------------------------- WordTree
    @property
    def tree(self) -> Any:
        """The WordTree this run uses (from the checkpoint, ``--tree``, or a .cfg's ``tree=``), or None."""
        if self._tree is None and (self.state.get("tree") or self.option("tree")):
            from cnnkit.plugins.yolo.wordtree import WordTree

            stored = self.state.get("tree")
            self._tree = WordTree(**stored) if stored else WordTree.read(self.option("tree"))
            self._keep_tree(self._tree)
        return self._tree

    def _keep_tree(self, tree: Any) -> None:
        self._tree = tree
        self.state["tree"] = {"names": list(tree.names), "parents": list(tree.parents), "labels": list(tree.labels)}
        self.classes = list(tree.labels)

    def raw_dataset(self, split: str) -> Any:
        if self.tree is None:
            return super().raw_dataset(split)
        from cnnkit.api import open_dataset
        from cnnkit.plugins.yolo.joint import on_tree

        ds = open_dataset(self.data_spec, split, self.data_tasks, val=self.config.val,
                          val_fraction=self.config.val_fraction, seed=self.config.seed)
        return on_tree(ds, self.tree, f"--data {self.data_spec}")

    def dataset(self, split: str) -> Any:
        detections = super().dataset(split)
        if split != "train" or not self.option("cls_data"):
            return detections
        from cnnkit.plugins.yolo.joint import joint_dataset

        return joint_dataset(detections, str(self.option("cls_data")), self.tree, self.config.img_size,
                             self.option("cls_ratio"), self.option("cls_zoom"))

    @property
    def multi_scale(self) -> bool:
        """``--multi-scale``, else a .cfg's ``random=`` (Darknet's ``train_detector``: ``random=0`` or none
        keeps one size), else on."""
        value = self.option("multi_scale")
        if value is None:
            value = self._cfg_random
        return True if value is None else bool(value)

    def jitter(self) -> float:
        """``--jitter``, else the jitter= of a .cfg's head (Darknet's crop jitter), else 0.25."""
        value = self.option("jitter")
        if value is None and "cfg" in self.spec.build_kwargs:
            from cnnkit.plugins.yolo.cfgfile import describe

            value = describe(self.spec.build_kwargs["cfg"])["settings"].get("jitter")
        if value is None:
            return super().jitter()
        return checked_number(value, "--jitter", "a fraction in [0, 1)", lambda j: 0 <= j < 1)

    def default_loss(self) -> str:
        """The model's loss; a detector read from a .cfg trains with the loss of its head."""
        if self.spec.loss:
            return self.spec.loss
        from cnnkit.plugins.yolo.darknet import head_loss

        return head_loss(self.spec.build_kwargs["cfg"]) if "cfg" in self.spec.build_kwargs else "yolov3"

    # ---------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        tree = self.tree
        num_classes = len(tree) if tree is not None else len(self.classes or []) or self.spec.num_classes
        anchors = self.state.get("anchors")
        if anchors is not None and self.state.get("anchor_units") != ANCHOR_UNITS:  # fractions of img_size
            anchors = self._darknet_units(torch.as_tensor(anchors, device="cpu").float() * self.config.img_size,
                                          num_classes)
        if anchors is None and self.option("anchors"):
            anchors = self._requested_anchors(num_classes)
        kwargs: dict[str, Any] = {} if anchors is None else {"anchors": anchors.tolist()}
        try:
            model = self.spec.create(num_classes=num_classes, **kwargs, **({} if tree is None else {"tree": tree}))
        except TypeError:
            raise CnnkitError(f"{self.spec.name}: --tree needs a YOLOv2-family model (one softmax head: "
                              "yolov2, yolov2-tiny, yolo9000, a .cfg with [region])") from None
        if tree is not None and getattr(model, "family", "") != "yolov2":
            raise CnnkitError(f"{self.spec.name}: --tree needs a YOLOv2-family model ([region] head)")
        if getattr(model, "tree_file", "") and getattr(model, "tree", None) is None:
            raise CnnkitError(f"{self.spec.name}: its [region] tree={model.tree_file} was not found; pass --tree PATH")
        if tree is None and getattr(model, "tree", None) is not None:  # a .cfg's own tree= (yolo9000.cfg)
            self._keep_tree(model.tree)
        if getattr(model, "tree", None) is not None:
            zero_class_logits(model)
        if getattr(model, "anchors", None) is not None:  # kept in the order the builder takes them:
            table = getattr(model, "anchor_table", None)  # a .cfg's own order (yolov2-tiny-voc's is not by area),
            if table is None:  # the hand-written models' order: by area
                table = torch.cat(model.anchors).float()
                table = table[table.prod(1).argsort(stable=True)]
            self.state["anchors"] = table.float().clone()
            self.state["anchor_units"] = ANCHOR_UNITS
        return model

    def load_weights(self, model: nn.Module, path: str) -> int:
        """``--weights`` also takes a Darknet .weights file (for this network with its reference
        number of classes): read into that twin, then every tensor that fits is copied, so a
        COCO-trained head is skipped when fine-tuning on other classes."""
        if not re.search(r"\.weights$|\.conv\.\d+$", str(path)):  # yolov3.weights, darknet53.conv.74
            return super().load_weights(model, path)
        from pathlib import Path

        from cnnkit.api import load_weights_into
        from cnnkit.plugins.yolo.weights import load_darknet_weights, weight_layers

        anchors = self.state.get("anchors")
        twin = self.spec.create(num_classes=self.spec.num_classes,
                                **({} if anchors is None else {"anchors": anchors.tolist()}))
        layers, _ = load_darknet_weights(twin, path)
        loaded = load_weights_into(model, twin.state_dict(), self.spec.name, path, strict=False)
        if layers < sum(1 for _ in weight_layers(twin)):  # a backbone's file (darknet53.conv.74)
            loaded.summary = f"backbone {layers} convs from {Path(path).name}; heads initialised"
        return loaded

    def _probe(self, num_classes: int) -> nn.Module:
        with torch.device("meta"):
            return self.spec.create(num_classes=num_classes)

    def _darknet_units(self, pixels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Anchors given in input pixels, in the model's units: pixels for ``[yolo]`` heads, grid
        cells of the ``[region]`` head (its stride at ``--img-size``) for YOLOv2."""
        probe = self._probe(num_classes)
        if getattr(probe, "family", "") != "yolov2":
            return pixels
        size = self.config.img_size
        with torch.no_grad():
            grid = probe(torch.empty(1, 3, size, size, device="meta"))[0].shape[-1]
        return pixels / (size / grid)

    def _requested_anchors(self, num_classes: int) -> torch.Tensor:
        probe = self._probe(num_classes)
        if getattr(probe, "anchors", None) is None:
            raise CnnkitError(f"{self.spec.name} has no anchors; drop --anchors")
        k, heads = sum(len(a) for a in probe.anchors), len(probe.anchors)
        value = self.option("anchors")
        if str(value).strip().lower() == "auto":
            from cnnkit.plugins.yolo.anchors import dataset_box_sizes, kmeans_anchors

            pixels = kmeans_anchors(dataset_box_sizes(self.raw_dataset("train"), self.config.img_size), k)[0]
            return self._darknet_units(pixels, num_classes)
        anchors = parse_anchors(value)
        if len(anchors) % heads:
            raise CnnkitError(f"--anchors: {self.spec.name} has {heads} output scales, so it needs a multiple "
                              f"of {heads} anchors (got {len(anchors)})")
        return self._darknet_units(anchors[(anchors[:, 0] * anchors[:, 1]).argsort()], num_classes)

    # ---------------------------------------------------------------- training
    @property
    def fixed_input_size(self) -> bool:
        """Multi-scale training changes the shape every ``scale_every`` batches, so cuDNN would
        autotune each of its ~10 sizes (and batch lengths) on first sight; the engine leaves
        autotuning off then (``bench/gpu_check.sh`` measures both)."""
        return not self.multi_scale

    def train_size(self, step: int) -> int:
        """The input size for batch ``step``: a new one every ``scale_every`` batches, fixed by ``step``."""
        return random.Random(step // self.scale_every).choice(scale_choices(self.config.img_size))

    def loss(self, model: nn.Module, batch: Any, step: int) -> dict[str, torch.Tensor]:
        images, targets = batch
        core = unwrap(model)
        size = images.shape[-1]
        if self.multi_scale and core.family != "yolov1":
            new = self.train_size(step)
            if new != size:
                images = F.interpolate(images, size=(new, new), mode="bilinear", align_corners=False)
                targets = [{**t, "boxes": t["boxes"] * (new / size)} for t in targets]
                size = new
        return self.criterion(model)(model(images), targets, size)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def detections(self, model: nn.Module, loader: Any, device: torch.device) -> list[Any]:
        """With a WordTree, a prediction counts at the level the data labels: a box predicted
        ``ring`` matches a ground truth labelled ``shape`` (its ancestor) when the data's classes
        include ``shape`` but not ``ring``."""
        found = super().detections(model, loader, device)
        base = getattr(loader.dataset, "base", None)
        if self.tree is None or not hasattr(base, "nodes"):
            return found
        from cnnkit.plugins.yolo.joint import label_levels

        level = label_levels(self.tree, base.nodes)
        for d in found:
            d.labels = level[d.labels]
        return found

    def kept(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, conf: float) -> Prediction:
        """An NMS graph's detections at ``conf`` (its own threshold is the floor)."""
        keep = scores >= conf
        return boxes[keep], scores[keep], labels[keep]

    def export_module(self, model: nn.Module, nms: dict[str, float] | None = None) -> nn.Module:
        decoded = Decoded(unwrap(model), float(self.option("tree_thresh")))
        return decoded if nms is None else WithNMS(decoded, **nms)

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[Prediction]:
        size = images.shape[-1]
        graph = self.inference(model)
        if getattr(model, "nms", None):  # an export with NMS inside: one image a run
            return [self.kept(*graph(image[None]), conf) for image in images]
        boxes, scores = graph(images)
        out = []
        for b, s in zip(boxes, scores):
            _, label, xyxy, score = final_detections(b, s, conf, iou, images.shape[-2], size, MAX_CANDIDATES)
            out.append((xyxy, score, label))
        return out


    def explain_targets(self, model: nn.Module, x: torch.Tensor, options: Any) -> list[Any]:
        """Each detection (``--conf``, ``--iou``) is one prediction of the decoded graph: its cell,
        anchor and class, so its score (objectness x class probability) is found at the same place
        on any input. It is explained at the input of the convolution that predicts its scale."""
        from cnnkit.api import detection_targets, producers

        core = unwrap(model)
        graph = Decoded(core, float(self.option("tree_thresh")))
        with torch.no_grad():
            boxes, scores = graph(x)
        index, label, xyxy, score = final_detections(boxes[0], scores[0], options.conf, options.iou, x.shape[-2],
                                                     x.shape[-1], MAX_CANDIDATES)
        heads = producers(core, x) if core.family != "yolov1" else []
        with torch.no_grad():  # predictions per head: heads[h] holds a contiguous block of the decoded ones
            sizes = [len(a) * o.shape[-2] * o.shape[-1] for a, o in zip(core.anchors, core(x))] if heads else []
        ends = torch.tensor(sizes).cumsum(0) if sizes else None

        def target_score(i: int) -> Any:
            n, c = int(index[i]), int(label[i])
            return lambda m, t: Decoded(unwrap(m), graph.tree_thresh)(t)[1][:, n, c]

        def layer(i: int) -> tuple[str | None, bool]:
            if not heads:
                return None, False
            return heads[int((ends <= int(index[i])).sum())], True

        return detection_targets(list(self.classes or []), self.spec.name, xyxy, score, label, options,
                                 target_score, layer)


def final_detections(boxes: torch.Tensor, scores: torch.Tensor, conf: float, iou: float, height: int, width: int,
                     candidates: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's decoded predictions (xyxy ``boxes (N, 4)``, class ``scores (N, C)``) made final:
    every (prediction, class) pair above ``conf`` (the ``candidates`` best of them when given: an
    exported graph takes them all), boxes clipped to the image, class-wise NMS at ``iou``, at most
    :data:`MAX_DETECTIONS`. Returns the kept predictions' indices, labels, boxes and scores."""
    flat = scores.flatten()
    keep = (flat > conf).nonzero()[:, 0]
    if candidates is not None:
        keep = keep[flat[keep].topk(min(candidates, len(keep))).indices]
    index, label = keep // scores.shape[1], keep % scores.shape[1]
    xyxy = clip_boxes(boxes[index], height, width)
    kept = batched_nms(xyxy, flat[keep], label, iou)[:MAX_DETECTIONS]
    return index[kept], label[kept], xyxy[kept], flat[keep][kept]


class Decoded(nn.Module):
    """YOLO's inference graph: images -> every prediction's xyxy pixel box ``(B, N, 4)`` and class
    scores ``(B, N, C)``, before the score threshold and NMS (what ``cnnkit export`` writes)."""

    def __init__(self, model: nn.Module, tree_thresh: float = 0.5) -> None:
        super().__init__()
        self.model, self.tree_thresh = model, tree_thresh

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, scores = decode(self.model, self.model(x), x.shape[-1], self.tree_thresh)
        return box_convert(boxes, "cxcywh", "xyxy"), scores


class WithNMS(nn.Module):
    """``cnnkit export --nms``: one image -> its final xyxy ``boxes (K, 4)``, ``scores (K,)`` and
    ``labels (K,)``: every (box, class) pair above ``conf``, class-wise NMS at ``iou``, at most
    :data:`MAX_DETECTIONS` (ONNX NonMaxSuppression)."""

    def __init__(self, decoded: Decoded, conf: float = 0.25, iou: float = 0.45) -> None:
        super().__init__()
        self.decoded, self.conf, self.iou = decoded, conf, iou

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores = self.decoded(x)
        _, label, xyxy, score = final_detections(boxes[0], scores[0], self.conf, self.iou, x.shape[-2], x.shape[-1])
        return xyxy, score, label


def zero_class_logits(model: nn.Module) -> None:
    """Zero the class rows of a WordTree model's output conv, so every sibling group starts uniform.
    A group that no label reaches (the hyponyms of a coarse detection label, without --cls-data)
    gets no gradient and stays uniform: its node is never more likely than its parent, and the
    prediction stops at the parent instead of descending to a random child."""
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]
    num_anchors = sum(len(a) for a in model.anchors)
    with torch.no_grad():
        conv.weight.view(num_anchors, -1, *conv.weight.shape[1:])[:, 5:].zero_()
        if conv.bias is not None:
            conv.bias.view(num_anchors, -1)[:, 5:].zero_()


def decode(model: nn.Module, outputs: Any, img_size: int,
           tree_thresh: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Every prediction of a batch as cxcywh pixel boxes ``(B, N, 4)`` and class scores ``(B, N, C)``
    (objectness x class probability: softmax for v2, logistic for v3, linear for v1; with a
    WordTree only the deepest node above ``tree_thresh`` scores, by its probability)."""
    if model.family == "yolov1":
        p = outputs.float()
        n, nb = p.shape[0], model.boxes  # shape[0], not len(): a traced export keeps the batch free
        boxes = decode_v1_boxes(p, nb, img_size).reshape(n, -1, 4)
        conf = p[..., 4: nb * 5: 5]  # (B, S, S, boxes)
        scores = (conf[..., None] * p[..., None, nb * 5:]).clamp(0, 1).reshape(n, -1, model.num_classes)
        return boxes, scores
    all_boxes, all_scores = [], []
    for raw, anchors in zip(outputs, model.anchors):
        p = grid_view(raw.float(), len(anchors))
        tree = getattr(model, "tree", None)
        if tree is not None:
            logits = p[..., 5:].reshape(-1, p.shape[-1] - 5)
            node, prob = tree.descend(logits, tree_thresh)
            cls = torch.zeros_like(logits).scatter_(1, node[:, None], prob[:, None]).view(*p.shape[:-1], -1)
        elif model.family == "yolov2":
            cls = p[..., 5:].softmax(-1)
        else:
            cls = p[..., 5:].sigmoid()
        boxes = decode_anchor_boxes(p, anchors, img_size, cells=model.family == "yolov2")
        all_boxes.append(boxes.reshape(p.shape[0], -1, 4))
        all_scores.append((p[..., 4:5].sigmoid() * cls).reshape(p.shape[0], -1, cls.shape[-1]))
    return torch.cat(all_boxes, 1), torch.cat(all_scores, 1)
