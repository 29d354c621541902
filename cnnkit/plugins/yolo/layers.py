"""Darknet's layers that PyTorch has no exact twin for: ``[reorg]``, ``[local]``, ``[maxpool]``
(padding), ``[crop]``, the routing layers, and the output layers ``[yolo]``, ``[region]`` and
``[detection]``. Each follows pjreddie/darknet's C code, so .weights files and outputs match."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Darknet normalises by sqrt(variance) + .000001f; OpenCV's Darknet reader by sqrt(variance + 1e-6).
# torch's default eps (1e-5) is ten times that: with published weights' small variances the boxes part.
BN_EPS = 1e-6


class Reorg(nn.Module):
    """Darknet's ``[reorg]`` exactly as ``forward_reorg_layer`` calls ``reorg_cpu``: with the
    *input's* w, h, c and ``forward=0``, so the ``(C, H, W)`` buffer is read as if it were
    ``(C/s², H*s, W*s)`` and written as ``(C, H, W)`` (then seen as ``(C*s², H/s, W/s)``).
    This is not a plain space-to-depth (``F.pixel_unshuffle``), and Darknet's yolov2.weights
    were trained through it. ``reverse=True`` (``forward=1``) gives ``(C/s², H*s, W*s)``."""

    moves_positions = True  # output row j reads input rows s²j .. s²j+s²-1 modulo H: no receptive field window

    def __init__(self, stride: int = 2, reverse: bool = False) -> None:
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.stride
        if self.reverse:  # out[c2, j*s + dy, i*s + dx] = x[(dy*s + dx) * c/s² + c2, j, i]
            y = x.reshape(b, s, s, c // s ** 2, h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(b, c // s ** 2, h * s, w * s)
        # out(c, h, w)[off * c/s² + c2, j, i] = x as (c/s², h*s, w*s)[c2, j*s + off // s, i*s + off % s]
        v = x.reshape(b, c // s ** 2, h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return v.reshape(b, c * s * s, h // s, w // s)


class LocallyConnected(nn.Module):
    """Darknet's ``[local]`` (YOLOv1): a convolution with its own filters at every output location.
    ``weight`` is ``(locations, filters, c*k*k)`` and ``bias`` ``(filters, out_h, out_w)``, the
    order of Darknet's buffers (and of .weights files)."""

    def __init__(self, c_in: int, filters: int, size: int, stride: int, pad: int, in_hw: tuple[int, int]) -> None:
        super().__init__()
        self.size, self.stride, self.pad = size, stride, pad
        self.out_hw = tuple((d + 2 * pad - size) // stride + 1 for d in in_hw)
        locations = self.out_hw[0] * self.out_hw[1]
        self.weight = nn.Parameter(torch.empty(locations, filters, c_in * size * size))
        self.bias = nn.Parameter(torch.zeros(filters, *self.out_hw))
        if self.weight.device.type != "meta":
            nn.init.uniform_(self.weight, -(2 / (size * size * c_in)) ** 0.5, (2 / (size * size * c_in)) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.size, padding=self.pad, stride=self.stride)  # (B, c*k*k, locations)
        out = torch.einsum("bkl,lnk->bnl", cols, self.weight)
        return out.view(len(x), -1, *self.out_hw) + self.bias


class MaxPool(nn.Module):
    """Darknet max pooling: ``padding`` (default ``size - 1``) split as Darknet's ``-pad/2``
    offset does; padded cells never win (edge values repeat into them)."""

    def __init__(self, size: int, stride: int, padding: int | None = None) -> None:
        super().__init__()
        self.size, self.stride = size, stride
        self.padding = size - 1 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = self.padding // 2
        hi = max(0, self.padding - lo)
        x = F.pad(x, (lo, hi, lo, hi), mode="replicate") if self.padding else x
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


class Crop(nn.Module):
    """Darknet's ``[crop]`` at test time: the centre ``crop_height x crop_width``, values mapped
    from [0, 1] to [-1, 1] (``noadjust=1`` keeps them)."""

    def __init__(self, height: int, width: int, adjust: bool = True) -> None:
        super().__init__()
        self.height, self.width, self.adjust = height, width, adjust

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = min(self.height, x.shape[-2]), min(self.width, x.shape[-1])
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        x = x[..., top:top + h, left:left + w]
        return x * 2 - 1 if self.adjust else x


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


class PoolTo(nn.Module):
    """Average-pools a map to the size a ``[connected]`` or ``[local]`` layer was planned for, so a
    network with such layers also runs at other input sizes (identity at the .cfg's size)."""

    def __init__(self, hw: tuple[int, int]) -> None:
        super().__init__()
        self.hw = tuple(hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() != 4 or tuple(x.shape[-2:]) == self.hw else F.adaptive_avg_pool2d(x, self.hw)


class YoloOutput(nn.Identity):
    """``[yolo]``: marks its input as a head map (the loss and decoding live in the task)."""


class RegionOutput(nn.Identity):
    """``[region]`` (YOLOv2): marks its input as the head map; the anchors, the softmax (flat or
    over a WordTree) and the loss live in the model's attributes and the task."""


class DetectionOutput(nn.Module):
    """``[detection]`` (YOLOv1): Darknet's flat output -- all cells' class scores, then all
    cells' box confidences, then all boxes -- as a ``(B, S, S, boxes*5 + C)`` map with each
    cell's boxes ``(x, y, w, h, confidence)`` first, then its classes."""

    def __init__(self, side: int, boxes: int, num_classes: int) -> None:
        super().__init__()
        self.side, self.boxes, self.num_classes = side, boxes, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, n, c = len(x), self.side, self.boxes, self.num_classes
        x = x.reshape(b, -1)
        cells = s * s
        cls = x[:, :cells * c].view(b, s, s, c)
        conf = x[:, cells * c:cells * (c + n)].view(b, s, s, n, 1)
        box = x[:, cells * (c + n):].view(b, s, s, n, 4)
        return torch.cat([torch.cat([box, conf], -1).flatten(3), cls], -1)

    def extra_repr(self) -> str:
        return f"side={self.side}, boxes={self.boxes}, classes={self.num_classes}"


def call(layer: nn.Module, x: Any, outputs: list[torch.Tensor]) -> Any:
    """Run one Darknet layer (routing layers also read earlier outputs)."""
    return layer(x, outputs) if isinstance(layer, (Shortcut, Route)) else layer(x)
