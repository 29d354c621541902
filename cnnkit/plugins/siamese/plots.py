"""Verification figures for MLflow: the ROC curve and the genuine/impostor distance histograms."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.core.metrics import Verification
from cnnkit.core.plots import new_figure


def roc_figure(v: Verification) -> Any:
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
