"""The one-time scan of a detection split: per-image records and a report, cached beside the labels.

A scan reads every image (its size from the header, and whether it decodes) and every label, checks
each box and counts what it found: images, boxes, empty images, ignore regions (COCO crowd, VOC
difficult), unreadable or missing images (skipped, by name), boxes out of the image (clipped)
and boxes of zero or negative size (dropped), each with its ``file:line``. Malformed fields are
not counted: they stop the run with their ``file:line``.

The result is cached in ``<anchor>.cnnkit.cache`` (an ``.npz`` of plain arrays, read with
``allow_pickle=False``) keyed by the sizes and modification times of every file the scan read,
so the next start skips the scan. A read-only folder is scanned each time and never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.images import image_size

SCAN_VERSION = 2  # 2: images decoded, not only their headers read
CACHE_SUFFIX = ".cnnkit.cache"
EXAMPLES = 5  # file:line examples kept per kind of warning


@dataclass
class Record:
    """One usable image: its size as displayed and its objects (``labels`` index ``names``)."""

    path: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64
    ignore_boxes: np.ndarray  # (K, 4) crowd / difficult regions
    ignore_labels: np.ndarray  # (K,)
    ignore_crowd: np.ndarray  # (K,) bool: COCO crowd (True) or VOC difficult (False)


@dataclass
class ScanReport:
    """What a scan found in one split."""

    source: str
    images: int = 0
    boxes: int = 0
    empty: int = 0
    ignored: int = 0
    skipped: list[str] = field(default_factory=list)  # "image: reason" of each image left out
    clipped: int = 0
    clipped_at: list[str] = field(default_factory=list)
    dropped: int = 0
    dropped_at: list[str] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)
    cache: str = ""  # "hit", "written", or why nothing was written
    seconds: float = 0.0

    def warnings(self) -> list[str]:
        """One line for each kind of problem found (nothing when the split is clean)."""
        lines = []
        if self.skipped:
            lines.append(f"{len(self.skipped)} image(s) skipped: {_examples(self.skipped, len(self.skipped))}")
        if self.clipped:
            lines.append(f"{self.clipped} box(es) outside the image clipped to it: "
                         f"{_examples(self.clipped_at, self.clipped)}")
        if self.dropped:
            lines.append(f"{self.dropped} box(es) of zero or negative size (or wholly outside the image) dropped: "
                         f"{_examples(self.dropped_at, self.dropped)}")
        return [f"{self.source}: {line}" for line in lines]


def _examples(items: list[str], total: int) -> str:
    shown = "; ".join(items[:EXAMPLES])
    return shown + (f"; and {total - EXAMPLES} more" if total > EXAMPLES else "")


class Scanner:
    """Collects records and counts while a layout's reader walks its files."""

    def __init__(self, source: str, names: list[str]) -> None:
        self.names = names
        self.records: list[Record] = []
        self.report = ScanReport(source)
        self.deps: list[str] = []  # files found while reading (images named in a json)

    def image_size(self, path: str) -> tuple[int, int] | None:
        """(width, height) as displayed, or None, recorded as skipped with the reason, when the
        file is missing, does not decode (truncated, corrupt) or is over the pixel limit."""
        try:
            return image_size(path, decode=True)
        except CnnkitError as exc:
            reason = str(exc).removeprefix(f"{Path(path)}: ")
            self.report.skipped.append(f"{os.path.basename(path)}: {reason}")
            return None

    def add(self, path: str, size: tuple[int, int],
            objects: Iterable[tuple[list[float], int, int, str]]) -> None:
        """An image and its ``(xyxy box, label, kind, where)`` objects; kind 0 is an object,
        1 a difficult one, 2 a crowd region. Boxes are clipped to the image; empty ones dropped."""
        w, h = size
        rep = self.report
        boxes, labels, ign, ign_labels, crowd = [], [], [], [], []
        for box, label, kind, where in objects:
            x1, y1, x2, y2 = box
            if not all(np.isfinite(box)):
                raise CnnkitError(f"{where}: box {box} is not finite")
            if min(x1, y1) < -1 or x2 > w + 1 or y2 > h + 1:
                rep.clipped += 1
                if len(rep.clipped_at) < EXAMPLES:
                    rep.clipped_at.append(where)
            x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
            y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
            if x2 <= x1 or y2 <= y1:
                rep.dropped += 1
                if len(rep.dropped_at) < EXAMPLES:
                    rep.dropped_at.append(where)
                continue
            if kind:
                ign.append([x1, y1, x2, y2])
                ign_labels.append(label)
                crowd.append(kind == 2)
            else:
                boxes.append([x1, y1, x2, y2])
                labels.append(label)
        self.records.append(Record(path, w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                                   np.asarray(labels, np.int64), np.asarray(ign, np.float32).reshape(-1, 4),
                                   np.asarray(ign_labels, np.int64), np.asarray(crowd, bool)))

    def finish(self) -> ScanReport:
        rep = self.report
        rep.images = len(self.records)
        rep.boxes = sum(len(r.labels) for r in self.records)
        rep.empty = sum(len(r.labels) == 0 for r in self.records)
        rep.ignored = sum(len(r.ignore_labels) for r in self.records)
        counts = np.bincount(np.concatenate([r.labels for r in self.records] or [np.zeros(0, np.int64)]),
                             minlength=len(self.names))
        rep.per_class = {name: int(n) for name, n in zip(self.names, counts)}
        return rep


# --------------------------------------------------------------------------- cache
def _stamp(paths: list[str]) -> str:
    """A digest of the paths, as spelled, with their sizes and modification times. (Spelled
    from another working directory, the paths differ and the split is scanned again.)"""
    digest = hashlib.blake2b(digest_size=16)
    for p in paths:
        try:
            st = os.stat(p)
            digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
        except OSError:
            digest.update(f"{p}\0-\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


def _blob(strings: list[str]) -> np.ndarray:
    """File names as bytes (one not in UTF-8 keeps its bytes, as ``os.fsencode`` does)."""
    return np.frombuffer("\n".join(strings).encode(errors="surrogateescape"), np.uint8)


def _unblob(array: np.ndarray) -> list[str]:
    text = array.tobytes().decode(errors="surrogateescape")
    return text.split("\n") if text else []


def _concat(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(shape, dtype)


def _save(path: Path, records: list[Record], meta: dict) -> None:
    counts = np.asarray([len(r.labels) for r in records], np.int64)
    icounts = np.asarray([len(r.ignore_labels) for r in records], np.int64)
    arrays = {
        "paths": _blob([r.path for r in records]),
        "sizes": np.asarray([[r.width, r.height] for r in records], np.int64).reshape(-1, 2),
        "counts": counts, "icounts": icounts,
        "boxes": _concat([r.boxes for r in records], (0, 4), np.float32),
        "labels": _concat([r.labels for r in records], (0,), np.int64),
        "iboxes": _concat([r.ignore_boxes for r in records], (0, 4), np.float32),
        "ilabels": _concat([r.ignore_labels for r in records], (0,), np.int64),
        "icrowd": _concat([r.ignore_crowd for r in records], (0,), bool),
        "deps": _blob(meta.pop("deps")),
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _load(path: Path) -> tuple[list[Record], dict] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            meta["deps"] = _unblob(z["deps"])
            paths = _unblob(z["paths"])
            sizes, counts, icounts = z["sizes"], z["counts"], z["icounts"]
            boxes, labels = z["boxes"], z["labels"]
            iboxes, ilabels, icrowd = z["iboxes"], z["ilabels"], z["icrowd"]
    except (OSError, ValueError, KeyError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # absent, truncated or from another version: scan again
    if not len(paths) == len(sizes) == len(counts) == len(icounts):
        return None  # a file name with a newline in it: not cacheable
    ends, iends = np.cumsum(counts), np.cumsum(icounts)
    records = []
    for i, p in enumerate(paths):
        a, b = ends[i] - counts[i], ends[i]
        c, d = iends[i] - icounts[i], iends[i]
        records.append(Record(p, int(sizes[i, 0]), int(sizes[i, 1]), boxes[a:b], labels[a:b],
                              iboxes[c:d], ilabels[c:d], icrowd[c:d]))
    return records, meta


def cached_scan(cache: Path, inputs: list[str], salt: str, source: str, scan: Callable[[], Scanner],
                within: tuple[Path, ...] = ()) -> tuple[list[Record], ScanReport, list[str]]:
    """``scan()`` unless ``cache`` holds the result for the same ``inputs`` (the files known
    before reading), the same files found while reading, and the same ``salt`` (class names,
    options). ``source`` names the split in the report. A cache outside the folders ``within``
    (the dataset's own, when its description can point elsewhere) is neither read nor written.
    Returns the records, the report and the label names the records index."""
    start = time.perf_counter()
    key = f"{SCAN_VERSION}:{salt}:{_stamp(inputs)}"
    outside = bool(within) and not any(cache.resolve().parent.is_relative_to(f.resolve()) for f in within)
    hit = _load(cache) if cache.exists() and not outside else None
    if hit is not None:
        records, meta = hit
        if meta.get("key") == key and meta.get("deps_stamp") == _stamp(meta["deps"]):
            report = ScanReport(**meta["report"])
            report.source, report.cache, report.seconds = source, "hit", time.perf_counter() - start
            return records, report, meta["names"]
    scanner = scan()
    report = scanner.finish()
    report.seconds = time.perf_counter() - start
    meta = {"key": key, "deps": scanner.deps, "deps_stamp": _stamp(scanner.deps), "names": scanner.names,
            "report": {**asdict(report), "cache": ""}}
    if outside:
        report.cache = f"not written ({cache.parent} is outside the dataset's folders)"
        return scanner.records, report, scanner.names
    try:
        _save(cache, scanner.records, meta)
        report.cache = "written"
    except OSError as exc:
        report.cache = f"not written ({exc.strerror or exc.__class__.__name__})"
    return scanner.records, report, scanner.names


def cache_path(anchor: Path) -> Path:
    """Where the cache of the split anchored at ``anchor`` (a label folder, json or list) goes."""
    return anchor.parent / ((anchor.stem if anchor.is_file() else anchor.name) + CACHE_SUFFIX)
