"""What a network looked at: the library behind ``cnnkit explain`` (and the Python API's
``m.explain``). :func:`explain` asks the task (``Task.explain``) for its family's maps: by
default :func:`attribution_maps` (one map per target the task names: a class, a detection),
embedders a pair's (:func:`pair_maps`), stylizers their style layers' feature maps. Each
:class:`Explanation` holds the map as a numpy array and the overlay as a PIL image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.explain import METHODS, NEEDS_GRADIENTS
from cnnkit.core.explain.methods import attribute
from cnnkit.core.explain.render import colour, grid, normalised, overlay, side_by_side, stacked
from cnnkit.core.tasks.explaining import Prepared, Target

TOP_SHARE = 0.10  # the box drawn around the map's top 10 % of pixels


@dataclass
class Options:
    """What to explain: ``method``, ``target`` (a class name or number, ``all``, or None: the
    task's default), ``layer`` (None: the task's), ``top`` (classes or detections, None: the
    task's default), a detector's ``conf`` and ``iou``."""

    method: str = "gradcam"
    target: str | None = None
    layer: str | None = None
    top: int | None = None
    conf: float = 0.25
    iou: float = 0.45


@dataclass
class Explanation:
    """One map: ``map`` (H x W float32 in [0, 1] over ``view``, the picture it is drawn on),
    ``overlay`` (a PIL image), what it explains (``target``, ``score``, a detection's ``box`` and
    ``label``) and where (``method``, ``layer``); ``peak`` and ``top_box`` are the map's."""

    image: str
    method: str
    layer: str
    target: str
    score: float
    map: np.ndarray
    overlay: Image.Image
    box: list[float] | None = None
    label: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak(self) -> tuple[int, int]:
        """(x, y) of the map's maximum, in view pixels."""
        y, x = np.unravel_index(int(np.argmax(self.map)), self.map.shape)
        return int(x), int(y)

    @property
    def top_box(self) -> list[int] | None:
        """[x1, y1, x2, y2] around the pixels in the map's top 10 % (None for an empty map)."""
        return top_box(self.map)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "method": self.method, "layer": self.layer,
                               "target": self.target, "score": round(self.score, 4),
                               "peak": list(self.peak) if self.map.any() else None,  # None: an empty map
                               "box_top10": self.top_box, "size": [self.map.shape[1], self.map.shape[0]]}
        if self.box is not None:
            out["detection_box"] = [round(v, 2) for v in self.box]
            out["label"] = self.label
        return {**out, **self.extra}


def top_box(saliency: np.ndarray, share: float = TOP_SHARE) -> list[int] | None:
    """The bounding box of the pixels at or above the map's (1 - share) quantile."""
    if not saliency.any():
        return None
    ys, xs = np.nonzero(saliency >= max(np.quantile(saliency, 1 - share), 1e-12))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def check_method(task: Any, model: nn.Module, method: str) -> None:
    """``method`` is known, runs on this model, and is not refused for its family."""
    if method not in METHODS:
        raise CnnkitError(f"--method {method}: choose {', '.join(METHODS)}")
    if getattr(model, "exported", False):
        why = "no gradients" if method in NEEDS_GRADIENTS else "no layer activations"
        raise CnnkitError(f"{getattr(model, 'path', 'the model')}: an exported file has {why} for --method "
                          f"{method}; explain the checkpoint it was exported from")
    refused = task.explain_refused.get(method)
    if refused:
        raise CnnkitError(f"--method {method} is refused for {task.spec.name}: {refused}")


def find_layer(model: nn.Module, name: str, model_name: str) -> nn.Module:
    """The module ``name`` of ``model``, or one line naming some that exist."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        shown = ", ".join(convs[:3] + (["..."] if len(convs) > 4 else []) + convs[-1:])
        raise CnnkitError(f"--layer {name}: {model_name} has no such layer (its convolutions: {shown}; "
                          f"`cnnkit summary {model_name}` lists its layers)")
    return modules[name]


def _map_at(method: str, model: nn.Module, target: Target, prepared: Prepared, layer: str,
            at_input: bool) -> np.ndarray:
    """``method``'s map of ``target`` on the view's pixels."""
    forward = lambda x: target.score(model, x)  # noqa: E731 (captum takes a function of the inputs)
    module = None if method == "integrated-gradients" else model.get_submodule(layer)
    with torch.enable_grad():
        saliency = attribute(method, forward, prepared.x, module, at_input, prepared.baseline)
    return prepared.to_view(saliency.cpu().numpy().astype(np.float32))


def layer_of(task: Any, model: nn.Module, prepared: Prepared, target: Target, options: Options) -> tuple[str, bool]:
    """The layer to explain at: ``--layer``, else the target's own, else the task's default."""
    if options.method == "integrated-gradients":
        return "input", False
    if options.layer:
        find_layer(model, options.layer, task.spec.name)
        return options.layer, False
    if target.layer:
        return target.layer, target.layer_input
    return task.explain_layer(model, prepared.x), False


def plain_forward(model: nn.Module, x: torch.Tensor) -> Any:
    """The network's pass on images alone (a detector's ``summary_forward``: its head on one
    whole-image region), to read a layer's output."""
    return getattr(model, "summary_forward", model)(x)


def layer_output(model: nn.Module, x: torch.Tensor, layer: str, at_input: bool = False) -> Any:
    """What ``layer`` returns (or takes, ``at_input``) on ``x`` (None when the pass does not reach it)."""
    seen: list[Any] = []
    module = model.get_submodule(layer)
    hook = module.register_forward_hook(lambda m, args, out: seen.append(args[0] if at_input else out))
    try:
        with torch.no_grad():
            plain_forward(model, x)
    finally:
        hook.remove()
    return seen[0] if seen else None


def _check_feature_map(model: nn.Module, x: torch.Tensor, layer: str, model_name: str) -> None:
    out = layer_output(model, x, layer)
    if out is not None and not (isinstance(out, torch.Tensor) and out.dim() == 4):
        raise CnnkitError(f"--layer {layer}: its output is not a feature map (choose a convolution; "
                          f"`cnnkit summary {model_name}` lists the layers)")


def attribution_maps(task: Any, model: nn.Module, image: np.ndarray, options: Options, name: str = "image",
                     device: Any = "cpu") -> list[Explanation]:
    """One map per target the task names for ``image`` (RGB uint8): its classes, its detections."""
    check_method(task, model, options.method)
    model = model.to(device).eval()
    prepared = task.explain_input(image)
    prepared.x, prepared.baseline = prepared.x.to(device), prepared.baseline.to(device)
    targets = task.explain_targets(model, prepared.x, options)
    out = []
    for target in targets:
        layer, at_input = layer_of(task, model, prepared, target, options)
        if options.layer and options.method != "integrated-gradients":
            _check_feature_map(model, prepared.x, layer, task.spec.name)
        saliency = _map_at(options.method, model, target, prepared, layer, at_input)
        box = prepared.box_to_view(target.box) if target.box is not None else None
        explanation = Explanation(name, options.method, layer, target.name, target.value, saliency,
                                  Image.new("RGB", (1, 1)), box, target.label)
        explanation.overlay = overlay(prepared.view, saliency, f"{target.caption()} ({options.method})", box,
                                      explanation.peak, target.label or 0)
        out.append(explanation)
    return out


def pair_maps(task: Any, model: nn.Module, images: list[tuple[str, np.ndarray]], options: Options,
              device: Any = "cpu") -> list[Explanation]:
    """Embedders: for each pair of images, what makes them close. The target of each side is the
    cosine similarity of its embedding with the other's (held fixed), drawn side by side."""
    from torch.nn import functional as F

    if len(images) % 2:
        raise CnnkitError(f"{task.spec.name} is an embedder: give images in pairs (a map shows what makes two "
                          f"images close); got {len(images)}")
    check_method(task, model, options.method)
    model = model.to(device).eval()
    out = []
    for (name_a, a), (name_b, b) in zip(images[::2], images[1::2]):
        sides = [task.explain_input(a), task.explain_input(b)]
        for p in sides:
            p.x, p.baseline = p.x.to(device), p.baseline.to(device)
        with torch.no_grad():
            emb = [F.normalize(model(p.x).float(), dim=1) for p in sides]
        similarity = float((emb[0] * emb[1]).sum())
        maps, pictures = [], []
        for i, p in enumerate(sides):
            other = emb[1 - i]
            target = Target("similarity", lambda m, x, o=other: (F.normalize(m(x).float(), dim=1) * o).sum(1),
                            similarity)
            layer, at_input = layer_of(task, model, p, target, options)
            saliency = _map_at(options.method, model, target, p, layer, at_input)
            maps.append(saliency)
            peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
            pictures.append(overlay(p.view, saliency, [name_a, name_b][i].rsplit("/", 1)[-1], peak=(peak[1], peak[0])))
        picture = side_by_side(pictures, f"similarity {similarity:.3f} ({options.method}, {layer})")
        e = Explanation(name_a, options.method, layer, "similarity", similarity, maps[0], picture,
                        extra={"pair": name_b, "pair_peak": None, "pair_box_top10": top_box(maps[1])})
        py, px = np.unravel_index(int(np.argmax(maps[1])), maps[1].shape)
        e.extra["pair_peak"] = [int(px), int(py)]
        e.extra["pair_map"] = maps[1]
        out.append(e)
    return out


def _gram(features: torch.Tensor) -> torch.Tensor:
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_maps(task: Any, model: nn.Module, image: np.ndarray, name: str = "image", device: Any = "cpu") -> Explanation:
    """A stylizer's result for ``image`` and, for each style layer of its loss network, the mean
    activation map of the style image and of the result side by side, with their Gram distance
    (the style loss term: 0 when the result carries the style exactly)."""
    if getattr(model, "exported", False):
        raise CnnkitError(f"{getattr(model, 'path', 'the model')}: an exported file's loss network is not kept; "
                          "explain the checkpoint it was exported from")
    loss = task.criterion(model)
    vgg, layers = loss.vgg.to(device), list(loss.style_layers)
    style = loss.style_image.to(device)
    x = task.explain_input(image).x.to(device)
    with torch.no_grad():
        result = model.to(device).eval()(x).clamp(0, 1)
        of_style, of_result = vgg(style), vgg(result)

    def picture(t: torch.Tensor) -> Image.Image:
        return Image.fromarray((t[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))

    rows = [side_by_side([picture(style), picture(result)], "style image | result")]
    records, first = [], None
    for layer in layers:
        a, b = (f[layer][0].abs().mean(0).float().cpu().numpy() for f in (of_style, of_result))
        distance = float(((_gram(of_style[layer]) - _gram(of_result[layer])) ** 2).sum())
        tiles = [Image.fromarray(colour(normalised(m))).resize((picture(t).width, picture(t).height))
                 for m, t in ((a, style), (b, result))]
        rows.append(side_by_side(tiles, f"{layer}: mean activation, Gram distance {distance:.3g}"))
        mb = normalised(b).astype(np.float32)
        first = mb if first is None else first
        peak = np.unravel_index(int(np.argmax(mb)), mb.shape)
        records.append({"layer": layer, "gram_distance": distance, "result_peak": [int(peak[1]), int(peak[0])],
                        "map_size": [int(mb.shape[1]), int(mb.shape[0])]})
    return Explanation(name, "style-layers", ",".join(layers), "style", sum(r["gram_distance"] for r in records),
                       first, stacked(rows), extra={"layers": records})


def feature_maps(task: Any, model: nn.Module, image: np.ndarray, layer: str, name: str = "image",
                 device: Any = "cpu", limit: int = 64) -> Explanation:
    """A grid of ``layer``'s channels (the first ``limit``) for one image, each scaled to its own
    range; the caption gives the layer's shape and receptive field."""
    if getattr(model, "exported", False):
        raise CnnkitError(f"{getattr(model, 'path', 'the model')}: an exported file has no layer activations "
                          "for --feature-maps; use the checkpoint it was exported from")
    find_layer(model, layer, task.spec.name)
    model = model.to(device).eval()
    x = task.explain_input(image).x.to(device)
    out = layer_output(model, x, layer)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise CnnkitError(f"--feature-maps {layer}: its output is not a feature map (choose a convolution; "
                          f"`cnnkit summary {task.spec.name}` lists the layers)")
    maps = out[0].float().cpu().numpy()
    from cnnkit.core.models.receptive_field import receptive_fields

    field = receptive_fields(model, x, [layer], forward=lambda t: plain_forward(model, t))
    rf = field.get(layer)
    caption = f"{layer}: {maps.shape[1]}x{maps.shape[2]}x{maps.shape[0]}" + (
        f", receptive field {rf.text()}" if rf else "") + (f" (first {limit} channels)" if len(maps) > limit else "")
    tiles = [colour(normalised(m), "viridis") for m in maps[:limit]]
    energy = np.abs(maps).mean(0)
    return Explanation(name, "feature-maps", layer, "", float(energy.mean()), normalised(energy).astype(np.float32),
                       grid(tiles, caption), extra={"channels": int(maps.shape[0]),
                                                    "receptive_field": rf.as_dict() if rf else None})


def first_conv_filters(task: Any, model: nn.Module) -> Explanation:
    """The first convolution's kernels as tiles: RGB when it reads 3 channels, else their mean."""
    if getattr(model, "exported", False):
        raise CnnkitError(f"{getattr(model, 'path', 'the model')}: an exported file's weights are not read "
                          "for --filters; use the checkpoint it was exported from")
    conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise CnnkitError(f"{task.spec.name} has no convolution")
    name, module = conv
    w = module.weight.detach().float().cpu().numpy()  # (out, in, k, k)
    tiles = []
    for kernel in w:
        rgb = kernel.transpose(1, 2, 0) if kernel.shape[0] == 3 else np.repeat(kernel.mean(0)[..., None], 3, 2)
        tiles.append((normalised(rgb) * 255).round().astype(np.uint8))
    k = w.shape[-1]
    picture = grid(tiles, f"{name}: {w.shape[0]} kernels {k}x{k}x{w.shape[1]}", columns=min(16, len(tiles)),
                   tile=max(24, 4 * k))
    return Explanation(task.spec.name, "filters", name, "", 0.0, np.zeros((1, 1), np.float32), picture,
                       extra={"kernels": int(w.shape[0]), "kernel_size": [int(k), int(k)],
                              "in_channels": int(w.shape[1])})


def _attributions(task: Any, model: nn.Module, images: list[tuple[str, np.ndarray]], options: Options,
                  device: Any) -> list[Explanation]:
    return [e for name, image in images for e in attribution_maps(task, model, image, options, name, device)]


def _styles(task: Any, model: nn.Module, images: list[tuple[str, np.ndarray]], options: Options,
            device: Any) -> list[Explanation]:
    return [style_maps(task, model, image, name, device) for name, image in images]


KINDS = {"attribution": _attributions, "pairs": pair_maps, "style": _styles}  # Task.explain_kind -> its maps


def explain(task: Any, model: nn.Module, images: list[tuple[str, np.ndarray]], options: Options | None = None,
            device: Any = "cpu") -> list[Explanation]:
    """Maps for ``images`` ((name, RGB uint8) pairs), made as the task's family is shown
    (``Task.explain_kind``: attribution maps per target, pairs of images, style layers)."""
    return KINDS[task.explain_kind](task, model, images, options or Options(), device)
