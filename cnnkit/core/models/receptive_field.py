"""Receptive fields of every tensor a forward pass makes: size, effective stride and effective
padding per axis, by the lecture's arithmetic (:func:`cnnkit.core.models.conv.receptive_step`) applied
to each operation as torch runs it (a dispatch mode, so it works on the meta device and follows
every branch, concatenation, residual addition, padding and upsampling a network does).

Where paths join (Inception's branches, ResNet's shortcut) the field is the union of theirs: for
aligned networks the largest receptive field, as Araujo et al. compute it ("Computing Receptive
Fields of Convolutional Neural Networks", Distill 2019). A global pooling, a flatten or an RoI
pooling sees the whole map (``whole``); ``F.pixel_unshuffle`` by f is an f x f window at stride
f; upsampling by f divides the stride (its units come in groups of f that share one field). A
reshape that moves values between positions (Darknet's ``[reorg]``: its output row j reads input
rows 4j..4j+3 modulo the height, no window) has no field, nor has anything computed from it:
:data:`UNKNOWN`, shown as ``-``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from cnnkit.core.models.conv import output_size, receptive_step

aten = torch.ops.aten


@dataclass(frozen=True)
class Field:
    """A map's receptive field: ``size``, effective ``stride`` and effective ``padding`` as (h, w)
    in input pixels, the map's own ``hw`` and whether each unit sees the whole map (``whole``)."""

    size: tuple[float, float]
    stride: tuple[float, float]
    padding: tuple[float, float]
    hw: tuple[int, int]
    whole: bool = False

    def step(self, kernel: Any, stride: Any, padding: Any, dilation: Any, hw: tuple[int, int]) -> "Field":
        """After a window of ``kernel`` (h, w) at ``stride`` with ``padding`` and ``dilation``."""
        axes = [receptive_step(self.size[i], self.stride[i], self.padding[i], int(kernel[i]), stride=stride[i],
                               padding=padding[i], dilation=dilation[i]) for i in range(2)]
        return Field(tuple(a[0] for a in axes), tuple(a[1] for a in axes), tuple(a[2] for a in axes), hw, self.whole)

    def global_(self) -> "Field":
        """Every unit sees the whole map: a window as large as the map."""
        if self.whole:
            return self
        grown = self.step(self.hw, (1, 1), (0, 0), (1, 1), (1, 1))
        return replace(grown, whole=True)

    def as_dict(self) -> dict[str, Any]:
        return {"size": [_number(v) for v in self.size], "stride": [_number(v) for v in self.stride],
                "padding": [_number(v) for v in self.padding]}

    def text(self) -> str:
        """``212 (32, 90)``: size (stride, padding), ``HxW`` where the axes differ."""
        return " ".join([_axes(self.size), f"({_axes(self.stride)}, {_axes(self.padding)})"])


UNKNOWN = Field((0, 0), (0, 0), (0, 0), (0, 0))


def _number(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(float(v), 3)


def _axes(pair: tuple[float, float]) -> str:
    h, w = (_number(v) for v in pair)
    return str(h) if h == w else f"{h}x{w}"


def _pair(v: Any, default: Any = None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and not v):
        v = default
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if len(v) else (1, 1)


def merge(fields: list[Field]) -> Field:
    """Where paths join: the union of their fields (unknown if one is). Each unit's region starts
    at the earliest start (the largest padding) and ends at the latest end, so the size is
    max(r - P) + max(P); for aligned paths that is the largest size (Araujo et al.)."""
    if UNKNOWN in fields:
        return UNKNOWN
    first = fields[0]
    if len(fields) == 1:
        return first
    padding = tuple(max(f.padding[i] for f in fields) for i in range(2))
    size = tuple(max(f.size[i] - f.padding[i] for f in fields) + padding[i] for i in range(2))
    return Field(size, tuple(max(f.stride[i] for f in fields) for i in range(2)), padding, first.hw,
                 any(f.whole for f in fields))


def _window(field: Field, func: Any, args: tuple, out: torch.Tensor) -> Field | None:
    """Convolutions, pooling and unfold: their kernel, stride, padding and dilation."""
    hw = tuple(out.shape[-2:])
    if func is aten.convolution.default:
        _, weight, _, stride, padding, dilation, transposed = args[:7]
        kernel = tuple(weight.shape[-2:])
        if transposed:  # each output reads ceil(span / s) inputs; the stride divides
            s, p, d = _pair(stride), _pair(padding), _pair(dilation)
            span = [d[i] * (kernel[i] - 1) + 1 for i in range(2)]
            reads = [math.ceil(span[i] / s[i]) for i in range(2)]
            first = [math.ceil((p[i] - span[i] + 1) / s[i]) for i in range(2)]
            grown = field.step(reads, (1, 1), [-first[i] for i in range(2)], (1, 1), hw)
            return replace(grown, stride=tuple(grown.stride[i] / s[i] for i in range(2)))
        return field.step(kernel, _pair(stride), _pair(padding), _pair(dilation), hw)
    if func is aten.im2col.default:  # F.unfold: (x, kernel, dilation, padding, stride)
        _, kernel, dilation, padding, stride = args[:5]
        k, d, p, s = _pair(kernel), _pair(dilation), _pair(padding), _pair(stride)
        grid = tuple(output_size(field.hw[i], k[i], stride=s[i], padding=p[i], dilation=d[i]) for i in range(2))
        return field.step(k, s, p, d, grid)
    if func in (aten.max_pool2d_with_indices.default, aten.max_pool2d.default):
        kernel = _pair(args[1])
        stride = _pair(args[2] if len(args) > 2 else None, kernel)
        padding = _pair(args[3] if len(args) > 3 else 0)
        dilation = _pair(args[4] if len(args) > 4 else 1)
        return field.step(kernel, stride, padding, dilation, hw)
    if func is aten.pixel_unshuffle.default:
        f = (int(args[1]), int(args[1]))
        return field.step(f, f, (0, 0), (1, 1), hw)
    if func is aten.avg_pool2d.default and out.dim() == 4:
        kernel = _pair(args[1])
        return field.step(kernel, _pair(args[2] if len(args) > 2 else None, kernel),
                          _pair(args[3] if len(args) > 3 else 0), (1, 1), hw)
    return None


def _adaptive(field: Field, out: torch.Tensor) -> Field:
    """Adaptive pooling from n to o positions: windows floor(i n / o) .. ceil((i + 1) n / o)."""
    if tuple(out.shape[-2:]) == (1, 1):
        return field.global_()
    kernel, stride = [], []
    for n, o in zip(field.hw, out.shape[-2:]):
        kernel.append(max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)))
        stride.append(n / o)
    return field.step(kernel, stride, (0, 0), (1, 1), tuple(out.shape[-2:]))


ADAPTIVE = {aten._adaptive_avg_pool2d.default, aten.adaptive_max_pool2d.default}
PADS = {aten.constant_pad_nd.default, aten.reflection_pad2d.default, aten.replication_pad2d.default}
UPSAMPLE = {aten.upsample_nearest2d.default, aten.upsample_nearest2d.vec, aten.upsample_bilinear2d.default,
            aten.upsample_bilinear2d.vec}
REDUCE = {aten.mean.dim, aten.sum.dim_IntList, aten.amax.default, aten.max.dim}
ROI = ("torchvision.roi_pool", "torchvision.roi_align")
# operations that only rearrange a map's values keep its field (an einsum's intermediate views of
# unfolded columns); a module that moves values between positions says so (``moves_positions``)
VIEWS = {aten.view, aten._unsafe_view, aten.reshape, aten.unsqueeze, aten.squeeze, aten.permute, aten.transpose,
         aten.t, aten.expand, aten.clone, aten.alias, aten.contiguous}
CROPS = {aten.slice, aten.select, aten.narrow}


def _reshaped(field: Field, out: torch.Tensor, packet: Any) -> Field:
    """An operation torch has no window for: the same map (elementwise, a join, a view of its
    values), a crop of it, or :data:`UNKNOWN` (an operation that makes a map of another size)."""
    if field.whole or out.dim() != 4 or tuple(out.shape[-2:]) == field.hw:
        return field if out.dim() != 2 else field.global_()
    if packet in CROPS:
        return replace(field, hw=tuple(out.shape[-2:]))
    return field if packet in VIEWS else UNKNOWN


class ReceptiveFields(TorchDispatchMode):
    """Inside ``with ReceptiveFields() as rf:``, every tensor computed from ``rf.watch(x)`` has
    its :class:`Field` in ``rf.field(tensor)`` (None where it cannot be told)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields = WeakTensorKeyDictionary()
        self._hook: Any = None

    def __enter__(self) -> "ReceptiveFields":
        from torch.nn.modules.module import register_module_forward_hook

        self._hook = register_module_forward_hook(self._moved)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()
        super().__exit__(*exc)

    def _moved(self, module: Any, args: Any, out: Any) -> None:
        """A module that moves values between positions (Darknet's reorg): nothing after it has a field."""
        if getattr(module, "moves_positions", False):
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.fields[t] = UNKNOWN

    def watch(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the network's input: every unit sees one pixel."""
        self.fields[x] = Field((1, 1), (1, 1), (0, 0), tuple(x.shape[-2:]))
        return x

    def field(self, tensor: Any) -> Field | None:
        found = self.fields.get(tensor) if isinstance(tensor, torch.Tensor) else None
        return None if found == UNKNOWN else found

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = [self.fields[t] for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t in self.fields]
        if not inputs:
            return out
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        field = merge(inputs)
        if field != UNKNOWN:
            field = self._rule(func, args, field, outputs[0])
        for t in outputs:
            self.fields[t] = field
        return out

    @staticmethod
    def _rule(func: Any, args: tuple, field: Field, out: torch.Tensor) -> Field:
        packet = getattr(func, "overloadpacket", None)
        if func in ADAPTIVE:
            return _adaptive(field, out)
        if func in PADS:
            pad = list(args[1]) + [0, 0]  # (left, right, top, bottom) of the last two axes
            return replace(field, padding=(field.padding[0] + pad[2] * field.stride[0],
                                           field.padding[1] + pad[0] * field.stride[1]), hw=tuple(out.shape[-2:]))
        if func in UPSAMPLE:
            (h, w), (oh, ow) = field.hw, out.shape[-2:]
            bilinear = packet is aten.upsample_bilinear2d
            grown = field.step((2, 2), (1, 1), (0, 0), (1, 1), field.hw) if bilinear else field
            return replace(grown, stride=(field.stride[0] * h / oh, field.stride[1] * w / ow), hw=(oh, ow))
        if func in REDUCE:
            dims = args[1] if len(args) > 1 else None
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            nd = args[0].dim()
            if nd == 4 and {d % nd for d in dims} & {2, 3}:
                return field.global_()
        if str(func).startswith(ROI):  # a region's features: the whole map may feed them
            return field.global_()
        windowed = _window(field, func, args, out)
        if windowed is not None:
            return windowed
        return _reshaped(field, out, packet)


def _first_tensor(out: Any) -> Any:
    found = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return found[0] if found else None


def receptive_fields(model: torch.nn.Module, x: torch.Tensor, names: list[str] | None = None,
                     forward: Any = None) -> dict[str, Field | None]:
    """The receptive field of each named module's output (all modules by default) for input ``x``
    (build the model on the meta device to spend nothing); ``forward`` runs the pass (default the model)."""
    wanted = dict(model.named_modules()) if names is None else {n: model.get_submodule(n) for n in names}
    found: dict[str, Field | None] = {}
    with ReceptiveFields() as rf:

        def keep(name: str) -> Any:
            return lambda module, args, out: found.__setitem__(name, rf.field(_first_tensor(out)))

        hooks = [m.register_forward_hook(keep(name)) for name, m in wanted.items()]
        try:
            with torch.no_grad():
                (forward or model)(rf.watch(x))
        finally:
            for h in hooks:
                h.remove()
    return found
