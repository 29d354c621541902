"""Convolution basics, computed the way the lectures do them by hand (NumPy, no deep-learning
library): the output-size formula, "convolution" (cross-correlation, as every CNN library means
it) of an image with a filter, and max/average pooling. ``cnnkit summary`` sizes layers with
:func:`output_size`."""

from __future__ import annotations

import math

import numpy as np

from cnnkit.core.base.errors import CnnkitError

# The vertical-edge detector: bright on the left, dark on the right gives a positive response.
VERTICAL_EDGE = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]])
HORIZONTAL_EDGE = VERTICAL_EDGE.T


def output_size(n: int, f: int, *, stride: int = 1, padding: int = 0, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length of an ``n``-long input under an ``f``-wide window: floor((n + 2p - f) / s) + 1.

    ``dilation`` widens the window to d(f-1)+1; ``ceil_mode`` rounds up instead, except that a
    window may not start inside the right padding (PyTorch's pooling rule).
    """
    span = dilation * (f - 1) + 1
    if n + 2 * padding < span:
        return 0
    steps = (n + 2 * padding - span) / stride
    out = (math.ceil(steps) if ceil_mode else math.floor(steps)) + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def _windows(x: np.ndarray, f: int, stride: int) -> np.ndarray:
    """All f x f windows of ``x`` (H, W, ...) at ``stride``: shape (out_h, out_w, f, f, ...)."""
    oh, ow = output_size(x.shape[0], f, stride=stride), output_size(x.shape[1], f, stride=stride)
    if oh < 1 or ow < 1:
        raise CnnkitError(f"a {f}x{f} window does not fit a {x.shape[0]}x{x.shape[1]} input")
    win = np.lib.stride_tricks.sliding_window_view(x, (f, f), axis=(0, 1))  # (H', W', ..., f, f)
    win = np.moveaxis(win, (-2, -1), (2, 3))
    return win[: (oh - 1) * stride + 1 : stride, : (ow - 1) * stride + 1 : stride]


def convolve(image: np.ndarray, kernel: np.ndarray, *, stride: int = 1, padding: int = 0) -> np.ndarray:
    """``image * kernel``: the sum of element-wise products at each position (no kernel flip).

    ``image`` is (H, W) or (H, W, C); ``kernel`` (f, f) or (f, f, C) — a volume filter sums over
    its channels too, giving one output channel.
    """
    image, kernel = np.asarray(image, dtype=np.float64), np.asarray(kernel, dtype=np.float64)
    if kernel.shape[0] != kernel.shape[1] or kernel.shape[2:] != image.shape[2:]:
        raise CnnkitError(f"a {kernel.shape} filter does not fit a {image.shape} image (square f x f[, C] needed)")
    if padding:
        image = np.pad(image, [(padding, padding), (padding, padding)] + [(0, 0)] * (image.ndim - 2))
    win = _windows(image, kernel.shape[0], stride)
    return np.tensordot(win, kernel, axes=(range(2, win.ndim), range(kernel.ndim)))


def pool(x: np.ndarray, f: int = 2, *, stride: int = 2, mode: str = "max") -> np.ndarray:
    """Max or average pooling of ``x`` (H, W) or (H, W, C), each channel on its own."""
    reduce = {"max": np.max, "avg": np.mean}.get(mode)
    if reduce is None:
        raise CnnkitError(f"pooling mode must be 'max' or 'avg', not '{mode}'")
    return reduce(_windows(np.asarray(x, dtype=np.float64), f, stride), axis=(2, 3))


def receptive_step(r: float, j: float, p_eff: float, f: int, *, stride: float = 1, padding: int = 0,
                   dilation: int = 1) -> tuple[float, float, float]:
    """One layer of the lecture's receptive-field arithmetic (Araujo et al., Distill 2019, eqs. 1-3):
    an ``f``-wide window (dilated to d(f-1)+1) at ``stride`` with ``padding`` on a map whose units
    see ``r`` input pixels, ``j`` apart, the first starting ``p_eff`` pixels before the image:
    r' = r + (d(f-1)+1 - 1) j,  j' = j s,  p' = p_eff + padding j."""
    span = dilation * (f - 1) + 1
    return r + (span - 1) * j, j * stride, p_eff + padding * j
