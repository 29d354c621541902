"""Checkpoints: plain dicts of tensors and primitives, written atomically, read weights-only."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator

import numpy as np
import torch

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.base.errors import CnnkitError

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
    except RuntimeError:  # torch's own writer: "file write failed", "unexpected pos ..."
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


@dataclass
class Loaded:
    """What one load took from a file: ``count`` of the model's ``total`` tensors; ``heads`` were
    re-initialised on purpose (the file's shape differs: a classifier for other classes)."""

    count: int
    total: int
    heads: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not in the file: left as built (--allow-partial)
    unused: list[str] = field(default_factory=list)  # in the file, no place in the model (--allow-partial)
    summary: str = ""  # what came from the file, said by a family that reads its own format

    def line(self, origin: str) -> str:
        """The ``weights:`` line the CLI prints: what came from ``origin`` and what did not."""
        if self.summary:
            return f"weights: {self.summary} ({origin})"
        return f"weights: {self} tensors from {origin}{self.notes}"

    def __str__(self) -> str:
        return f"{self.count}/{self.total}"

    @property
    def notes(self) -> str:
        """What did not come from the file ("" when everything did)."""
        text = ""
        if self.heads:
            text += f"; {_few(self.heads)} initialised (shapes differ from the file)"
        if self.missing:
            text += f"; {_few(self.missing)} not in the file, left as built"
        if self.unused:
            text += f"; the file's {_few(self.unused)} not used"
        return text


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without DDP's ``module.`` prefix, keeping the ``_metadata`` versions torch.save wrote
    (a module's ``_load_from_state_dict`` upgrades old key names by them)."""
    meta = getattr(state, "_metadata", None)
    out: Any = OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    if meta is not None:
        out._metadata = OrderedDict((k.removeprefix("module.") if k != "module" else "", v) for k, v in meta.items())
    return out


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
                      source: str | Path, strict: bool = True, allow_partial: bool = False,
                      unused_ok: Collection[str] = ()) -> Loaded:
    """Load ``state`` into ``model`` through the module's own ``load_state_dict`` (so its version
    upgrades run: torchvision's FPN and RPN renames) and say what stayed unloaded.

    ``strict``: every tensor must come from the file (resume, eval). Otherwise (``--weights``,
    ``--pretrained``) a tensor whose shape differs, such as a classifier for another number of
    classes, is a head re-initialised on purpose; a tensor the file lacks, or one the model has no
    place for (another model's file: resnet34's into resnet18), is an error naming it unless
    ``allow_partial`` (then at least half of the model must fit). ``unused_ok``: file tensors
    left out on purpose (the classifier of a backbone's file). A tensor holding NaN or inf is
    refused, naming it. A misfit is one line.
    """
    own = model.state_dict()
    state = _renamed(state)
    refuse_non_finite(state, source)
    heads = [k for k in own if k in state and own[k].shape != state[k].shape]
    if strict and heads:
        k = heads[0]
        raise CnnkitError(f"{source}: weights do not fit {name}: {len(heads)} tensor(s) differ in shape "
                          f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    for k in heads:
        del state[k]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a renamed tensor whose shape differs
        reason = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CnnkitError(f"{source}: weights do not fit {name}: {reason[:200]}") from None
    missing = [k for k in result.missing_keys if k not in heads]
    unused = [k for k in result.unexpected_keys if k not in unused_ok]
    loaded = Loaded(len(own) - len(result.missing_keys), len(own), heads, missing, unused=unused)
    if missing and (strict or not allow_partial):
        hint = "" if strict else " (--allow-partial loads the rest)"
        raise CnnkitError(f"{source}: weights do not fit {name}: {len(missing)} tensor(s) are not in the file "
                          f"and would stay as built: {_few(missing)}{hint}")
    if unused and (strict or not allow_partial):
        hint = "" if strict else " (--allow-partial ignores them)"
        raise CnnkitError(f"{source}: weights do not fit {name}: the file has {len(unused)} tensor(s) {name} "
                          f"has no place for (another model's file?): {_few(unused)}{hint}")
    if loaded.count < len(own) / 2:
        raise CnnkitError(f"{source}: weights do not fit {name}: only {loaded.count} of its {len(own)} "
                          "tensors match by name and shape")
    return loaded


def refuse_non_finite(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """One line naming the first floating-point tensor of ``state`` that holds NaN or inf: such
    weights give NaN outputs (``"prob": NaN``, no detections) rather than an error."""
    for key, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CnnkitError(f"{source}: tensor {key} holds NaN or inf ({bad} of {tensor.numel()} values); "
                                  "refusing weights that cannot give finite outputs")


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict (sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
