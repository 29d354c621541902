"""What a map explains and where: a :class:`Target` (the scalar of one decision: a class logit, a
detection's score, the similarity of a pair), a :class:`Prepared` image (the model's input and the
picture the map is drawn on) and the layer a family is explained at by default. Tasks make these
(``Task.explain_input``, ``Task.explain_targets``, ``Task.explain_layer``); this module only holds
the shared pieces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from cnnkit.core.base.errors import CnnkitError

Score = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, inputs (B, 3, H, W)) -> (B,)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class Target:
    """One decision to explain: ``score(model, x)`` is its scalar for each input of a batch (what
    gradients are taken of), ``value`` its value on the image, ``name`` its class (or what it is).
    A detection has its ``box`` (xyxy, input pixels); ``layer`` names the layer it is explained at
    when the user names none (None: the task's), at that layer's input when ``layer_input``."""

    name: str
    score: Score
    value: float
    label: int | None = None
    box: list[float] | None = None
    layer: str | None = None
    layer_input: bool = False

    def caption(self) -> str:
        return f"{self.name} {self.value:.2f}"


@dataclass
class Prepared:
    """An image as the model takes it (``x``, 1x3xHxW) and as the map is drawn (``view``, RGB
    uint8), with ``to_view`` taking an input-sized map (and ``box_to_view`` a box) onto the view.
    ``baseline``: the black image prepared the same way (integrated gradients' reference)."""

    x: torch.Tensor
    view: np.ndarray
    baseline: torch.Tensor
    to_view: Callable[[np.ndarray], np.ndarray] = field(default=lambda m: m)
    box_to_view: Callable[[list[float]], list[float]] = field(default=lambda b: b)


def prepared(prepare: Callable[[np.ndarray], torch.Tensor], image: np.ndarray, norm: Any) -> Prepared:
    """An image prepared by ``prepare`` (to a normalised CHW tensor), drawn as the model sees it
    (its input with ``norm``'s mean and std undone)."""
    x = prepare(image)[None]
    mean, std = (torch.tensor(v, dtype=x.dtype).view(1, 3, 1, 1) for v in norm)
    view = (x * std + mean).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    return Prepared(x, view, prepare(np.zeros_like(image))[None])


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def module_outputs(model: nn.Module, x: torch.Tensor, forward: Callable[[torch.Tensor], Any] | None = None,
                   prefix: str = "") -> tuple[list[tuple[str, nn.Module, torch.Tensor]], Any]:
    """Every module under ``prefix`` with the tensor it returned, in the order the modules
    finished, and what the pass returned."""
    done: list[tuple[str, nn.Module, torch.Tensor | None]] = []
    hooks = []
    for name, module in model.named_modules():
        if name.startswith(prefix) and name:
            hooks.append(module.register_forward_hook(
                lambda m, args, out, name=name: done.append((name, m, _first_tensor(out)))))
    try:
        with torch.no_grad():
            result = (forward or model)(x)
    finally:
        for h in hooks:
            h.remove()
    return [(n, m, t) for n, m, t in done if t is not None], result


def last_feature_layer(model: nn.Module, x: torch.Tensor, prefix: str = "",
                       forward: Callable[[torch.Tensor], Any] | None = None) -> str:
    """The module (under ``prefix``) that returns the last feature map (4D, at least 2x2) the
    network computes before it pools: the outermost one that returns it (ResNet's ``layer4``,
    VGG's last ReLU, Inception's last mixed block)."""
    pooled: set[int] = set()
    best = ""
    for name, module, out in module_outputs(model, x, forward, prefix)[0]:
        if isinstance(module, POOLS):
            pooled.add(out.data_ptr())
            continue
        if out.dim() == 4 and min(out.shape[-2:]) >= 2 and out.data_ptr() not in pooled:
            best = name
    if not best:
        raise CnnkitError(f"{type(model).__name__} computes no feature map to explain (no 4D output of 2x2 or more)")
    return best


def producers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """For each map the model returns (a detector's heads), the convolution that computed it."""
    modules, outputs = module_outputs(model, x)
    found = {out.data_ptr(): name for name, module, out in modules if isinstance(module, nn.Conv2d)}
    names = [found.get(o.data_ptr(), "") for o in outputs]
    if not all(names):
        raise CnnkitError(f"{type(model).__name__}: cannot tell which convolution computes each head")
    return names


def class_indices(target: str | None, classes: list[str], model_name: str) -> list[int] | None:
    """``--target``: a class name or number -> [its index]; ``all`` or none -> None (every one)."""
    if target is None or target == "all":
        return None
    if target in classes:
        return [classes.index(target)]
    if target.lstrip("-").isdigit():
        index = int(target)
        if 0 <= index < len(classes):
            return [index]
        raise CnnkitError(f"--target {target}: {model_name} has {len(classes)} classes (0-{len(classes) - 1})")
    shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    raise CnnkitError(f"--target {target}: not a class of {model_name} ({shown}; or a number, or all)")


def detection_targets(classes: list[str], model_name: str, boxes: torch.Tensor, scores: torch.Tensor,
                      labels: torch.Tensor, options: Any, score: Callable[[int], Score],
                      layer: Callable[[int], tuple[str | None, bool]] = lambda i: (None, False)) -> list[Target]:
    """One target per detection (highest score first): of ``--target``'s class only, at most
    ``--top``; ``score(i)`` is detection i's scalar, ``layer(i)`` where it is explained."""
    wanted = class_indices(options.target, classes, model_name)
    order = scores.argsort(descending=True).tolist()
    order = [i for i in order if wanted is None or int(labels[i]) in wanted][: options.top or None]
    if not order:
        raise CnnkitError(f"nothing detected above --conf {options.conf}" + (
            f" of class {options.target}" if wanted else "") + ": lower --conf to explain weaker detections")
    out = []
    for i in order:
        c = int(labels[i])
        where, at_input = layer(i)
        out.append(Target(classes[c] if c < len(classes) else str(c), score(i), float(scores[i]), c,
                          [float(v) for v in boxes[i].tolist()], where, at_input))
    return out
