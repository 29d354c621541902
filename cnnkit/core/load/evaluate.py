"""Metrics of any model source on a split of a dataset."""

from __future__ import annotations

from typing import Any

from cnnkit.core.base.console import notice
from cnnkit.core.data.splits import report_of


def evaluate_loaded(task: Any, model: Any, device: Any, data: str = "", batch_size: int = 0,
                    split: str = "val") -> dict[str, Any]:
    """Metrics of a loaded model on the ``split`` of ``data`` (default: the data it was trained on).
    What the data's scan left out (unreadable images, dropped boxes) is said first on stderr."""
    if data:  # evaluate on it: its val split, else all of it
        task.config.data, task.config.val, task.config.val_fraction = data, data, 0.0
    if batch_size:
        task.config.batch_size = batch_size
    model.to(device)
    task.config.device = str(device)
    ds = task.dataset(split)
    report = report_of(ds)
    for line in report.warnings() if report is not None else []:  # e.g. "3 image(s) skipped: a.jpg: ..."
        notice(f"data warning: {line}")
    return task.evaluate(model, task.loader(ds, train=False), device)


