"""Darknet ``.cfg`` network definitions: parse them and build them as PyTorch modules.

Sections: ``[net]``, ``[convolutional]``, ``[maxpool]``, ``[avgpool]``, ``[reorg]``, ``[route]``,
``[shortcut]``, ``[upsample]``, ``[local]``, ``[connected]``, ``[dropout]``, ``[crop]``,
``[softmax]``, ``[cost]`` and the heads ``[yolo]`` (YOLOv3), ``[region]`` (YOLOv2, YOLO9000 with
``tree=``) and ``[detection]`` (YOLOv1) -- every section pjreddie/darknet's YOLO configs use.
Anchors stay in the file's (Darknet's) units at every input size: ``[yolo]`` anchors in input
pixels, ``[region]`` anchors in grid cells.
The configs ship in ``cfg/`` beside this file (:func:`packaged_cfg`); .weights files are read and
written by :mod:`cnnkit.plugins.yolo.weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.api import CnnkitError
from cnnkit.plugins.yolo import layers as L
from cnnkit.plugins.yolo.cfgfile import (
    HEADS,
    MAX_CHANNELS,
    MAX_SIDE,
    Section,
    get_anchors,
    get_float,
    get_int,
    get_ints,
    head_settings,
    net_size,
    parse_cfg,
)
from cnnkit.plugins.yolo.cfgfile import where as section_at

CFG_DIR = Path(__file__).resolve().parent / "cfg"
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1, inplace=True), "relu": lambda: nn.ReLU(inplace=True),
               "linear": None, "logistic": nn.Sigmoid}
MAX_LAYER_VALUES = 1 << 31  # weights of one layer (8 GiB of float32): a larger one is refused before allocating


def packaged_cfg(name: str) -> Path:
    """The path of a Darknet config shipped with cnnkit (``yolov2`` or ``yolov2.cfg``)."""
    path = CFG_DIR / (name if name.endswith(".cfg") else f"{name}.cfg")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CFG_DIR.glob("*.cfg")))
        raise CnnkitError(f"no packaged Darknet config '{name}' (there are: {known})")
    return path


def _activation(s: Section, where: str) -> nn.Module | None:
    act = s.get("activation", "logistic")
    if act not in ACTIVATIONS:
        raise CnnkitError(f"{where}: unsupported activation '{act}'")
    return ACTIVATIONS[act]() if ACTIVATIONS[act] is not None else None


def _block(*modules: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(*[m for m in modules if m is not None])


def _set_classes(layers: list[Section], heads: list[int], num_classes: int) -> None:
    """Rewrite the heads (and the layers feeding them) for ``num_classes`` classes."""
    for i in heads:
        head, before = layers[i], layers[i - 1]
        head["classes"] = str(num_classes)
        if head["type"] == "yolo":
            count = len(get_ints(head, "mask")) if "mask" in head else len(get_anchors(head)) // 2
            before["filters"] = str(count * (num_classes + 5))
        elif head["type"] == "region":
            before["filters"] = str(get_int(head, "num", 1, 1) * (num_classes + get_int(head, "coords", 4) + 1))
        else:
            side, num = get_int(head, "side", 7, 1, MAX_SIDE), get_int(head, "num", 1, 1, MAX_CHANNELS)
            if before["type"] != "connected":
                raise CnnkitError(f"{section_at(head)}: [detection] must follow a [connected] layer")
            before["output"] = str(side * side * (num * (get_int(head, "coords", 4) + 1) + num_classes))


def _checked(values: int, s: Section) -> None:
    """Refuse a layer whose weights would not fit in memory, before any allocation."""
    if values > MAX_LAYER_VALUES:
        raise CnnkitError(f"{section_at(s)}: {values:,} weights in one layer; sizes this large are not a network "
                          "cnnkit can build")


class DarknetModel(nn.Module):
    """A network read from a .cfg. Detectors return their head maps as the family's models do
    (``[yolo]``/``[region]``: a list of ``(B, A*(5+C), H, W)`` maps, coarsest first as in the
    file; ``[detection]``: a ``(B, S, S, boxes*5+C)`` tensor); classifiers return logits
    (``[softmax]`` and ``[cost]`` are left to the loss). ``num_classes`` and ``anchors`` (Darknet's
    units: pixels for ``[yolo]``, grid cells for ``[region]``) override the file's; ``tree`` (a
    WordTree) that of ``[region] tree=``."""

    def __init__(self, sections: list[Section], num_classes: int | None = None, anchors: Any = None,
                 tree: Any = None, source: Path | None = None) -> None:
        super().__init__()
        net, layers = sections[0], [dict(s) for s in sections[1:]]
        self.height, self.width = net_size(net)
        heads = [i for i, s in enumerate(layers) if s["type"] in HEADS]
        kinds = {layers[i]["type"] for i in heads}
        if len(kinds) > 1:
            raise CnnkitError(f"{source or '.cfg'}: mixes head types {sorted(kinds)}")
        self.family = HEADS[kinds.pop()] if heads else "classify"
        file_classes = get_int(layers[heads[0]], "classes", 20, 1) if heads else 0
        if num_classes is not None and heads:
            _set_classes(layers, heads, num_classes)
        self.num_classes = get_int(layers[heads[0]], "classes", 20, 1) if heads else 0
        # the loss settings the (first) head trains with: ignore_thresh, object_scale, ...
        self.head_settings = head_settings(layers[heads[0]]) if heads else {}
        self.anchors: list[torch.Tensor] | None = [] if self.family != "yolov1" else None
        self.tree = tree
        self.layers = nn.ModuleList()
        channels, size = [get_int(net, "channels", 3, 1, MAX_CHANNELS)], [self.height, self.width]
        sizes = [list(size)]  # spatial size after every layer, input first
        for i, s in enumerate(layers):
            module, c_out, size = self._layer(s, i, channels, sizes, size, section_at(s), anchors, source)
            if min(size) < 1 or c_out < 1:
                raise CnnkitError(f"{section_at(s)}: its output would be {c_out}x{size[0]}x{size[1]} for a "
                                  f"{self.height}x{self.width} input")
            self.layers.append(module)
            channels.append(c_out)
            sizes.append(list(size))
        self.heads = heads
        same_classes = self.num_classes == file_classes  # else the file's tree= no longer describes them
        self.tree_file = layers[heads[0]].get("tree", "") if self.family == "yolov2" and same_classes else ""
        if self.tree_file and tree is None:
            self.tree = self._region_tree(layers[heads[0]], source)

    def _layer(self, s: Section, i: int, channels: list[int], sizes: list[list[int]], size: list[int],
               where: str, anchors: Any, source: Path | None) -> tuple[nn.Module, int, list[int]]:
        kind, c_in = s["type"], channels[-1]
        if kind == "convolutional":
            filters, k = get_int(s, "filters", None, 1, MAX_CHANNELS), get_int(s, "size", 1, 1, MAX_SIDE)
            stride, groups = get_int(s, "stride", 1, 1, MAX_SIDE), get_int(s, "groups", 1, 1, MAX_CHANNELS)
            pad = k // 2 if get_int(s, "pad", 0) else get_int(s, "padding", 0, 0, MAX_SIDE)
            if c_in % groups or filters % groups:
                raise CnnkitError(f"{where}: groups={groups} does not divide {c_in} inputs and {filters} filters")
            _checked(c_in * filters * k * k // groups, s)
            bn = bool(get_int(s, "batch_normalize", 0))
            conv = nn.Conv2d(c_in, filters, k, stride, pad, groups=groups, bias=not bn)
            module = _block(conv, nn.BatchNorm2d(filters, eps=L.BN_EPS) if bn else None, _activation(s, where))
            return module, filters, [(d + 2 * pad - k) // stride + 1 for d in size]
        if kind == "maxpool":
            stride = get_int(s, "stride", 1, 1, MAX_SIDE)
            k = get_int(s, "size", stride, 1, MAX_SIDE)
            padding = get_int(s, "padding", k - 1, 0, MAX_SIDE)
            return L.MaxPool(k, stride, padding), c_in, [(d + padding - k) // stride + 1 for d in size]
        if kind == "avgpool":
            return L.GlobalAvgPool(), c_in, [1, 1]
        if kind == "reorg":
            stride, reverse = get_int(s, "stride", 1, 1, MAX_SIDE), bool(get_int(s, "reverse", 0))
            if reverse:
                if c_in % stride ** 2:
                    raise CnnkitError(f"{where}: {c_in} channels do not split into stride² = {stride ** 2}")
                return L.Reorg(stride, True), c_in // stride ** 2, [d * stride for d in size]
            if c_in % stride ** 2 or any(d % stride for d in size):
                raise CnnkitError(f"{where}: a {c_in}x{size[0]}x{size[1]} input does not reorganise by stride {stride}")
            return L.Reorg(stride), c_in * stride ** 2, [d // stride for d in size]
        if kind == "upsample":
            stride = get_int(s, "stride", 2, 1, 64)
            if max(size) * stride > MAX_SIDE:
                raise CnnkitError(f"{where}: upsampling {size[0]}x{size[1]} by {stride} exceeds {MAX_SIDE} pixels")
            return L.Upsample(stride), c_in, [d * stride for d in size]
        if kind == "shortcut":
            source_layer = self._absolute(get_int(s, "from"), i, where)
            if channels[source_layer + 1] != c_in or sizes[source_layer + 1] != size:
                raise CnnkitError(f"{where}: from={s['from']} gives {channels[source_layer + 1]}x"
                                  f"{sizes[source_layer + 1][0]}x{sizes[source_layer + 1][1]}, "
                                  f"not {c_in}x{size[0]}x{size[1]}")
            return L.Shortcut(source_layer), c_in, size
        if kind == "route":
            sources = [self._absolute(v, i, where) for v in get_ints(s, "layers")]
            if not sources or len({tuple(sizes[j + 1]) for j in sources}) > 1:
                raise CnnkitError(f"{where}: the routed layers differ in size")
            return L.Route(sources), sum(channels[j + 1] for j in sources), sizes[sources[0] + 1]
        if kind == "local":
            filters, k = get_int(s, "filters", 1, 1, MAX_CHANNELS), get_int(s, "size", 1, 1, MAX_SIDE)
            stride, pad = get_int(s, "stride", 1, 1, MAX_SIDE), get_int(s, "pad", 0, 0, 1)
            darknet_out = [(d - (1 if pad else k)) // stride + 1 for d in size]  # local_out_height
            if min(darknet_out) < 1:
                raise CnnkitError(f"{where}: size={k} does not fit a {size[0]}x{size[1]} input")
            _checked(darknet_out[0] * darknet_out[1] * filters * c_in * k * k, s)
            local = L.LocallyConnected(c_in, filters, k, stride, pad, (size[0], size[1]))
            if list(local.out_hw) != darknet_out:
                raise CnnkitError(f"{where}: size={k} with pad={pad} is not a layout Darknet computes consistently")
            return _block(L.PoolTo(tuple(size)), local, _activation(s, where)), filters, darknet_out
        if kind == "connected":
            out, bn = get_int(s, "output", None, 1, MAX_LAYER_VALUES), bool(get_int(s, "batch_normalize", 0))
            inputs = c_in * size[0] * size[1]
            _checked(inputs * out, s)
            module = _block(L.PoolTo(tuple(size)), nn.Flatten(), nn.Linear(inputs, out, bias=not bn),
                            nn.BatchNorm1d(out, eps=L.BN_EPS) if bn else None, _activation(s, where))
            return module, out, [1, 1]
        if kind == "dropout":
            return nn.Dropout(min(max(get_float(s, "probability", 0.5), 0.0), 1.0)), c_in, size
        if kind == "crop":
            h = get_int(s, "crop_height", size[0], 1, MAX_SIDE)
            w = get_int(s, "crop_width", size[1], 1, MAX_SIDE)
            return L.Crop(h, w, not get_int(s, "noadjust", 0)), c_in, [min(h, size[0]), min(w, size[1])]
        if kind in ("softmax", "cost"):
            return nn.Identity(), c_in, size
        if kind == "yolo":
            table = torch.tensor(get_anchors(s), dtype=torch.float32, device="cpu").view(-1, 2)
            mask = get_ints(s, "mask") if "mask" in s else list(range(len(table)))
            if not mask or min(mask) < 0 or max(mask) >= len(table):
                raise CnnkitError(f"{where}: mask={s.get('mask')} must pick among the {len(table)} anchors "
                                  f"(0..{len(table) - 1})")
            self._check_head(s, c_in, len(mask) * (self.num_classes + 5), where)
            self.anchor_table = self._given(anchors, table, where)
            self.anchors.append(self.anchor_table[mask])
            return L.YoloOutput(), c_in, size
        if kind == "region":
            num = get_int(s, "num", 1, 1, MAX_CHANNELS)
            self._check_head(s, c_in, num * (self.num_classes + 5), where)
            table = torch.tensor(get_anchors(s, num), dtype=torch.float32, device="cpu").view(-1, 2)
            self.anchor_table = self._given(anchors, table, where)
            self.anchors.append(self.anchor_table)
            return L.RegionOutput(), c_in, size
        if kind == "detection":
            side, num = get_int(s, "side", 7, 1, MAX_SIDE), get_int(s, "num", 1, 1, MAX_CHANNELS)
            if get_int(s, "sqrt", 0) != 1 or get_int(s, "softmax", 0) or get_int(s, "coords", 4) != 4:
                raise CnnkitError(f"{where}: only sqrt=1, softmax=0, coords=4 (YOLOv1's choices) are supported")
            if c_in != side * side * (num * 5 + self.num_classes):
                raise CnnkitError(f"{where}: the layer before gives {c_in} values, not side²·(num·5 + classes) = "
                                  f"{side * side * (num * 5 + self.num_classes)}")
            if anchors is not None:
                raise CnnkitError(f"{where}: YOLOv1 has no anchors; drop --anchors")
            self.grid, self.boxes = side, num
            return L.DetectionOutput(side, num, self.num_classes), c_in, [side, side]
        raise CnnkitError(f"{where}: unsupported section")

    @staticmethod
    def _check_head(s: Section, c_in: int, expected: int, where: str) -> None:
        if get_int(s, "coords", 4) != 4:
            raise CnnkitError(f"{where}: only coords=4 is supported")
        if c_in != expected:
            raise CnnkitError(f"{where}: the layer before gives {c_in} channels, not num·(classes + 5) = {expected}")

    @staticmethod
    def _given(anchors: Any, table: torch.Tensor, where: str) -> torch.Tensor:
        if anchors is None:
            return table
        given = torch.as_tensor(anchors, dtype=torch.float32, device="cpu").view(-1, 2)
        if len(given) != len(table):
            raise CnnkitError(f"{where}: the .cfg has {len(table)} anchors, {len(given)} were given")
        return given

    @staticmethod
    def _region_tree(region: Section, source: Path | None) -> Any:
        """The WordTree ``[region] tree=`` names, found as written (from the working directory),
        beside the .cfg, or by its file name beside the .cfg; None when it is nowhere (the network
        still builds; predicting or training then needs ``--tree``)."""
        if "tree" not in region:
            return None
        from cnnkit.plugins.yolo.wordtree import WordTree

        name = Path(region["tree"])
        base = source.parent if source is not None else Path.cwd()
        for candidate in (name, base / name, base / name.name):
            if candidate.is_file():
                return WordTree.read(candidate)
        return None

    @staticmethod
    def _absolute(index: int, current: int, where: str) -> int:
        absolute = current + index if index < 0 else index
        if not 0 <= absolute < current:
            raise CnnkitError(f"{where}: refers to layer {index}, which does not come before it")
        return absolute

    def forward(self, x: torch.Tensor) -> Any:
        outputs: list[torch.Tensor] = []
        heads = []
        for i, layer in enumerate(self.layers):
            x = L.call(layer, x, outputs)
            outputs.append(x)
            if i in self.heads:
                heads.append(x)
        if self.family == "yolov1":
            return heads[0]
        return heads if self.heads else x.flatten(1)


def head_loss(cfg: str | Path) -> str:
    """The registered loss that trains the detector a .cfg describes, chosen by its head section."""
    heads = [HEADS[s["type"]] for s in parse_cfg(cfg) if s["type"] in HEADS]
    if not heads:
        raise CnnkitError(f"{cfg}: no detection head ([yolo], [region] or [detection]) to train")
    return heads[0]


def model_from_cfg(*, cfg: str | Path | None = None, num_classes: int | None = None, anchors: Any = None,
                   tree: Any = None) -> nn.Module:
    """Build the network a Darknet .cfg describes (its classes, anchors and tree overridable)."""
    if cfg is None:
        raise CnnkitError("darknet-cfg builds from a file: pass a .cfg path as the model "
                          "(e.g. `cnnkit summary yolov3.cfg`)")
    sections = parse_cfg(cfg)
    has_head = any(s["type"] in HEADS for s in sections)
    return DarknetModel(sections, num_classes if has_head else None, anchors, tree, Path(cfg))
