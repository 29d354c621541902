"""Read dlib's serialized model files (``.dat``): DNNs (``dlib::net_type``) and shape predictors.

dlib's serialization (dlib/serialize.h) is a byte stream without a header:

- an integer is one byte ``n`` (bit 7 set: negative; bits 0-3: how many bytes follow), then ``n``
  bytes of the absolute value, least significant first (``00`` is zero);
- a float is two integers, mantissa and exponent (``mantissa * 2**exponent``; exponents 32000,
  32001 and 32002 mean +inf, -inf and NaN); a bool is the character ``'0'`` or ``'1'``;
- a string is its length then its bytes; a ``std::vector`` is its length then its items;
- a ``dlib::matrix`` is ``-rows``, ``-cols`` then its items row by row;
- a DNN tensor is version 2, four integers (samples, k, rows, cols), then little-endian float32s;
  an alias tensor (a view into a layer's ``params``) is version 1 and the four integers.

A DNN is written from the loss layer inward: the loss (version, name, options), one version
integer per layer wrapper (outermost first), the input layer, then each layer from the input
outward: its name (``con_4``, ``affine_``, ...), its fields, the wrapper's bool flags and its
(usually empty) cached tensors. Tag and skip wrappers write only a version, so the graph between
residual blocks is not in the file: the reader returns the layers in order and the module that
uses them knows its own architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.api import CnnkitError

SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DatReader:
    """Sequential reader of dlib's primitive types over the bytes of one file."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> CnnkitError:
        return CnnkitError(f"{self.source}: not a dlib model this reader knows ({what} at byte {self.pos})")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("file ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:self.pos + n]

    def int(self) -> int:
        head = self._take(1)[0]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise self.fail(f"bad integer header 0x{head:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in SPECIAL_EXPONENTS:
            return SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool {ch!r}")
        return ch == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def is_string(self, prefix: bytes = b"") -> bool:
        """Whether a string (starting with ``prefix``) comes next, without reading it."""
        head = self.peek(1)
        if not head or head[0] & 0xF0 or not 1 <= head[0] <= 2:
            return False
        size = head[0]
        length = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        text = self.data[self.pos + 1 + size:self.pos + 1 + size + length]
        return length >= 3 and len(text) == length and text[:1].isalpha() and text.startswith(prefix)

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise self.fail("tensor version is not 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), "<f4").reshape(shape).copy()

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != 1:
            raise self.fail("alias tensor version is not 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def matrix(self) -> np.ndarray:
        rows, cols = self.int(), self.int()
        if rows > 0 or cols > 0:
            raise self.fail("old-style matrix")
        rows, cols = -rows, -cols
        return np.array([self.float() for _ in range(rows * cols)], np.float32).reshape(rows, cols)


# --------------------------------------------------------------------------- DNN layers
def _floats(r: DatReader, n: int) -> list[float]:
    return [r.float() for _ in range(n)]


def _con(r: DatReader) -> dict[str, Any]:
    params = r.tensor().reshape(-1)
    filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
    weight_shape = r.alias()
    r.alias()  # the bias alias: its shape is (filters,)
    _floats(r, 4)  # learning-rate and weight-decay multipliers
    n_weight = int(np.prod(weight_shape))
    return {"weight": params[:n_weight].reshape(weight_shape), "bias": params[n_weight:n_weight + filters],
            "kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _affine(r: DatReader) -> dict[str, Any]:
    params = r.tensor().reshape(-1)
    gamma, _ = r.alias(), r.alias()
    r.int()  # mode: fc or conv
    n = int(np.prod(gamma))
    return {"gamma": params[:n], "beta": params[n:2 * n]}


def _bn(r: DatReader) -> dict[str, Any]:
    """A batch-norm layer, folded into the affine transform dlib itself runs at test time."""
    params = r.tensor().reshape(-1)
    gamma, _ = r.alias(), r.alias()
    for _ in range(2):  # means and inverse deviations of the last training batch
        r.tensor()
    mean, var = r.tensor().reshape(-1), r.tensor().reshape(-1)
    r.int(), r.int()  # num_updates, running_stats_window_size
    _floats(r, 4)
    eps = r.float() if r.peek() not in (b"0", b"1") else 1e-5
    n = int(np.prod(gamma))
    scale = params[:n] / np.sqrt(var + eps)
    return {"gamma": scale.astype(np.float32), "beta": (params[n:2 * n] - scale * mean).astype(np.float32)}


def _pool(r: DatReader) -> dict[str, Any]:
    nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
    return {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _fc(r: DatReader) -> dict[str, Any]:
    outputs, inputs = r.int(), r.int()
    params = r.tensor().reshape(-1)
    r.alias(), r.alias()
    bias_mode = r.int()  # 0: has a bias, 1: no bias
    _floats(r, 4)
    weight = params[:inputs * outputs].reshape(inputs, outputs).T
    bias = params[inputs * outputs:inputs * outputs + outputs] if bias_mode == 0 else None
    return {"weight": np.ascontiguousarray(weight), "bias": bias}


LAYERS = {"con_4": ("con", _con), "affine_": ("affine", _affine), "bn_con2": ("affine", _bn),
          "relu_": ("relu", lambda r: {}), "add_prev_": ("add_prev", lambda r: {}),
          "max_pool_2": ("max_pool", _pool), "avg_pool_2": ("avg_pool", _pool), "fc_2": ("fc", _fc)}


def _loss(r: DatReader, name: str) -> dict[str, Any]:
    if name == "loss_metric_2":
        margin, threshold = r.float(), r.float()
        return {"margin": margin, "distance_threshold": threshold}
    if name == "loss_mmod_":
        if r.int() != 1:
            raise r.fail("mmod options version is not 1")
        width, height = r.int(), r.int()
        _floats(r, 3)  # loss per false alarm / missed target, truth-match IoU
        nms_iou, nms_covered = r.float(), r.float()
        _floats(r, 2)  # overlaps_ignore
        return {"window": (height, width), "nms_iou": nms_iou, "nms_covered": nms_covered}
    raise r.fail(f"unknown loss layer '{name}'")


def _input(r: DatReader, name: str) -> dict[str, Any]:
    if name not in ("input_rgb_image_sized", "input_rgb_image_pyramid"):
        raise r.fail(f"unknown input layer '{name}'")
    info: dict[str, Any] = {"name": name, "mean": tuple(_floats(r, 3))}
    if name == "input_rgb_image_sized":
        info["size"] = (r.int(), r.int())
    return info


@dataclass
class DlibNet:
    """A dlib DNN as read from its file: loss options, input layer and layers from the input out."""

    loss: dict[str, Any]
    input: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [layer["type"] for layer in self.layers]


def read_dnn(path: str | Path) -> DlibNet:
    """Parse a dlib DNN ``.dat`` file (the layer kinds of dlib's face models)."""
    path = Path(path)
    try:
        r = DatReader(path.read_bytes(), str(path))
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot read ({exc.strerror})") from None
    r.int()  # loss wrapper version
    loss = _loss(r, r.string())
    while not r.is_string(b"input_"):
        r.int()  # one version per layer wrapper, tags and skips included
    net = DlibNet(loss, _input(r, r.string()))
    while not r.at_end():
        name = r.string()
        if name not in LAYERS:
            raise r.fail(f"unknown layer '{name}'")
        kind, read = LAYERS[name]
        net.layers.append({"type": kind, **read(r)})
        while r.peek() in (b"0", b"1"):  # the wrapper's flags
            r.bool()
        while r.peek(2) == b"\x01\x02" and not r.is_string():  # its cached tensors (empty once cleaned)
            r.tensor()
        while not r.at_end() and not r.is_string():  # the first wrapper's sample expansion factor
            r.int()
    return net


# --------------------------------------------------------------------------- shape predictor
@dataclass
class ShapePredictorData:
    """dlib's regression-tree cascade (Kazemi & Sullivan 2014) as arrays.

    ``initial_shape`` (P, 2) in the unit square of the face box; per cascade level ``c``:
    ``split_idx[c]`` (T, S, 2) feature pairs, ``split_thresh[c]`` (T, S), ``leaves[c]`` (T, S+1, P, 2),
    ``anchor[c]`` (F,) landmark each feature pixel hangs off and ``deltas[c]`` (F, 2) its offset."""

    initial_shape: np.ndarray
    split_idx: list[np.ndarray]
    split_thresh: list[np.ndarray]
    leaves: list[np.ndarray]
    anchor: list[np.ndarray]
    deltas: list[np.ndarray]


def read_shape_predictor(path: str | Path) -> ShapePredictorData:
    """Parse a dlib ``shape_predictor`` ``.dat`` file."""
    path = Path(path)
    r = DatReader(path.read_bytes(), str(path))
    if r.int() != 1:
        raise r.fail("shape predictor version is not 1")
    initial = r.matrix().reshape(-1, 2)
    split_idx, split_thresh, leaves = [], [], []
    for _ in range(r.int()):
        idx, thresh, values = [], [], []
        for _ in range(r.int()):
            splits = [(r.int(), r.int(), r.float()) for _ in range(r.int())]
            idx.append([(a, b) for a, b, _ in splits])
            thresh.append([t for _, _, t in splits])
            values.append([r.matrix().reshape(-1, 2) for _ in range(r.int())])
        split_idx.append(np.asarray(idx, np.int64))
        split_thresh.append(np.asarray(thresh, np.float32))
        leaves.append(np.asarray(values, np.float32))
    anchor = [np.asarray([r.int() for _ in range(r.int())], np.int64) for _ in range(r.int())]
    deltas = [np.asarray([(r.float(), r.float()) for _ in range(r.int())], np.float32).reshape(-1, 2)
              for _ in range(r.int())]
    if not r.at_end():
        raise r.fail("trailing bytes")
    return ShapePredictorData(initial, split_idx, split_thresh, leaves, anchor, deltas)
