"""Output locations checked before any work starts: a folder or file that cannot be written is
one clear line at once, not a traceback after an epoch of training."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cnnkit.core.base.errors import CnnkitError


def _probe(folder: Path, path: Path, what: str) -> None:
    """Create and delete a file in ``folder`` (permission bits, read-only mounts, full quotas)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".cnnkit-probe-"):
            pass
    except OSError as exc:
        raise CnnkitError(f"{what} {path}: cannot write in {folder} "
                          f"({exc.strerror or exc.__class__.__name__})") from None


def _short(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:20]}...{name[-12:]}"


def _names_fit(path: Path, what: str) -> None:
    """Each name in ``path`` within the file system's limit (``NAME_MAX``, 255 bytes on most), so a
    too-long name is this line, not an ``ENAMETOOLONG`` traceback from the first ``exists()``."""
    try:
        limit = os.pathconf(".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for name in path.parts:
        size = len(os.fsencode(name))
        if size > limit:
            raise CnnkitError(f"{what} {_short(str(path))}: the name {_short(name)} is {size} bytes, "
                              f"over the file system's limit of {limit}")


def _nearest(path: Path, what: str) -> Path:
    """The deepest existing ancestor of ``path``, which must be a folder (it is where mkdir starts)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise CnnkitError(f"{what} {path}: {parent} is a file, not a folder")
            return parent
    raise CnnkitError(f"{what} {path}: no such location")


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that ``path`` is (or can be created as) a folder we can write in; creates nothing."""
    path = Path(path)
    _names_fit(path, what)
    if path.exists():
        if not path.is_dir():
            raise CnnkitError(f"{what} {path}: a file is in the way, not a folder")
        _probe(path, path, what)
    else:
        _probe(_nearest(path, what), path, what)
    return path


def writable_file(path: str | Path, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written (atomically: its folder must take a new file)."""
    path = Path(path)
    _names_fit(path, what)
    if path.is_dir():
        raise CnnkitError(f"{what} {path}: is a folder, not a file")
    _probe(_nearest(path, what), path, what)
    return path


def cache_root() -> Path:
    """cnnkit's own cache: ``$CNNKIT_CACHE``, else ``$XDG_CACHE_HOME/cnnkit`` (``~/.cache/cnnkit``)."""
    root = os.environ.get("CNNKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnkit"
    return Path(root)
