"""The class names published weights were trained with (``WeightsSpec.classes`` names a list),
and Darknet's ``.names`` files."""

from __future__ import annotations

from pathlib import Path

from cnnkit.core.base.errors import CnnkitError

KEYS = ("imagenet", "coco", "coco91", "coco90")


def class_names(key: str) -> list[str]:
    """``imagenet``: ImageNet-1k's 1000 names in index order; ``coco91``: torchvision's detection
    labels (index = COCO category id, ``__background__`` and ``N/A`` included); ``coco``: COCO's 80
    names in Darknet's order (``coco.names``); ``coco90``: ``coco91`` without the background (cnnkit's
    zero-based torchvision Faster R-CNN: index = COCO category id - 1). The lists are torchvision's own."""
    from torchvision.models import _meta

    if key == "imagenet":
        return list(_meta._IMAGENET_CATEGORIES)
    if key == "coco91":
        return list(_meta._COCO_CATEGORIES)
    if key == "coco90":
        return list(_meta._COCO_CATEGORIES[1:])
    if key == "coco":
        return [c for c in _meta._COCO_CATEGORIES if c not in ("__background__", "N/A")]
    raise CnnkitError(f"unknown class list '{key}' (known: {', '.join(KEYS)})")


def read_names(path: str | Path) -> list[str]:
    """A Darknet ``.names`` file: one class name a line (blank lines skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnnkitError(f"--names {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"--names {path}: cannot read it ({exc})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise CnnkitError(f"--names {path}: no class names in it")
    return names
