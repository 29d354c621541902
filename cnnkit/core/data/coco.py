"""COCO layouts, recognised from the path a user has:

- an annotation json: its ``val``/``test`` splits are the siblings whose name (or folder) says so
  (``instances_train2017.json`` -> ``instances_val2017.json``, ``train/_annotations.coco.json``
  -> ``valid/_annotations.coco.json``); nothing else stands in for them;
- COCO's own root: ``annotations/instances_<split>.json`` with images in ``<split>/`` beside
  ``annotations/`` or in ``images/<split>/`` (the root, or its ``annotations/`` folder);
- a Roboflow COCO export: ``train/ valid/ test/``, each a ``_annotations.coco.json`` beside its images.

``iscrowd`` annotations become ignore regions. Images are looked for beside the json, in
``images/``, and in ``<split>/`` or ``images/<split>/`` beside its folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.detection import DetectionFiles
from cnnkit.core.data.scan import Scanner, cache_path, cached_scan
from cnnkit.core.data.splits import MissingSplit, sibling_names, split_of

PROBE = 20  # images tried when finding the folder a json's file names are relative to


def _is_json(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".json"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b'"images"' in head or b'"annotations"' in head or b'"categories"' in head


def _root_jsons(folder: Path) -> dict[str, list[Path]]:
    """The split jsons of a COCO root (``[annotations/]instances_*.json``) or of a Roboflow
    export (``<split>/*.json``)."""
    found: dict[str, list[Path]] = {}
    annotations = folder / "annotations" if (folder / "annotations").is_dir() else folder
    if annotations.is_dir():
        for p in sorted(annotations.glob("instances_*.json")):
            split = split_of(p.stem.removeprefix("instances_"))
            if split:
                found.setdefault(split, []).append(p)
    if not found:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            split = split_of(sub.name)
            jsons = [p for p in sorted(sub.glob("*.json")) if _is_json(p)] if split else []
            if jsons:
                found.setdefault(split, []).extend(jsons)
    return found


def is_coco(path: Path) -> bool:
    return _is_json(path) or (path.is_dir() and bool(_root_jsons(path)))


def split_json(source: Path, split: str) -> Path:
    """The annotation json of ``split``, or :class:`MissingSplit` saying where it was looked for."""
    if source.is_file():
        if split == "train":
            return source
        tried = [source.with_name(n) for n in sibling_names(source.name, split)]
        tried += [source.parent.with_name(n) / source.name for n in sibling_names(source.parent.name, split)]
        for path in tried:
            if path.is_file():
                return path
        looked = ", ".join(str(p) for p in tried[:3]) or "a sibling json named for it"
        raise MissingSplit(f"no {split} annotations next to {source}: looked for {looked}")
    jsons = _root_jsons(source)
    if split not in jsons:
        raise MissingSplit(f"{source} has no {split} annotations (found: {', '.join(sorted(jsons)) or 'none'})")
    if len(jsons[split]) > 1:
        raise CnnkitError(f"{source}: several {split} annotation files ({', '.join(p.name for p in jsons[split])}); "
                          "name the one to use with --data (and --val)")
    return jsons[split][0]


def _image_folder(json_path: Path, names: list[str]) -> Path:
    stem = json_path.stem.removeprefix("instances_")
    here, up = json_path.parent, json_path.parent.parent
    candidates = [here, here / "images", up / stem, up / "images" / stem, up / "images", up]
    for folder in candidates:
        if any((folder / n).is_file() for n in names[:PROBE]):
            return folder
    raise CnnkitError(f"{json_path}: none of its images (e.g. {names[0] if names else '?'}) are in "
                      f"{', '.join(str(c) for c in candidates[:4])} or {candidates[4]}")


def _field(record: Any, key: str, where: str, kinds: tuple[type, ...] | None = None) -> Any:
    """``record[key]``, refused in one line naming ``where`` when missing or not one of ``kinds``."""
    if not isinstance(record, dict):
        raise CnnkitError(f"{where}: not an object ({type(record).__name__})")
    if key not in record:
        raise CnnkitError(f"{where}: no '{key}'")
    value = record[key]
    if kinds is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
        raise CnnkitError(f"{where}: '{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _records(data: dict, key: str, path: Path) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise CnnkitError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _ids(records: list, kinds: tuple[type, ...], what: str, path: Path) -> dict[Any, int]:
    """Each record's ``id`` (of ``kinds``) -> its index; a duplicate id is refused with both indices."""
    seen: dict[Any, int] = {}
    for i, record in enumerate(records):
        ident = _field(record, "id", f"{path}: {what} {i}", kinds)
        if ident in seen:
            raise CnnkitError(f"{path}: {what} {i} has the id {ident!r} of {what} {seen[ident]}")
        seen[ident] = i
    return seen


def _where(path: Path, ann: Any, index: int) -> str:
    ident = ann.get("id") if isinstance(ann, dict) else None
    return f"{path}: annotation {index}" + ("" if ident is None else f" (id {ident!r})")


def read_json(path: Path) -> dict:
    """The annotation file, its types and ids checked (every error names the file and the index)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CnnkitError(f"{path}: cannot read COCO json ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CnnkitError(f"{path}: not a COCO annotation file (no 'images' list)")
    _ids(_records(data, "categories", path), (int,), "category", path)
    _ids(data["images"], (int, str), "image", path)
    for i, img in enumerate(data["images"]):
        _field(img, "file_name", f"{path}: image {i}", (str,))
    for i, ann in enumerate(_records(data, "annotations", path)):
        where = _where(path, ann, i)
        _field(ann, "image_id", where, (int, str))
        _field(ann, "category_id", where, (int,))
        bbox = _field(ann, "bbox", where)
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise CnnkitError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
    return data


def coco_dataset(source: str | Path, split: str = "train") -> DetectionFiles:
    """The ``split`` of a COCO json, root folder or Roboflow export."""
    json_path = split_json(Path(source), split)
    source_text = f"COCO {json_path}"

    def scan() -> Scanner:
        data = read_json(json_path)
        categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        classes = [str(_field(c, "name", f"{json_path}: category id {c['id']}")) for c in categories]
        index_of = {c["id"]: i for i, c in enumerate(categories)}
        images = data["images"]
        per_image: dict[Any, list[tuple[list[float], int, int, str]]] = {img["id"]: [] for img in images}
        for i, ann in enumerate(data.get("annotations", [])):
            where = _where(json_path, ann, i)
            image_id, category, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
            if category not in index_of:
                raise CnnkitError(f"{where}: unknown category {category}")
            if image_id not in per_image:
                raise CnnkitError(f"{where}: image_id {image_id} is not among the images")
            x, y, w, h = (float(v) for v in bbox)
            per_image[image_id].append(([x, y, x + w, y + h], index_of[category], 2 if ann.get("iscrowd") else 0,
                                        where))
        scanner = Scanner(source_text, classes)
        folder = str(_image_folder(json_path, [str(img["file_name"]) for img in images]))
        for img in images:
            path = os.path.join(folder, str(img["file_name"]))
            scanner.deps.append(path)
            size = scanner.image_size(path)
            if size is not None:
                scanner.add(path, size, per_image[img["id"]])
        return scanner

    records, report, classes = cached_scan(cache_path(json_path), [str(json_path)], "coco", source_text, scan)
    return DetectionFiles(records, classes, source_text, report)
