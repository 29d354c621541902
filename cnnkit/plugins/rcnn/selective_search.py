"""Selective search (Uijlings et al. 2013): region proposals by hierarchical grouping.

An initial over-segmentation (Felzenszwalb & Huttenlocher, from scikit-image) is merged greedily,
always joining the two most similar neighbouring regions, until one region is left; every region
ever formed is a proposal. Similarity is a sum of colour (25-bin histograms a channel), texture
(Gaussian derivatives in 8 orientations, 10 bins each), size and fill terms. "Fast" mode
diversifies over colour spaces (HSV, Lab), thresholds ``k`` and two similarity mixes; boxes are
ranked as the paper does: a box's position in its hierarchy (1 = the last merge) times a random
number, duplicates removed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

COLOUR_BINS = 25
TEXTURE_BINS = 10
ORIENTATIONS = 8


@dataclass(frozen=True)
class Strategy:
    """One diversification: colour space, Felzenszwalb ``k`` and which similarities are summed."""

    colour_space: str = "hsv"  # rgb | hsv | lab
    k: int = 100
    similarities: str = "ctsf"  # letters of colour, texture, size, fill


MODES: dict[str, tuple[Strategy, ...]] = {
    "single": (Strategy("hsv", 100, "ctsf"),),
    "fast": tuple(Strategy(cs, k, sim) for cs in ("hsv", "lab") for k in (50, 100) for sim in ("ctsf", "tsf")),
}


def _convert(image: np.ndarray, colour_space: str) -> np.ndarray:
    """RGB uint8 -> the colour space scaled to [0, 1] per channel (float32)."""
    from skimage import color

    rgb = image.astype(np.float32) / 255.0
    if colour_space == "rgb":
        return rgb
    if colour_space == "hsv":
        return color.rgb2hsv(rgb).astype(np.float32)
    if colour_space == "lab":
        lab = color.rgb2lab(rgb)
        return ((lab + [0.0, 128.0, 128.0]) / [100.0, 255.0, 255.0]).clip(0, 1).astype(np.float32)
    raise ValueError(f"unknown colour space {colour_space!r} (rgb, hsv, lab)")


def _histograms(labels: np.ndarray, values: np.ndarray, n: int, bins: int) -> np.ndarray:
    """L1-normalised per-region histograms of ``values`` (H, W, C) in [0, 1]: (n, C * bins)."""
    c = values.shape[2]
    idx = np.minimum((values * bins).astype(np.int64), bins - 1)  # (H, W, C)
    flat = (labels[..., None] * (c * bins) + np.arange(c) * bins + idx).ravel()
    hist = np.bincount(flat, minlength=n * c * bins).reshape(n, c * bins).astype(np.float32)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1e-12)


def _texture_values(image: np.ndarray) -> np.ndarray:
    """Gaussian derivative responses (sigma 1) in 8 orientations a channel, scaled to [0, 1]."""
    out = []
    for ch in range(image.shape[2]):
        gx = ndimage.gaussian_filter(image[..., ch], 1.0, order=(0, 1))
        gy = ndimage.gaussian_filter(image[..., ch], 1.0, order=(1, 0))
        for angle in np.arange(ORIENTATIONS // 2) * np.pi / (ORIENTATIONS // 2):
            d = np.cos(angle) * gx + np.sin(angle) * gy
            out += [np.maximum(d, 0), np.maximum(-d, 0)]  # opposite orientations
    values = np.stack(out, axis=2)
    return values / max(float(values.max()), 1e-12)


def _neighbours(labels: np.ndarray) -> np.ndarray:
    """Unique (i, j), i < j, of regions that touch horizontally or vertically."""
    pairs = [np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
             np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)]
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    return np.unique(np.sort(p, axis=1), axis=0)


def region_histograms(labels: np.ndarray, colour: np.ndarray, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour and texture histograms of each initial region of ``labels`` (H, W ints 0..n-1)."""
    n = int(labels.max()) + 1
    return _histograms(labels, colour, n, COLOUR_BINS), _histograms(labels, texture, n, TEXTURE_BINS)


def hierarchical_grouping(labels: np.ndarray, colour_hist: np.ndarray, texture_hist: np.ndarray,
                          similarities: str = "ctsf") -> tuple[np.ndarray, np.ndarray]:
    """Greedy grouping of a segmentation ``labels`` (H, W ints 0..n-1) whose regions have the
    given colour and texture histograms.

    Returns every region's box (xyxy, exclusive max) and its hierarchy position, where 1 is the
    final (whole-image) region and the initial regions have the largest positions.
    """
    h, w = labels.shape
    n = int(labels.max()) + 1
    total = n * 2 - 1
    size = np.zeros(total, np.float64)
    size[:n] = np.bincount(labels.ravel(), minlength=n)
    boxes = np.zeros((total, 4), np.float64)
    for i, sl in enumerate(ndimage.find_objects(labels + 1)):
        boxes[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    use = set(similarities)
    chist = np.zeros((total, colour_hist.shape[1]), np.float32)
    chist[:n] = colour_hist
    thist = np.zeros((total, texture_hist.shape[1]), np.float32)
    thist[:n] = texture_hist
    area = float(h * w)

    def sim(i: int, js: np.ndarray) -> np.ndarray:
        s = np.zeros(len(js))
        if "c" in use:
            s += np.minimum(chist[i], chist[js]).sum(1)
        if "t" in use:
            s += np.minimum(thist[i], thist[js]).sum(1)
        if "s" in use:
            s += 1.0 - (size[i] + size[js]) / area
        if "f" in use:
            bw = np.maximum(boxes[i, 2], boxes[js, 2]) - np.minimum(boxes[i, 0], boxes[js, 0])
            bh = np.maximum(boxes[i, 3], boxes[js, 3]) - np.minimum(boxes[i, 1], boxes[js, 1])
            s += 1.0 - (bw * bh - size[i] - size[js]) / area
        return s

    adjacency: list[set[int]] = [set() for _ in range(total)]
    heap: list[tuple[float, int, int]] = []
    pairs = _neighbours(labels)
    for i, j in pairs:
        adjacency[i].add(int(j))
        adjacency[j].add(int(i))
    for i in range(n):
        js = np.array(sorted(j for j in adjacency[i] if j > i), dtype=np.int64)
        if len(js):
            for j, s in zip(js.tolist(), sim(i, js).tolist()):
                heap.append((-s, i, j))
    heapq.heapify(heap)
    alive = np.zeros(total, bool)
    alive[:n] = True
    merged_at = np.zeros(total, np.int64)  # creation order of each region (initial regions: 0)
    t = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        size[t] = size[i] + size[j]
        boxes[t] = (min(boxes[i, 0], boxes[j, 0]), min(boxes[i, 1], boxes[j, 1]),
                    max(boxes[i, 2], boxes[j, 2]), max(boxes[i, 3], boxes[j, 3]))
        chist[t] = (chist[i] * size[i] + chist[j] * size[j]) / size[t]
        thist[t] = (thist[i] * size[i] + thist[j] * size[j]) / size[t]
        alive[i] = alive[j] = False
        alive[t] = True
        merged_at[t] = t - n + 1
        nbrs = (adjacency[i] | adjacency[j]) - {i, j}
        for k in nbrs:
            adjacency[k] -= {i, j}
            adjacency[k].add(t)
        adjacency[t] = nbrs
        if nbrs:
            js = np.fromiter(nbrs, np.int64)
            for k, s in zip(js.tolist(), sim(t, js).tolist()):
                heapq.heappush(heap, (-s, k, t))
        t += 1
    boxes, merged_at = boxes[:t], merged_at[:t]
    # position 1 = last merge; initial regions (never merged into being) come after all merges
    last = merged_at.max()
    position = np.where(merged_at > 0, last - merged_at + 1, last + 1).astype(np.float64)
    return boxes, position


def selective_search(image: np.ndarray, mode: str = "fast", max_proposals: int = 2000, min_size: int = 4,
                     seed: int = 0) -> np.ndarray:
    """Region proposals for an RGB uint8 image: (N, 4) float32 xyxy boxes, best ranked first."""
    from skimage.segmentation import felzenszwalb

    if mode not in MODES:
        raise ValueError(f"unknown selective search mode {mode!r} ({', '.join(MODES)})")
    rng = np.random.default_rng(seed)
    all_boxes, all_rank = [], []
    converted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    segments: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for strategy in MODES[mode]:
        if strategy.colour_space not in converted:
            img = _convert(image, strategy.colour_space)
            converted[strategy.colour_space] = (img, _texture_values(img))
        img, texture = converted[strategy.colour_space]
        key = (strategy.colour_space, strategy.k)
        if key not in segments:
            labels = felzenszwalb(img, scale=strategy.k, sigma=0.8, min_size=strategy.k,
                                  channel_axis=-1).astype(np.int64)
            segments[key] = (labels, *region_histograms(labels, img, texture))
        boxes, position = hierarchical_grouping(*segments[key], strategy.similarities)
        all_boxes.append(boxes)
        all_rank.append(position * rng.random(len(position)))
    boxes = np.concatenate(all_boxes)
    rank = np.concatenate(all_rank)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes, rank = boxes[keep], rank[keep]
    boxes = boxes[np.argsort(rank, kind="stable")]
    _, first = np.unique(boxes, axis=0, return_index=True)  # duplicates keep their best rank
    return boxes[np.sort(first)][:max_proposals].astype(np.float32)
