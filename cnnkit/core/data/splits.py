"""Explicit splits: which images a run trains, validates and tests on, and where each came from.

A layout names its own splits (a COCO json's ``val`` sibling, a Roboflow ``valid/`` folder,
VOC's ``val.txt``); nothing falls back to training or test images. Where a source has no
validation split, ``--val PATH`` names one (any layout) or ``--val-fraction F`` carves one from
the training images: a seeded, per-image, deterministic cut.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import numpy as np

from cnnkit.core.base.errors import CnnkitError

SPLIT_WORDS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class MissingSplit(CnnkitError):
    """The source has no such split (the message says what was looked for)."""


def split_of(name: str) -> str | None:
    """``train``, ``val`` or ``test`` when ``name`` (a folder or file stem) names one."""
    low = name.lower()
    for split, words in SPLIT_WORDS.items():
        if any(re.match(rf"{w}(?![a-z])", low) for w in words):
            return split
    return None


def sibling_names(name: str, split: str) -> list[str]:
    """``name`` with its ``train`` word replaced by each word for ``split`` (empty when it has
    no such word): ``instances_train2017`` -> ``instances_val2017``, ``train`` -> ``valid``."""
    pattern = re.compile(r"(?<![A-Za-z])train(?![A-Za-z])")
    if not pattern.search(name):
        return []
    return [pattern.sub(word, name) for word in SPLIT_WORDS[split]]


class Carved:
    """The images ``indices`` of ``base`` (keeps ``classes``, ``targets`` and ``paths``)."""

    def __init__(self, base: Any, indices: Sequence[int], source: str) -> None:
        self.base, self.indices, self.source = base, [int(i) for i in indices], source
        self.classes = getattr(base, "classes", None)
        if hasattr(base, "targets"):
            self.targets = [base.targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[self.indices[index]]

    def paths(self) -> list[Any] | None:
        every = self.base.paths() if hasattr(self.base, "paths") else None
        return None if every is None else [every[i] for i in self.indices]


def carve(base: Any, split: str, fraction: float, seed: int) -> Carved:
    """The ``split`` ("train" or "val") side of a seeded per-image cut of ``base``."""
    n = len(base)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise CnnkitError(f"--val-fraction {fraction}: {source_of(base)} has {n} image(s), too few to "
                          "keep any for training")
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    if split == "val":
        return Carved(base, val, f"--val-fraction {fraction:g} of {source_of(base)}, seed {seed}")
    return Carved(base, train, f"{source_of(base)} minus the --val-fraction {fraction:g}, seed {seed}")


def check_fraction(val: str, val_fraction: float) -> None:
    if val and val_fraction:
        raise CnnkitError("give --val PATH or --val-fraction F, not both")
    if not 0 <= val_fraction < 1:
        raise CnnkitError(f"--val-fraction {val_fraction}: must be at least 0 and below 1 (e.g. 0.1)")


def no_val(spec: str, exc: MissingSplit) -> MissingSplit:
    return MissingSplit(f"--data {spec}: no validation split ({exc}); name one with --val PATH or carve one "
                       "from the training images with --val-fraction F (e.g. 0.1)")


def _unwrap(ds: Any) -> Any:
    while not hasattr(ds, "source") and hasattr(ds, "base"):
        ds = ds.base
    return ds


def source_of(ds: Any) -> str:
    return str(getattr(_unwrap(ds), "source", "") or type(ds).__name__)


def report_of(ds: Any) -> Any:
    """The scan report behind ``ds`` (through wrappers and cuts), or None."""
    while ds is not None:
        if getattr(ds, "report", None) is not None:
            return ds.report
        ds = getattr(ds, "base", None)
    return None


def paths_of(ds: Any) -> list[Any] | None:
    """The image files behind ``ds`` (through wrappers and cuts); None for sets without files (synthetic)."""
    raw = _unwrap(ds)
    return raw.paths() if hasattr(raw, "paths") else None  # None: no files (synthetic sets)


def split_summary(train: Any, val: Any) -> tuple[list[str], dict[str, str]]:
    """The line ``data: train N images (SOURCE), val M images (SOURCE)`` and the scans'
    warnings to print before training, and the MLflow params naming both splits. Refuses a
    validation split that shares images with the training split."""
    train_paths, val_paths = paths_of(train), paths_of(val)
    if train_paths is not None and val_paths is not None:
        seen = {os.path.realpath(p) for p in train_paths}
        shared = [p for p in val_paths if os.path.realpath(p) in seen]
        if shared:
            raise CnnkitError(f"{len(shared)} of the {len(val_paths)} validation images are training images "
                              f"(e.g. {shared[0]}); validate on other images (--val PATH or --val-fraction F)")
    params = {"data_train": f"{len(train)} images ({source_of(train)})",
              "data_val": f"{len(val)} images ({source_of(val)})"}
    lines = [f"data: train {params['data_train']}, val {params['data_val']}"]
    reports = [report_of(train), report_of(val)]
    for report in [r for i, r in enumerate(reports) if r is not None and r not in reports[:i]]:
        lines += [f"data warning: {w}" for w in report.warnings()]
    return lines, params
