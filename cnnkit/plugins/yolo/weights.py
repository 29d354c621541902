"""Darknet ``.weights`` files: read them into a model and write a model as one.

A file is a header (int32 major, minor, revision; ``seen`` as int64 from version 0.2 on, int32
before) and float32 values, layer after layer, in Darknet's order (``load_weights_upto``):

- ``[convolutional]``: biases (the batch norm's beta when it has one), then with batch norm the
  scales, rolling means and rolling variances, then the weights;
- ``[connected]``: biases, weights (``outputs x inputs``; ``inputs x outputs`` in files whose
  major or minor version exceeds 1000), then with batch norm scales, means and variances;
- ``[local]``: biases (``filters x out_h x out_w``), weights (``locations x filters x c*k*k``).

Any model whose modules are declared in Darknet's layer order (every model of this plugin, and
every network built from a .cfg) reads and writes the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from cnnkit.api import CnnkitError
from cnnkit.plugins.yolo.layers import LocallyConnected

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def weight_layers(model: nn.Module) -> Iterator[tuple[nn.Module, nn.Module | None]]:
    """Darknet's weight-carrying layers in order: each conv, fully connected or locally connected
    layer with the batch norm that directly follows it."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, LocallyConnected, *_BN))]
    for i, m in enumerate(modules):
        if not isinstance(m, _BN):
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            yield m, nxt if isinstance(nxt, _BN) and not isinstance(m, LocallyConnected) else None


def layer_tensors(layer: nn.Module, bn: nn.Module | None) -> list[torch.Tensor]:
    """One layer's tensors in the order its values appear in a .weights file."""
    if bn is None:
        return [t for t in (layer.bias, layer.weight) if t is not None]
    stats = [bn.weight, bn.running_mean, bn.running_var]
    if isinstance(layer, nn.Linear):
        return [bn.bias, layer.weight, *stats]
    return [bn.bias, *stats, layer.weight]


def load_darknet_weights(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy a .weights file into ``model``; a file that stops at a layer boundary (e.g.
    darknet53.conv.74) fills the first layers. Returns (layers loaded, images seen)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CnnkitError(f"{path}: unreadable weights file ({exc.__class__.__name__})") from None
    if len(data) < 16:
        raise CnnkitError(f"{path}: too short for a Darknet .weights file ({len(data)} bytes)")
    major, minor, _ = (int(v) for v in np.frombuffer(data[:12], dtype=np.int32))
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    if wide and len(data) < 20:
        raise CnnkitError(f"{path}: too short for a Darknet .weights file ({len(data)} bytes; "
                          f"a version {major}.{minor} header alone takes 20)")
    transpose = major > 1000 or minor > 1000
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
            tensors = layer_tensors(layer, bn)
            need = sum(t.numel() for t in tensors)
            if offset + need > len(values):
                raise CnnkitError(f"{path}: ends inside layer {loaded + 1} (needs {need} values, "
                                  f"{len(values) - offset} left); wrong .cfg?")
            for t in tensors:
                chunk = values[offset:offset + t.numel()]
                if transpose and t is layer.weight and isinstance(layer, nn.Linear):
                    t.copy_(chunk.view(t.shape[1], t.shape[0]).t())
                else:
                    t.copy_(chunk.view_as(t))
                offset += t.numel()
            loaded += 1
    if offset != len(values):
        raise CnnkitError(f"{path}: holds {len(values) - offset} more values than the model takes; wrong .cfg?")
    return loaded, seen


def save_darknet_weights(model: nn.Module, path: str | Path, seen: int = 0) -> Path:
    """Write ``model`` as a Darknet .weights file (version 0.2.0, int64 ``seen``)."""
    from cnnkit.api import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.array([0, 2, 0], dtype=np.int32).tofile(f)
        np.array([seen], dtype=np.int64).tofile(f)
        for layer, bn in weight_layers(model):
            for t in layer_tensors(layer, bn):
                t.detach().float().cpu().numpy().astype(np.float32).tofile(f)
    return path
