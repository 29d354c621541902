"""An honest verification accuracy: the threshold is never chosen on the pairs it is scored on.

LFW's protocol (Huang et al. 2007, "View 2"): the pairs come in folds; for each fold the
threshold with the best accuracy on the other folds is applied to it, and the accuracy is the
mean (and standard deviation) over the folds. Pairs without folds of their own are dealt into
``FOLDS`` folds at random (fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnkit.core.base.errors import CnnkitError

FOLDS = 10


@dataclass
class HeldOut:
    """Accuracy over held-out folds, and the threshold each fold was scored with."""

    mean: float
    std: float
    thresholds: np.ndarray
    accuracies: np.ndarray


def random_folds(n: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """``n`` pairs dealt into ``folds`` folds of (nearly) equal size, in a seeded random order."""
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, np.int64)
    out[order] = np.arange(n) % folds
    return out


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold (``distance <= t`` means "same") with the best accuracy, in the middle of
    the gap between two neighbouring distances (the first such gap on ties)."""
    d, y = np.asarray(distances, np.float64), np.asarray(same, bool)
    if y.all() or not y.any():
        raise CnnkitError("a threshold needs both genuine and impostor pairs")
    order = np.argsort(d, kind="mergesort")
    d, y = d[order], y[order]
    last = np.r_[np.nonzero(np.diff(d))[0], len(d) - 1]  # accept every pair up to each distinct distance
    correct = np.r_[(~y).sum(), np.cumsum(y)[last] + (~y).sum() - np.cumsum(~y)[last]]
    cuts = np.r_[d[0] - 1.0, (d[last][:-1] + d[last][1:]) / 2, d[-1] + 1.0]
    return float(cuts[int(np.argmax(correct))])


def held_out_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> HeldOut:
    """Per fold: the best-accuracy threshold of the other folds, its accuracy on this fold."""
    d, y, folds = np.asarray(distances, np.float64), np.asarray(same, bool), np.asarray(folds)
    ids = np.unique(folds)
    if len(ids) < 2:
        raise CnnkitError("the held-out accuracy needs pairs in at least two folds")
    thresholds, accuracies = [], []
    for k in ids:
        test = folds == k
        threshold = best_threshold(d[~test], y[~test])
        thresholds.append(threshold)
        accuracies.append(float(((d[test] <= threshold) == y[test]).mean()))
    acc = np.asarray(accuracies)
    return HeldOut(float(acc.mean()), float(acc.std()), np.asarray(thresholds), acc)
