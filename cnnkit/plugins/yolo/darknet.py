"""Darknet interop: read ``.cfg`` network definitions, build them as PyTorch modules, and load and
save Darknet ``.weights`` files.

Supported sections: ``[net]``, ``[convolutional]``, ``[shortcut]``, ``[route]``, ``[upsample]``,
``[maxpool]``, ``[avgpool]``, ``[connected]``, ``[dropout]``, ``[softmax]`` and ``[yolo]`` — what
yolov3.cfg, yolov3-tiny.cfg and darknet53.cfg use.

A ``.weights`` file is a header (int32 major, minor, revision; ``seen`` as int64 from version 0.2
on, int32 before) and float32 values, layer after layer: for a convolution with batch norm the
BN beta, gamma, running mean and running variance, else the conv bias; then the conv weights.
Any model whose modules are declared in Darknet's layer order (every model of this plugin) reads
and writes the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.core.errors import CnnkitError

Section = dict[str, str]
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1, inplace=True), "relu": lambda: nn.ReLU(inplace=True),
               "linear": None, "logistic": nn.Sigmoid}


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


class Shortcut(nn.Module):
    def __init__(self, source: int) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        return x + outputs[self.source]


class Route(nn.Module):
    def __init__(self, sources: list[int]) -> None:
        super().__init__()
        self.sources = sources

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([outputs[i] for i in self.sources], 1)


class MaxPool(nn.Module):
    """Darknet max pooling: ``size - 1`` padding (edge values repeat), so stride 1 keeps the size."""

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.size - 1
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), mode="replicate") if pad else x
        return F.max_pool2d(x, self.size, self.stride)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.stride), mode="nearest")


class YoloOutput(nn.Identity):
    """``[yolo]``: marks its input as a head map (the loss and decoding live in the task)."""


class DarknetModel(nn.Module):
    """A network read from a .cfg. Detectors (with ``[yolo]`` layers) return their head maps,
    coarsest first as in the file; classifiers return logits (``[softmax]`` is left to the loss).
    ``num_classes`` and ``anchors`` (fractions of the input, sorted by area) override the file's."""

    family = "yolov3"

    def __init__(self, sections: list[Section], num_classes: int | None = None, anchors: Any = None) -> None:
        super().__init__()
        net, layers = sections[0], sections[1:]
        self.width, self.height = int(net.get("width", 416)), int(net.get("height", 416))
        channels = [int(net.get("channels", 3))]  # output channels of every layer, input first
        yolo = [i for i, s in enumerate(layers) if s["type"] == "yolo"]
        if num_classes is not None:
            for i in yolo:
                layers[i]["classes"] = str(num_classes)
                layers[i - 1]["filters"] = str(len(_ints(layers[i]["mask"])) * (num_classes + 5))
        self.layers = nn.ModuleList()
        self.anchors: list[torch.Tensor] = []
        self.num_classes = num_classes or (int(layers[yolo[0]].get("classes", 80)) if yolo else 0)
        size = [self.height, self.width]
        for i, s in enumerate(layers):
            kind, c_in = s["type"], channels[-1]
            where = f"line {s['line']} [{kind}]"
            if kind == "convolutional":
                filters, k, stride = int(s["filters"]), int(s.get("size", 1)), int(s.get("stride", 1))
                pad = (k - 1) // 2 if int(s.get("pad", 0)) else int(s.get("padding", 0))
                bn = bool(int(s.get("batch_normalize", 0)))
                block = nn.Sequential()
                block.add_module("conv", nn.Conv2d(c_in, filters, k, stride, pad, groups=int(s.get("groups", 1)),
                                                   bias=not bn))
                if bn:
                    block.add_module("bn", nn.BatchNorm2d(filters))
                act = s.get("activation", "logistic")
                if act not in ACTIVATIONS:
                    raise CnnkitError(f"{where}: unsupported activation '{act}'")
                if ACTIVATIONS[act] is not None:
                    block.add_module("act", ACTIVATIONS[act]())
                module, c_out = block, filters
                size = [(d + 2 * pad - k) // stride + 1 for d in size]
            elif kind == "maxpool":
                k, stride = int(s.get("size", s.get("stride", 1))), int(s.get("stride", 1))
                module, c_out = MaxPool(k, stride), c_in
                size = [(d + k - 1 - k) // stride + 1 for d in size]
            elif kind == "avgpool":
                module, c_out, size = GlobalAvgPool(), c_in, [1, 1]
            elif kind == "upsample":
                stride = int(s.get("stride", 2))
                module, c_out, size = Upsample(stride), c_in, [d * stride for d in size]
            elif kind == "shortcut":
                source = self._absolute(int(s["from"]), i, where)
                module, c_out = Shortcut(source), c_in
            elif kind == "route":
                sources = [self._absolute(v, i, where) for v in _ints(s["layers"])]
                module, c_out = Route(sources), sum(channels[j + 1] for j in sources)
            elif kind == "connected":
                out = int(s["output"])
                act = s.get("activation", "logistic")
                layers_: list[nn.Module] = [nn.Flatten(), nn.Linear(c_in * size[0] * size[1], out)]
                if ACTIVATIONS.get(act) is not None:
                    layers_.append(ACTIVATIONS[act]())
                module, c_out, size = nn.Sequential(*layers_), out, [1, 1]
            elif kind == "dropout":
                module, c_out = nn.Dropout(float(s.get("probability", 0.5))), c_in
            elif kind == "softmax":
                module, c_out = nn.Identity(), c_in
            elif kind == "yolo":
                table = torch.tensor(_ints(s["anchors"]), dtype=torch.float32, device="cpu").view(-1, 2)
                table = table / torch.tensor([self.width, self.height], device="cpu")
                if anchors is not None:
                    given = torch.as_tensor(anchors, dtype=torch.float32, device="cpu").view(-1, 2)
                    if len(given) != len(table):
                        raise CnnkitError(f"{where}: the .cfg has {len(table)} anchors, {len(given)} were given")
                    table = given
                self.anchors.append(table[_ints(s["mask"])])
                module, c_out = YoloOutput(), c_in
            else:
                raise CnnkitError(f"{where}: unsupported section")
            self.layers.append(module)
            channels.append(c_out)
        self.yolo = yolo

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
            x = layer(x, outputs) if isinstance(layer, (Shortcut, Route)) else layer(x)
            outputs.append(x)
            if i in self.yolo:
                heads.append(x)
        return heads if self.yolo else x.flatten(1)


HEAD_LOSS = {"yolo": "yolov3", "region": "yolov2", "detection": "yolov1"}  # head section -> registered loss


def head_loss(cfg: str | Path) -> str:
    """The registered loss that trains the detector a .cfg describes, chosen by its head section."""
    heads = [HEAD_LOSS[s["type"]] for s in parse_cfg(cfg) if s["type"] in HEAD_LOSS]
    if not heads:
        raise CnnkitError(f"{cfg}: no detection head ([yolo], [region] or [detection]) to train")
    return heads[0]


def model_from_cfg(*, cfg: str | Path | None = None, num_classes: int | None = None, anchors: Any = None) -> nn.Module:
    """Build the network a Darknet .cfg describes (``[yolo]`` classes and anchors overridable)."""
    if cfg is None:
        raise CnnkitError("darknet-cfg builds from a file: pass a .cfg path as the model "
                          "(e.g. `cnnkit summary yolov3.cfg`)")
    sections = parse_cfg(cfg)
    has_yolo = any(s["type"] == "yolo" for s in sections)
    return DarknetModel(sections, num_classes if has_yolo else None, anchors)


# --------------------------------------------------------------------------- .weights
def weight_layers(model: nn.Module) -> Iterator[tuple[nn.Module, nn.BatchNorm2d | None]]:
    """Darknet's weight-carrying layers in order: each conv (or fully connected) layer with the batch
    norm that directly follows it."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    for i, m in enumerate(modules):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            yield m, nxt if isinstance(nxt, nn.BatchNorm2d) else None


def _order(layer: nn.Module, bn: nn.BatchNorm2d | None) -> list[torch.Tensor]:
    if bn is not None:
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, layer.weight]
    return [layer.bias, layer.weight]


def load_darknet_weights(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy a .weights file into ``model``; a file that stops at a layer boundary (e.g.
    darknet53.conv.74) fills the first layers. Returns (layers loaded, images seen)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CnnkitError(f"{path}: unreadable weights file ({exc.__class__.__name__})") from None
    if len(data) < 16:
        raise CnnkitError(f"{path}: too short for a Darknet .weights file")
    major, minor, _ = np.frombuffer(data[:12], dtype=np.int32)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    seen = int(np.frombuffer(data[12:20 if wide else 16], dtype=np.int64 if wide else np.int32)[0])
    body = data[20 if wide else 16:]
    if len(body) % 4:
        raise CnnkitError(f"{path}: not a Darknet .weights file (its size is not whole float32 values)")
    values = torch.from_numpy(np.frombuffer(body, dtype=np.float32).copy())
    offset, loaded = 0, 0
    with torch.no_grad():
        for layer, bn in weight_layers(model):
            if offset == len(values):
                break
            tensors = [t for t in _order(layer, bn) if t is not None]
            need = sum(t.numel() for t in tensors)
            if offset + need > len(values):
                raise CnnkitError(f"{path}: ends inside layer {loaded + 1} (needs {need} values, "
                                  f"{len(values) - offset} left); wrong .cfg?")
            for t in tensors:
                t.copy_(values[offset:offset + t.numel()].view_as(t))
                offset += t.numel()
            loaded += 1
    if offset != len(values):
        raise CnnkitError(f"{path}: holds {len(values) - offset} more values than the model takes; wrong .cfg?")
    return loaded, seen


def save_darknet_weights(model: nn.Module, path: str | Path, seen: int = 0) -> Path:
    """Write ``model`` as a Darknet .weights file (version 0.2.0, int64 ``seen``)."""
    from cnnkit.core.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.array([0, 2, 0], dtype=np.int32).tofile(f)
        np.array([seen], dtype=np.int64).tofile(f)
        for layer, bn in weight_layers(model):
            for t in _order(layer, bn):
                if t is not None:
                    t.detach().float().cpu().numpy().astype(np.float32).tofile(f)
    return path
