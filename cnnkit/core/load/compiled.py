"""Compiled graphs: a model source's inference graph exported once (``cnnkit export --nms``, checked
against torch with onnxruntime) and kept in ``$CNNKIT_CACHE/compiled``, so later runs on the CPU
load it with onnxruntime and never import torch (:mod:`cnnkit.core.load.lite`).

An entry is keyed by what decides its numbers, all read without torch: cnnkit's version, the source
(a registered model and its weights file's SHA-256, a ``.cfg``'s text, a checkpoint's path, size and
modification time), the ``--names`` file, the input size and the NMS IoU. Its name also carries the
score threshold inside the graph, which serves every threshold at or above it (class-wise NMS
never lets a box below a threshold suppress one above it). A source whose graph needs torch to
read (a classifier, R-CNN's proposals) is remembered as such, so it is not tried again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.base.console import notice
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.paths import cache_root
from cnnkit.core.base.registry import models, weights
from cnnkit.core.base.version import __version__
from cnnkit.core.weights.fetch import cache_path, known_sha256

FOLDER = "compiled"


def _file_key(path: str | Path) -> dict[str, Any]:
    """A file by place, size and modification time (a changed or replaced file gets a new key)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _text_key(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _weights_key(ref: str | None, model: str) -> dict[str, Any] | None:
    """The weights a registered model or .cfg runs with: a registry entry by its file's SHA-256
    (None while the file is not in the cache: the torch path downloads it), or a file by its stat."""
    if ref and Path(ref).is_file():
        return _file_key(ref)
    if ref and ref in weights:
        entry = weights.get(ref)
    else:
        found = [w for _, w in weights.items() if w.model == model] if model in models else []
        if ref or not found:
            return None
        entry = found[0]
    path = cache_path(entry)
    if not path.is_file():
        return None
    return {"entry": entry.name, "sha256": entry.sha256 or known_sha256(path)}


def source_key(source: str, weights_ref: str | None = None, names: str | None = None) -> dict[str, Any] | None:
    """What a graph compiled from ``source`` depends on, or None when it cannot be told cheaply."""
    key: dict[str, Any]
    if models.is_definition_file(source):
        key = {"cfg": _text_key(source), "weights": _weights_key(weights_ref, "")}
        if key["weights"] is None:
            return None
    elif source in models and not Path(source).exists():
        key = {"model": models.get(source).name, "weights": _weights_key(weights_ref, models.get(source).name)}
        if key["weights"] is None:
            return None
    elif Path(source).is_file() and not weights_ref and not names:
        key = {"checkpoint": _file_key(source)}
    else:
        return None
    if names:
        key["names"] = _text_key(names)
    return key


class CompiledGraphs:
    """The cache folder: entries ``<key>-conf<T>.onnx``, and ``<key>.torch`` for a source that has none."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or cache_root()) / FOLDER

    def key(self, source_key: dict[str, Any], img_size: int | None, iou: float) -> str:
        text = json.dumps({"cnnkit": __version__, "source": source_key, "img_size": img_size, "iou": iou},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def find(self, key: str, conf: float) -> Path | None:
        """The entry whose threshold is the highest at or below ``conf``."""
        best: tuple[float, Path] | None = None
        for path in self.root.glob(f"{key}-conf*.onnx"):
            try:
                floor = float(path.stem.rsplit("-conf", 1)[1])
            except ValueError:
                continue
            if floor <= conf and (best is None or floor > best[0]):
                best = (floor, path)
        return best[1] if best else None

    def needs_torch(self, key: str) -> bool:
        return (self.root / f"{key}.torch").exists()

    def mark_torch(self, key: str, reason: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.root / f"{key}.torch") as tmp:
            tmp.write_text(reason)

    def target(self, key: str, conf: float) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{key}-conf{conf:g}.onnx"


def compiled_graph(source: str, weights_ref: str | None = None, names: str | None = None,
                   img_size: int | None = None, conf: float = 0.25, iou: float = 0.45,
                   cache: CompiledGraphs | None = None) -> Path | None:
    """The compiled graph of ``source`` for these settings, exported now if missing; None when the
    source's graph needs torch to read or its key cannot be told without loading it."""
    found = source_key(source, weights_ref, names)
    if found is None:
        return None
    cache = cache or CompiledGraphs()
    key = cache.key(found, img_size, iou)
    path = cache.find(key, conf)
    if path is not None:
        return path
    if cache.needs_torch(key):
        return None
    from cnnkit.core.deploy.export import export
    from cnnkit.core.load.source import load_for_eval

    task, model, ck = load_for_eval(source, weights_ref=weights_ref, names=names)
    if not task.export_nms or getattr(model, "exported", False):
        cache.mark_torch(key, f"{ck['model']}: a {ck['task']} graph without NMS inside")
        return None
    target = cache.target(key, conf)
    notice(f"compiling {source} for onnxruntime, once: {target}")
    try:
        export(task, model, ck, "onnx", target, img_size, nms={"conf": conf, "iou": iou})
    except CnnkitError as exc:
        cache.mark_torch(key, str(exc))
        return None
    return target
