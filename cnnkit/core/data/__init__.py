"""``--data SPEC`` resolution: a path recognised by its layout, or ``synthetic:NAME?k=v``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

from cnnkit.core import registry
from cnnkit.core.errors import CnnkitError

SYNTHETIC_PREFIX = "synthetic:"


def register_builtin(register: Callable[[registry.DatasetSpec], None]) -> None:
    """Register core's own adapters (always present, whatever plugins are loaded)."""
    from cnnkit.core.data import classification, detection, identities

    DS = registry.DatasetSpec
    register(DS("yolo", "detect", "cnnkit.core.data.detection:yolo_dataset", detection.is_yolo,
                "YOLO data.yaml with images/ and labels/ folders"))
    register(DS("coco", "detect", "cnnkit.core.data.detection:coco_dataset", detection.is_coco,
                "COCO annotation json"))
    register(DS("voc", "detect", "cnnkit.core.data.detection:voc_dataset", detection.is_voc,
                "Pascal VOC root (Annotations/, JPEGImages/, ImageSets/Main/)"))
    register(DS("image-folder", "classify", "cnnkit.core.data.classification:image_folder_dataset",
                classification.is_image_folder, "train/ and val/ with one folder a class"))
    register(DS("identities", "embed", "cnnkit.core.data.identities:identity_dataset",
                identities.is_identity_root, "one folder a person"))
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


def find_dataset(spec: str) -> tuple[registry.DatasetSpec, str, dict[str, Any]]:
    """The adapter for ``spec`` with its source and parameters, or a clear error."""
    name, params = parse_spec(spec)
    if name.startswith(SYNTHETIC_PREFIX):
        if name not in registry.datasets:
            known = ", ".join(n for n in registry.datasets.names() if n.startswith(SYNTHETIC_PREFIX))
            raise CnnkitError(f"unknown synthetic dataset '{name}' (known: {known})")
        return registry.datasets.get(name), name, params
    path = Path(name)
    if not path.exists():
        raise CnnkitError(f"{path}: no such file or folder")
    for _, ds in registry.datasets.items():
        if ds.matches is not None and ds.matches(path):
            return ds, str(path), params
    raise CnnkitError(
        f"{path}: unrecognised data layout (expected a YOLO data.yaml, a COCO json, a VOC root, "
        "an ImageFolder root with train/ and val/, an identity root, or synthetic:NAME)")


def open_dataset(spec: str, split: str = "train", tasks: tuple[str, ...] | None = None) -> Any:
    """Build the ``split`` of the dataset named by ``spec``; ``tasks`` limits what fits."""
    ds, source, params = find_dataset(spec)
    if tasks is not None and ds.task not in tasks:
        raise CnnkitError(f"--data {spec} is a {ds.task} dataset ({ds.name}); this model needs {' or '.join(tasks)} data")
    build = registry.resolve(ds.build)
    if ds.matches is None:  # synthetic: parameters become keyword arguments
        accepted = set(inspect.signature(build).parameters) - {"split"}
        unknown = set(params) - accepted
        if unknown:
            raise CnnkitError(f"{name_of(spec)}: unknown parameter(s) {', '.join(sorted(unknown))} "
                              f"(accepted: {', '.join(sorted(accepted))})")
        return build(split=split, **params)
    return build(source, split=split, **params)


def name_of(spec: str) -> str:
    return spec.partition("?")[0]
