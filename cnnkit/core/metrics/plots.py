"""Headless matplotlib figures for MLflow artifacts (loss curves, PR and ROC curves, histograms)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def new_figure(size: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
    """A figure and its axes on the Agg backend, already released by pyplot (it can still be
    drawn and saved, and leaks nothing however many runs a process makes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    plt.close(fig)
    return fig, ax


def line_plot(x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str = "",
              log: bool = False, marker: str | None = None) -> Any:
    """One line per named series against ``x``, with a legend and a light grid."""
    fig, ax = new_figure()
    for name, values in series.items():
        ax.plot(x, values, marker=marker, label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def roc_figure(v: Any) -> Any:
    """True-accept rate against false-accept rate, with AUC, EER and the chosen operating point."""
    fig, ax = new_figure((5, 5))
    ax.plot(v.fpr, v.tpr, label=f"ROC (AUC {v.auc:.4f}, EER {v.eer:.3f})")
    i = int(np.argmin(np.abs(v.thresholds - v.threshold)))
    ax.plot([v.fpr[i]], [v.tpr[i]], "o", label=f"threshold {v.threshold:.3f} (accuracy {v.accuracy:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def distance_histograms(distances: np.ndarray, same: np.ndarray, threshold: float) -> Any:
    """Distances of genuine pairs and of impostor pairs, with the threshold between them."""
    fig, ax = new_figure()
    bins = np.linspace(float(distances.min()), float(distances.max()), 50)
    ax.hist(distances[same], bins=bins, alpha=0.6, label=f"genuine ({int(same.sum())})")
    ax.hist(distances[~same], bins=bins, alpha=0.6, label=f"impostor ({int((~same).sum())})")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("distance")
    ax.set_ylabel("pairs")
    ax.legend()
    return fig


def det_figure(open_set: Any) -> Any:
    """Open-set identification's DET curve: FNIR against FPIR (log scale), FPIR 1% and 0.1% marked."""
    fpir, fnir = open_set.det()
    fig, ax = new_figure((5, 5))
    floor = 0.5 / max(len(open_set.nonmated_distance), 1)
    ax.step(np.maximum(fpir, floor), fnir, where="post", label=f"rank-1 {open_set.mated_correct.mean():.3f}")
    for target in (0.01, 0.001):
        t = open_set.threshold_at(target)
        ax.plot([max(float(open_set.fpir(t)[0]), floor)], [float(open_set.fnir(t)[0])], "o",
                label=f"FPIR <= {target:g}: FNIR {float(open_set.fnir(t)[0]):.3f} at {t:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("false positive identification rate (non-mated searches)")
    ax.set_ylabel("false negative identification rate (mated searches)")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3, which="both")
    return fig
