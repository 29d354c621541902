"""Model size: parameter counts and a paper-style layer table (output sizes, parameters, multiply-adds).

Everything is built and run on the meta device, so no memory or time is spent on weights.

Counting conventions (those of the papers' tables):

- parameters: those the network uses at inference; auxiliary classifiers (child modules named
  ``aux*``, which exist only for the training loss) are reported apart as ``aux_params``;
- multiply-adds (MACs): torch's own ``FlopCounterMode`` FLOPs / 2, i.e. the multiply-adds of
  convolutions and fully connected layers (matrix products); batch norm, activations, pooling,
  LRN, bias additions and residual additions are not counted, as in He et al.'s 1.8-11.3 G;
- output sizes: each convolution and pooling layer's size comes from
  :func:`cnnkit.core.models.conv.output_size`, floor((n + 2p - f) / s) + 1, and is checked against the
  tensor the layer actually produced;
- receptive fields: each row's output's size, effective stride and effective padding in input
  pixels (:mod:`cnnkit.core.models.receptive_field`; the largest over the paths that join).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import ModelSpec
from cnnkit.core.models.conv import output_size


def _is_aux(name: str) -> bool:
    return name.lower().startswith("aux")


def _param_split(model: Any) -> tuple[int, int]:
    """(inference parameters, auxiliary-classifier parameters)."""
    aux = sum(p.numel() for name, child in model.named_children() if _is_aux(name) and child is not None
              for p in child.parameters())
    return sum(p.numel() for p in model.parameters()) - aux, aux


def count_params(spec: ModelSpec, num_classes: int | None = None) -> int | None:
    """Parameters ``spec`` uses at inference with ``num_classes`` outputs (None if it fails)."""
    import torch

    try:
        with torch.device("meta"):
            model = spec.create(num_classes=num_classes or spec.num_classes)
    except Exception:
        return None
    return _param_split(model)[0]


def _cache_file() -> Path:
    from cnnkit.core.base.paths import cache_root
    from cnnkit.core.base.version import __version__

    return cache_root() / f"param_counts-{__version__}.json"


def param_counts(specs: list[ModelSpec], count: bool = False) -> dict[str, int | None]:
    """Each spec's parameter count by model name, from the cache this cnnkit version keeps; with
    ``count``, the models not cached yet are built on the meta device, counted and cached
    (``cnnkit models --count``). Without it, uncounted models are None: listing stays instant."""
    try:
        cache = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    missing = [spec for spec in specs if f"{spec.name}@{spec.plugin}" not in cache] if count else []
    for spec in missing:
        cache[f"{spec.name}@{spec.plugin}"] = count_params(spec)
    if missing:
        try:
            with atomic_path(_cache_file()) as tmp:
                tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        except OSError:
            pass  # a read-only home: counted again next time
    return {spec.name: cache.get(f"{spec.name}@{spec.plugin}") for spec in specs}


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def formula_shape(module: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Output (C, H, W) of a conv or pooling layer from its input (C, H, W) by the output-size
    formula; None for other layers (their size is the tensor's)."""
    from torch import nn

    if len(shape) != 3:
        return None
    c, h, w = shape
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            pad = (0, 0) if module.padding == "valid" else tuple(d * (k - 1) // 2 for d, k in
                                                                 zip(module.dilation, module.kernel_size))
        else:
            pad = module.padding
        sizes = [output_size(n, k, stride=s, padding=p, dilation=d) for n, k, s, p, d in
                 zip((h, w), module.kernel_size, module.stride, pad, module.dilation)]
        return (module.out_channels, *sizes)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        p, d = _pair(module.padding), _pair(getattr(module, "dilation", 1))
        return (c, *[output_size(n, k[i], stride=s[i], padding=p[i], dilation=d[i], ceil_mode=module.ceil_mode)
                     for i, n in enumerate((h, w))])
    return None


def _shape_text(shape: tuple[int, ...]) -> str:
    """Papers' notation: HxWxC for maps, C for vectors."""
    return f"{shape[1]}x{shape[2]}x{shape[0]}" if len(shape) == 3 else "x".join(map(str, shape))


def model_options(spec: ModelSpec, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` architecture options checked against ``spec.options`` (one clear line for an unknown one)."""
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        known = ", ".join(f"--{k.replace('_', '-')}" for k in spec.options) or "none"
        raise CnnkitError(f"{spec.name}: unknown option(s) {', '.join('--' + k.replace('_', '-') for k in unknown)} "
                          f"(its architecture options: {known})")
    return given


def summarize(spec: ModelSpec, *, img_size: int | None = None, num_classes: int | None = None,
              options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A layer table for one forward pass of ``spec`` at ``img_size`` (default: the paper's),
    built with the architecture ``options`` (``--backbone vgg16``) as ``cnnkit train`` builds it.

    Rows are the layers a paper's table lists (convolutions, fully connected and pooling layers);
    the batch norms, activations, LRN and dropout that follow a row are folded into it. A model
    whose forward needs more than images (a detector's proposals) defines ``summary_forward(images)``,
    the pass the table follows. Returns ``{"model", "img_size", "num_classes", "options", "params",
    "aux_params", "macs", "paper", "layers"}`` (each layer with its ``receptive_field``); ``paper``
    holds the paper's ``params``/``macs`` (and our difference in %) where it gives them: the model's
    own ``paper_params`` (set by a builder whose options make the paper's network) before the spec's.
    """
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from cnnkit.core.models.receptive_field import ReceptiveFields

    size = img_size or spec.img_size
    least = 2 if spec.task == "classify" else 1  # a classifier of one class has nothing to tell apart
    if num_classes is not None and num_classes < least:
        raise CnnkitError(f"--num-classes {num_classes}: a {spec.task} model needs at least {least}")
    classes = num_classes or spec.num_classes
    if size < spec.min_img_size:
        raise CnnkitError(f"{spec.name} needs --img-size >= {spec.min_img_size} "
                          f"(its architecture shrinks smaller inputs to nothing)")
    options = model_options(spec, options or {})
    with torch.device("meta"):
        model = spec.create(num_classes=classes, **options)
    model.eval()
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}  # a shared layer: its last name
    row_types = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    counter = FlopCounterMode(display=False)
    fields = ReceptiveFields()
    before: dict[int, int] = {}

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        before[id(module)] = counter.get_total_flops()

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        macs = (counter.get_total_flops() - before.pop(id(module))) // 2
        params = 0 if id(module) in seen else sum(p.numel() for p in module.parameters())
        seen.add(id(module))
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        in_shape = tuple(args[0].shape[1:]) if args and isinstance(args[0], torch.Tensor) else ()
        expected = formula_shape(module, in_shape)
        if expected is not None:
            if min(expected) < 1:
                raise CnnkitError(f"{spec.name}: --img-size {size} shrinks layer '{names[id(module)]}' to nothing "
                                  f"(needs --img-size >= {spec.min_img_size})")
            if expected != shape:
                raise RuntimeError(f"{names[id(module)]}: output-size formula gives {expected}, layer gave {shape}")
            shape = expected
        new_row = isinstance(module, row_types) and not (
            isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and shape == in_shape)
        if new_row or not rows:
            field = fields.field(output)
            rows.append({"name": names.get(id(module), type(module).__name__), "type": type(module).__name__,
                         "output": list(shape), "params": 0, "macs": 0,
                         "receptive_field": field.as_dict() if field else None,
                         "receptive_field_text": field.text() if field else "-"})
        rows[-1]["params"] += params
        rows[-1]["macs"] += macs

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(pre_hook), m.register_forward_hook(hook))]
    try:
        with counter, fields:
            images = fields.watch(torch.empty(1, spec.in_channels, size, size, device="meta"))
            getattr(model, "summary_forward", model)(images)
    except CnnkitError:
        raise
    except Exception as exc:  # e.g. a size the layers cannot take, or a model that wants other inputs
        raise CnnkitError(f"{spec.name} cannot run at --img-size {size}: {str(exc).splitlines()[0]}") from None
    finally:
        for h in handles:
            h.remove()
    for row in rows:
        row["output_text"] = _shape_text(tuple(row["output"]))
    params, aux = _param_split(model)
    macs = counter.get_total_flops() // 2
    paper: dict[str, Any] = {}
    if spec.paper:
        paper["source"] = spec.paper
    paper_params = getattr(model, "paper_params", None) or (None if options else spec.paper_params)
    if paper_params and classes == spec.num_classes:
        paper["params"] = paper_params
        paper["params_diff_pct"] = round(100 * (params - paper_params) / paper_params, 2)
    if spec.paper_macs and not options and classes == spec.num_classes and size == spec.img_size:
        paper["macs"] = spec.paper_macs
        paper["macs_diff_pct"] = round(100 * (macs - spec.paper_macs) / spec.paper_macs, 2)
    return {"model": spec.name, "img_size": size, "num_classes": classes, "options": options, "params": params,
            "aux_params": aux,
            "macs": macs, "paper": paper, "layers": rows}


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _options_text(options: dict[str, Any]) -> str:
    return "".join(f" --{k.replace('_', '-')} {v}" for k, v in options.items())


def render(report: dict[str, Any], console: Any) -> None:
    """Print a report from :func:`summarize` as a rich table with totals and the paper's figures."""
    from rich.table import Column, Table

    size = report["img_size"]
    table = Table(Column("layer", overflow="fold"), "type", "output", Column("params", justify="right"),
                  Column("MACs", justify="right"), Column("RF (s, p)", justify="right"),
                  title=f"{report['model']}{_options_text(report.get('options') or {})} at {size}x{size}, "
                        f"{report['num_classes']} classes")
    for row in report["layers"]:
        table.add_row(row["name"], row["type"], row["output_text"], f"{row['params']:,}", _si(row["macs"]),
                      row["receptive_field_text"])
    console.print(table)
    lines = [f"parameters: {report['params']:,} ({_si(report['params'])})",
             f"multiply-adds: {report['macs']:,} ({_si(report['macs'])})",
             "RF (s, p): receptive field in input pixels (effective stride, effective padding)"]
    if report["aux_params"]:
        lines.append(f"auxiliary classifiers (training only): {report['aux_params']:,} parameters")
    paper = report["paper"]
    if "params" in paper:
        lines.append(f"paper parameters: {_si(paper['params'])} (ours {paper['params_diff_pct']:+.2f}%)")
    if "macs" in paper:
        lines.append(f"paper multiply-adds: {_si(paper['macs'])} (ours {paper['macs_diff_pct']:+.2f}%)")
    if "source" in paper:
        lines.append(f"paper: {paper['source']}")
    for line in lines:
        console.print(line)
