"""``--data SPEC`` resolution: a path recognised by its layout, or ``synthetic:NAME?k=v``; and
the explicit splits of a run (``--val PATH``, ``--val-fraction F``, see ``splits.py``).
``?shuffle_labels=SEED`` on any spec gives every image another's labels (``shuffled.py``)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

from cnnkit.core.base import registry
from cnnkit.core.base.errors import CnnkitError

SYNTHETIC_PREFIX = "synthetic:"


def register_builtin(register: Callable[[registry.DatasetSpec], None]) -> None:
    """Register core's own adapters (always present, whatever plugins are loaded)."""
    from cnnkit.core.data import classification, coco, identities, voc, yolo

    DS = registry.DatasetSpec
    register(DS("yolo", "detect", "cnnkit.core.data.yolo:yolo_dataset", yolo.is_yolo,
                "YOLO data.yaml (or a Roboflow YOLO export holding one) with images/ and labels/"))
    register(DS("coco", "detect", "cnnkit.core.data.coco:coco_dataset", coco.is_coco,
                "COCO annotation json, COCO root (annotations/instances_*.json) or Roboflow COCO export"))
    register(DS("voc", "detect", "cnnkit.core.data.voc:voc_dataset", voc.is_voc,
                "Pascal VOC root (Annotations/, JPEGImages/, ImageSets/Main/) or VOCdevkit/"))
    register(DS("identities", "embed", "cnnkit.core.data.identities:identity_dataset",
                identities.is_identity_root, "one folder a person"))
    register(DS("image-folder", "classify", "cnnkit.core.data.classification:image_folder_dataset",
                classification.is_image_folder, "train/ with val/ (or valid/) and test/, one folder a class"))
    for name, task, cls in (("textures", "classify", "Textures"), ("shapes", "detect", "Shapes"),
                            ("glyphs", "embed", "Glyphs")):
        register(DS(f"synthetic:{name}", task, f"cnnkit.core.data.synthetic:{cls}", None,
                    f"built-in synthetic {name}"))


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``synthetic:shapes?n=64&size=96`` -> (``synthetic:shapes``, {n: 64, size: 96})."""
    name, _, query = spec.partition("?")
    params: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        for cast in (int, float):
            try:
                params[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key] = value
    return name, params


def find_dataset(spec: str, tasks: tuple[str, ...] | None = None) -> tuple[registry.DatasetSpec, str, dict[str, Any]]:
    """The adapter for ``spec`` (preferring one of ``tasks``) with its source and parameters."""
    name, params = parse_spec(spec)
    if name.startswith(SYNTHETIC_PREFIX):
        if name not in registry.datasets:
            known = ", ".join(n for n in registry.datasets.names() if n.startswith(SYNTHETIC_PREFIX))
            raise CnnkitError(f"unknown synthetic dataset '{name}' (known: {known})")
        return registry.datasets.get(name), name, params
    path = Path(name)
    if not path.exists():
        raise CnnkitError(f"{path}: no such file or folder")
    first = None
    for _, ds in registry.datasets.items():
        if ds.matches is not None and ds.matches(path):
            if tasks is None or ds.task in tasks:
                return ds, str(path), params
            first = first or ds
    if first is not None:
        return first, str(path), params
    _refuse_empty_folders(path)
    raise CnnkitError(
        f"{path}: unrecognised data layout (expected a YOLO data.yaml, a COCO json or root, a Roboflow "
        "export, a VOC root, an ImageFolder root with train/ and val/, an identity root, or synthetic:NAME)")


def _refuse_empty_folders(path: Path) -> None:
    """A folder of folders that would be an identity root (or a single folder of classes) but for
    folders without images: name them, as the cause of the unrecognised layout."""
    from cnnkit.core.data.images import list_images

    if not path.is_dir() or (path / "train").is_dir():
        return
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    empty = [p.name + "/" for p in folders if not list_images(p)]
    if folders and empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise CnnkitError(f"{path}: {len(empty)} of its {len(folders)} folders hold no images ({shown}); an identity "
                          "root (one folder a person) or a folder of classes needs images directly in each folder: "
                          "add images or remove the empty folders")


def _build(spec: str, split: str, tasks: tuple[str, ...] | None) -> Any:
    ds, source, params = find_dataset(spec, tasks)
    shuffle = params.pop("shuffle_labels", 0)  # any layout: every image takes another's labels
    if tasks is not None and ds.task not in tasks:
        raise CnnkitError(f"--data {spec} is a {ds.task} dataset ({ds.name}); "
                          f"this model needs {' or '.join(tasks)} data")
    build = registry.resolve(ds.build)
    if ds.matches is None:  # synthetic: parameters become keyword arguments
        accepted = set(inspect.signature(build).parameters) - {"split"}
        unknown = set(params) - accepted
        if unknown:
            raise CnnkitError(f"{name_of(spec)}: unknown parameter(s) {', '.join(sorted(unknown))} "
                              f"(accepted: {', '.join(sorted(accepted))})")
        data = build(split=split, **params)
    else:
        data = build(source, split=split, **params)
    if not getattr(data, "source", ""):
        try:
            data.source = f"{spec} {split}"
        except AttributeError:
            pass
    if shuffle:
        from cnnkit.core.data.shuffled import ShuffledLabels

        if isinstance(shuffle, bool) or not isinstance(shuffle, int) or shuffle < 0:
            raise CnnkitError(f"{spec}: shuffle_labels={shuffle} must be a whole number (the permutation's seed)")
        data = ShuffledLabels(data, shuffle)
    return data


def open_dataset(spec: str, split: str = "train", tasks: tuple[str, ...] | None = None, *,
                 val: str = "", val_fraction: float = 0.0, seed: int = 0) -> Any:
    """Build the ``split`` ("train", "val" or "test") of the dataset named by ``spec``; ``tasks``
    limits what fits. ``val`` names another source for the val split (its own val split if it
    has one, else all of it); ``val_fraction`` carves train and val from the training images.
    A missing val split is refused with a line naming both."""
    from cnnkit.core.data import splits

    splits.check_fraction(val, val_fraction)
    if split == "val" and val:
        try:
            return _build(val, "val", tasks)
        except splits.MissingSplit:
            return _build(val, "train", tasks)
    if split in ("train", "val") and val_fraction:
        return splits.carve(_build(spec, "train", tasks), split, val_fraction, seed)
    try:
        return _build(spec, split, tasks)
    except splits.MissingSplit as exc:
        raise splits.no_val(spec, exc) if split == "val" else splits.MissingSplit(f"--data {spec}: {exc}") from None


def name_of(spec: str) -> str:
    return spec.partition("?")[0]
