"""Headless matplotlib figures for MLflow artifacts (loss curves, PR and ROC curves, histograms)."""

from __future__ import annotations

from typing import Any, Sequence


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
