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

from cnnkit.core.errors import CnnkitError
from cnnkit.plugins.yolo import layers as L

Section = dict[str, str]
CFG_DIR = Path(__file__).resolve().parent / "cfg"
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1, inplace=True), "relu": lambda: nn.ReLU(inplace=True),
               "linear": None, "logistic": nn.Sigmoid}
HEADS = {"yolo": "yolov3", "region": "yolov2", "detection": "yolov1"}  # head section -> family (its loss)


def packaged_cfg(name: str) -> Path:
    """The path of a Darknet config shipped with cnnkit (``yolov2`` or ``yolov2.cfg``)."""
    path = CFG_DIR / (name if name.endswith(".cfg") else f"{name}.cfg")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CFG_DIR.glob("*.cfg")))
        raise CnnkitError(f"no packaged Darknet config '{name}' (there are: {known})")
    return path


def parse_cfg(path: str | Path) -> list[Section]:
    """The ``[section]`` blocks of a Darknet .cfg as dicts (``type`` holds the section name)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: unreadable .cfg ({exc.__class__.__name__})") from None
    sections: list[Section] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise CnnkitError(f"{path}:{number}: unclosed section header '{line}'")
            sections.append({"type": line[1:-1].strip().lower(), "line": str(number)})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise CnnkitError(f"{path}:{number}: expected '[section]' or 'key=value', got '{line}'")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise CnnkitError(f"{path}: a Darknet .cfg starts with a [net] section")
    return sections


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def _floats(value: str) -> list[float]:
    return [float(v) for v in value.split(",") if v.strip()]


def _activation(s: Section, where: str) -> nn.Module | None:
    act = s.get("activation", "logistic")
    if act not in ACTIVATIONS:
        raise CnnkitError(f"{where}: unsupported activation '{act}'")
    return ACTIVATIONS[act]() if ACTIVATIONS[act] is not None else None


def _block(*modules: nn.Module | None) -> nn.Sequential:
    return nn.Sequential(*[m for m in modules if m is not None])


def _set_classes(layers: list[Section], heads: list[int], num_classes: int, where: str) -> None:
    """Rewrite the heads (and the layers feeding them) for ``num_classes`` classes."""
    for i in heads:
        head, before = layers[i], layers[i - 1]
        head["classes"] = str(num_classes)
        if head["type"] == "yolo":
            before["filters"] = str(len(_ints(head["mask"])) * (num_classes + 5))
        elif head["type"] == "region":
            before["filters"] = str(int(head.get("num", 1)) * (num_classes + int(head.get("coords", 4)) + 1))
        else:
            side, num = int(head.get("side", 7)), int(head.get("num", 1))
            if before["type"] != "connected":
                raise CnnkitError(f"{where}: [detection] must follow a [connected] layer")
            before["output"] = str(side * side * (num * (int(head.get("coords", 4)) + 1) + num_classes))


class DarknetModel(nn.Module):
    """A network read from a .cfg. Detectors return their head maps as the family's models do
    (``[yolo]``/``[region]``: a list of ``(B, A*(5+C), H, W)`` maps, coarsest first as in the
    file; ``[detection]``: a ``(B, S, S, boxes*5+C)`` tensor); classifiers return logits
    (``[softmax]`` and ``[cost]`` are left to the loss). ``num_classes`` and ``anchors`` (Darknet's
    units: pixels for ``[yolo]``, grid cells for ``[region]``) override the file's; ``tree`` (a WordTree) that of ``[region] tree=``."""

    def __init__(self, sections: list[Section], num_classes: int | None = None, anchors: Any = None,
                 tree: Any = None, source: Path | None = None) -> None:
        super().__init__()
        net, layers = sections[0], [dict(s) for s in sections[1:]]
        self.width, self.height = int(net.get("width", 416)), int(net.get("height", 416))
        heads = [i for i, s in enumerate(layers) if s["type"] in HEADS]
        kinds = {layers[i]["type"] for i in heads}
        if len(kinds) > 1:
            raise CnnkitError(f"{source or '.cfg'}: mixes head types {sorted(kinds)}")
        self.family = HEADS[kinds.pop()] if heads else "classify"
        file_classes = int(layers[heads[0]].get("classes", 80)) if heads else 0
        if num_classes is not None and heads:
            _set_classes(layers, heads, num_classes, str(source or ".cfg"))
        self.num_classes = int(layers[heads[0]].get("classes", 80)) if heads else 0
        self.anchors: list[torch.Tensor] | None = [] if self.family != "yolov1" else None
        self.tree = tree
        self.layers = nn.ModuleList()
        channels, size = [int(net.get("channels", 3))], [self.height, self.width]
        sizes = [list(size)]  # spatial size after every layer, input first
        for i, s in enumerate(layers):
            where = f"line {s['line']} [{s['type']}]"
            module, c_out, size = self._layer(s, i, channels, sizes, size, where, anchors, source)
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
            filters, k, stride = int(s["filters"]), int(s.get("size", 1)), int(s.get("stride", 1))
            pad = k // 2 if int(s.get("pad", 0)) else int(s.get("padding", 0))
            bn = bool(int(s.get("batch_normalize", 0)))
            conv = nn.Conv2d(c_in, filters, k, stride, pad, groups=int(s.get("groups", 1)), bias=not bn)
            module = _block(conv, nn.BatchNorm2d(filters, eps=L.BN_EPS) if bn else None, _activation(s, where))
            return module, filters, [(d + 2 * pad - k) // stride + 1 for d in size]
        if kind == "maxpool":
            stride = int(s.get("stride", 1))
            k = int(s.get("size", stride))
            padding = int(s.get("padding", k - 1))
            return L.MaxPool(k, stride, padding), c_in, [(d + padding - k) // stride + 1 for d in size]
        if kind == "avgpool":
            return L.GlobalAvgPool(), c_in, [1, 1]
        if kind == "reorg":
            stride, reverse = int(s.get("stride", 1)), bool(int(s.get("reverse", 0)))
            if reverse:
                if c_in % stride ** 2:
                    raise CnnkitError(f"{where}: {c_in} channels do not split into stride² = {stride ** 2}")
                return L.Reorg(stride, True), c_in // stride ** 2, [d * stride for d in size]
            if c_in % stride ** 2 or any(d % stride for d in size):
                raise CnnkitError(f"{where}: a {c_in}x{size[0]}x{size[1]} input does not reorganise by stride {stride}")
            return L.Reorg(stride), c_in * stride ** 2, [d // stride for d in size]
        if kind == "upsample":
            stride = int(s.get("stride", 2))
            return L.Upsample(stride), c_in, [d * stride for d in size]
        if kind == "shortcut":
            return L.Shortcut(self._absolute(int(s["from"]), i, where)), c_in, size
        if kind == "route":
            sources = [self._absolute(v, i, where) for v in _ints(s["layers"])]
            if len({tuple(sizes[j + 1]) for j in sources}) > 1:
                raise CnnkitError(f"{where}: the routed layers differ in size")
            return L.Route(sources), sum(channels[j + 1] for j in sources), sizes[sources[0] + 1]
        if kind == "local":
            filters, k, stride = int(s.get("filters", 1)), int(s.get("size", 1)), int(s.get("stride", 1))
            pad = int(s.get("pad", 0))
            darknet_out = [(d - (1 if pad else k)) // stride + 1 for d in size]  # local_out_height
            local = L.LocallyConnected(c_in, filters, k, stride, pad, (size[0], size[1]))
            if list(local.out_hw) != darknet_out:
                raise CnnkitError(f"{where}: size={k} with pad={pad} is not a layout Darknet computes consistently")
            return _block(L.PoolTo(tuple(size)), local, _activation(s, where)), filters, darknet_out
        if kind == "connected":
            out, bn = int(s["output"]), bool(int(s.get("batch_normalize", 0)))
            inputs = c_in * size[0] * size[1]
            module = _block(L.PoolTo(tuple(size)), nn.Flatten(), nn.Linear(inputs, out, bias=not bn),
                            nn.BatchNorm1d(out, eps=L.BN_EPS) if bn else None, _activation(s, where))
            return module, out, [1, 1]
        if kind == "dropout":
            return nn.Dropout(float(s.get("probability", 0.5))), c_in, size
        if kind == "crop":
            h, w = int(s.get("crop_height", size[0])), int(s.get("crop_width", size[1]))
            return L.Crop(h, w, not int(s.get("noadjust", 0))), c_in, [min(h, size[0]), min(w, size[1])]
        if kind in ("softmax", "cost"):
            return nn.Identity(), c_in, size
        if kind == "yolo":
            table = torch.tensor(_floats(s["anchors"]), dtype=torch.float32, device="cpu").view(-1, 2)
            self.anchor_table = self._given(anchors, table, where)
            self.anchors.append(self.anchor_table[_ints(s["mask"])])
            return L.YoloOutput(), c_in, size
        if kind == "region":
            self._check_head(s, c_in, int(s.get("num", 1)) * (self.num_classes + 5), where)
            table = torch.tensor(_floats(s["anchors"]), dtype=torch.float32, device="cpu").view(-1, 2)
            self.anchor_table = self._given(anchors, table, where)
            self.anchors.append(self.anchor_table)
            return L.RegionOutput(), c_in, size
        if kind == "detection":
            side, num = int(s.get("side", 7)), int(s.get("num", 1))
            if int(s.get("sqrt", 0)) != 1 or int(s.get("softmax", 0)) or int(s.get("coords", 4)) != 4:
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
        if int(s.get("coords", 4)) != 4:
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
