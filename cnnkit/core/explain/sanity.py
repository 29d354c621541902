"""Are the maps to be trusted? The checks of the tests and of ``bench/explain.py``:

- the pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2016): the
  share of images whose map peaks inside the object's true box, against the share a uniformly
  random point gets (the box's area over the image's);
- model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): the maps
  of the trained network and of the same network re-initialised must differ, measured by the
  Spearman rank correlation of the two maps;
- data randomisation (same paper): a network trained on shuffled labels (``?shuffle_labels=SEED``)
  should no longer point at the objects: its pointing share near chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.core.explain.explain import Options, attribution_maps

RANK_BOUND = 0.5  # trained vs re-initialised maps: a method passes when the mean Spearman rho is below this


@dataclass
class Sample:
    """An image, its object's true box (xyxy pixels) and class."""

    image: np.ndarray
    box: list[float]
    label: int


def boxed_samples(data: str, count: int) -> list[Sample]:
    """The first ``count`` val images of ``data`` that hold exactly one object, with its box: a
    detection set's single box, or a classification set whose samples give theirs (``with_box``,
    as ``synthetic:figure-crops`` does)."""
    from cnnkit.core.data import open_dataset

    ds = open_dataset(data, "val")
    found: list[Sample] = []
    for i in range(len(ds)):
        if len(found) == count:
            break
        if hasattr(ds, "with_box"):
            image, label, box = ds.with_box(i)
            found.append(Sample(image, list(box), int(label)))
        elif len(ds[i].boxes) == 1:
            s = ds[i]
            found.append(Sample(s.image, s.boxes[0].tolist(), int(s.labels[0])))
    return found


def inside(point: tuple[int, int], box: list[float]) -> bool:
    x, y = point
    return box[0] <= x + 0.5 <= box[2] and box[1] <= y + 0.5 <= box[3]


def chance(samples: list[Sample]) -> float:
    """The share of images a uniformly random point hits: the mean of box area / image area."""
    return float(np.mean([(s.box[2] - s.box[0]) * (s.box[3] - s.box[1]) / (s.image.shape[0] * s.image.shape[1])
                          for s in samples]))


def reinitialised(task: Any, seed: int = 0) -> nn.Module:
    """The task's network with fresh weights (its builder's initialisation), in eval mode."""
    torch.manual_seed(seed)
    return task.build_model().eval()


def maps(task: Any, model: nn.Module, samples: list[Sample], method: str, conf: float = 0.0,
         layer: str | None = None) -> list[np.ndarray | None]:
    """Each sample's map for its true class (a detector: its best detection of that class; None
    when there is none), at ``layer`` (None: the task's)."""
    out: list[np.ndarray | None] = []
    for s in samples:
        options = Options(method, str(s.label), layer, 1, conf, 0.45)
        try:
            found = attribution_maps(task, model, s.image, options)
        except Exception as exc:  # a detector that finds nothing of the class: no point
            if "nothing detected" not in str(exc):
                raise
            found = []
        out.append(found[0].map if found else None)
    return out


def pointing(found: list[np.ndarray | None], samples: list[Sample]) -> float:
    """The share of samples whose map's peak is inside the true box (no map: a miss)."""
    hits = 0
    for m, s in zip(found, samples):
        if m is not None and m.any():
            y, x = np.unravel_index(int(np.argmax(m)), m.shape)
            hits += inside((int(x), int(y)), s.box)
    return hits / max(len(samples), 1)


def rank_correlation(a: list[np.ndarray | None], b: list[np.ndarray | None]) -> float:
    """The mean Spearman rho of paired maps (pairs with a missing or constant map are skipped)."""
    from scipy.stats import spearmanr

    rhos = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)
            if x is not None and y is not None and np.ptp(x) > 0 and np.ptp(y) > 0]
    return float(np.mean(rhos)) if rhos else float("nan")
