"""``cnnkit data check``: what training would read from ``--data``, split by split, without training."""

from __future__ import annotations

from typing import Any


def check(spec: str, val: str = "", val_fraction: float = 0.0, seed: int = 0,
          task: str | None = None) -> dict[str, Any]:
    """The layout, classes and, for each split, its source, counts and scan warnings (a split
    that is absent says why)."""
    from dataclasses import asdict

    from cnnkit.core.data import find_dataset, open_dataset
    from cnnkit.core.data.splits import MissingSplit, report_of, source_of

    tasks = (task,) if task else None
    adapter, _, _ = find_dataset(spec, tasks)
    out: dict[str, Any] = {"data": spec, "layout": adapter.name, "task": adapter.task, "classes": [], "splits": {}}
    for split in ("train", "val", "test"):
        try:
            ds = open_dataset(spec, split, tasks, val=val, val_fraction=val_fraction, seed=seed)
        except MissingSplit as exc:
            out["splits"][split] = {"missing": str(exc)}
            continue
        out["classes"] = out["classes"] or list(getattr(ds, "classes", None) or [])
        report = getattr(ds, "report", None)  # a cut (--val-fraction) has its source's warnings only
        entry: dict[str, Any] = {"source": source_of(ds), "images": len(ds)}
        if report is not None:  # an ImageFolder's scan stores each class as a whole-image box: no boxes to show
            hidden = ("source", "images") if adapter.task == "detect" else ("source", "images", "boxes", "empty",
                                                                             "ignored", "per_class")
            entry |= {k: v for k, v in asdict(report).items() if k not in hidden}
        if report_of(ds) is not None:
            entry["warnings"] = report_of(ds).warnings()
        if "per_class" not in entry and hasattr(ds, "targets") and out["classes"]:
            entry["per_class"] = {c: 0 for c in out["classes"]}
            for t in ds.targets:
                entry["per_class"][out["classes"][t]] += 1
        out["splits"][split] = entry
    return out


def describe(split: str, entry: dict[str, Any]) -> list[str]:
    if "missing" in entry:
        return [f"{split}: none ({entry['missing']})"]
    counts = [f"{entry['images']} images"]
    if "boxes" in entry:
        counts += [f"{entry['boxes']} boxes", f"{entry['empty']} without objects"]
        if entry["ignored"]:
            counts.append(f"{entry['ignored']} ignore regions (crowd/difficult)")
    line = f"{split}: {', '.join(counts)} ({entry['source']})"
    if "seconds" in entry:
        line += f"; scan {entry['seconds']:.2f} s, cache {entry['cache']}"
    return [line] + [f"  warning: {w}" for w in entry.get("warnings", [])]
