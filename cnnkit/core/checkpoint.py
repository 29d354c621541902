"""Checkpoints: plain dicts of tensors and primitives, written atomically, read weights-only."""

from __future__ import annotations

import os
import random
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from cnnkit.core.atomic import atomic_path
from cnnkit.core.errors import CnnkitError

REQUIRED = ("model", "task", "model_state", "config")


@contextmanager
def _writing(path: str | Path) -> Iterator[Path]:
    """``atomic_path`` for a checkpoint: a write the file system refuses (disk full, ``ulimit -f``,
    permissions) leaves the old file intact and no temporary file, and is one line."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as exc:
        raise CnnkitError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # torch's own writer: "file write failed", "unexpected pos ..."
        raise CnnkitError(f"cannot write checkpoint {path}: the write was cut short (disk full or over a "
                          f"file size limit?); any previous {Path(path).name} is kept") from None


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash mid-write leaves the old file intact."""
    with _writing(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def copy_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Make ``target`` hold what ``source`` holds, atomically, without serialising again
    (a hard link where the filesystem allows, else a copy)."""
    with _writing(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    return Path(target)


def load_error(exc: Exception) -> str:
    """Why ``torch.load`` refused a file, without PyTorch's advice to retry with ``weights_only=False``
    (which would run whatever code the file carries)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [line for line in lines[1:] if "weights_only" not in line and "documentation" not in line]
        reason = lines[0] if lines else "it holds objects other than tensors and plain values"
        return f"it holds Python objects that a safe load refuses: {reason[:200]}"
    return lines[0][:200] if lines else exc.__class__.__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a cnnkit checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint"
        raise CnnkitError(f"{path}: not a readable cnnkit checkpoint ({load_error(exc)})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise CnnkitError(f"{path}: not a cnnkit checkpoint (no model name, task or weights inside)")
    return ckpt


def run_folder(checkpoint: str | Path) -> str:
    """The run folder a checkpoint sits in (``RUN/weights/last.pt`` -> ``RUN``), where ``--resume``
    continues: the checkpoint's stored ``out`` is where it was made, not where it is now (a copy, a
    run moved, another working directory)."""
    folder = Path(checkpoint).parent
    return str(folder.parent if folder.name == "weights" else folder)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a cnnkit checkpoint or a bare state dict file (``--weights PATH``)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable weights file ({load_error(exc)})") from None
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnkitError(f"{path}: not a state dict of tensors")
    return obj


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
                      source: str | Path, strict: bool = True) -> int:
    """Load ``state`` into ``model``; returns how many tensors were loaded.

    ``strict``: every tensor must fit (resume, eval). Otherwise (fine-tuning from ``--weights``)
    tensors whose name or shape differ, such as a classifier head for another number of classes,
    are skipped, but at least half of the model must fit. Either way a misfit is one clear line.
    """
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if strict and len(fits) != len(own):
        if wrong:
            k = wrong[0]
            raise CnnkitError(f"{source}: weights do not fit {name}: {len(wrong)} tensor(s) differ in shape "
                              f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        missing = [k for k in own if k not in state]
        raise CnnkitError(f"{source}: weights do not fit {name}: {len(missing)} tensor(s) missing "
                          f"(e.g. {missing[0]})")
    if not strict and len(fits) < len(own) / 2:
        raise CnnkitError(f"{source}: weights do not fit {name}: only {len(fits)} of its {len(own)} "
                          "tensors match by name and shape")
    model.load_state_dict(fits, strict=False)
    return len(fits)


def rng_state() -> dict[str, Any]:
    """torch, Python and NumPy RNG states as tensors and primitives (a checkpoint can hold them)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temp files (``.last.pt.*.tmp``, ...) that a killed save left in ``folder``."""
    orphans = sorted(folder.glob(".*.pt.*.tmp")) if folder.is_dir() else []
    for path in orphans:
        path.unlink(missing_ok=True)
    if orphans:
        print(f"removed {len(orphans)} unfinished checkpoint file(s) left in {folder} by a killed run", file=sys.stderr)
    return orphans
