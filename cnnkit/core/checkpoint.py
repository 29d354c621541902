"""Checkpoints: plain dicts of tensors and primitives, written atomically, read weights-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnkit.core.atomic import atomic_path
from cnnkit.core.errors import CnnkitError

REQUIRED = ("model", "task", "model_state", "config")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash mid-write leaves the old file intact."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a cnnkit checkpoint with ``weights_only=True``; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors all mean "not a checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CnnkitError(f"{path}: not a readable cnnkit checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise CnnkitError(f"{path}: not a cnnkit checkpoint (no model name, task or weights inside)")
    return ckpt


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a cnnkit checkpoint or a bare state dict file (``--weights PATH``)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable weights file ({exc.__class__.__name__})") from None
    if isinstance(obj, dict) and "model_state" in obj:
        obj = obj["model_state"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CnnkitError(f"{path}: not a state dict of tensors")
    return obj


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], name: str,
                      source: str | Path, strict: bool = True) -> None:
    """Load ``state`` into ``model`` or explain, in one line, why it does not fit."""
    own = model.state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CnnkitError(f"{source}: weights do not fit {name}: {len(wrong)} tensor(s) differ in shape "
                          f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    if strict and (missing or unexpected):
        example = (missing or unexpected)[0]
        raise CnnkitError(f"{source}: weights do not fit {name}: {len(missing)} missing and "
                          f"{len(unexpected)} unexpected tensor(s) (e.g. {example})")
    model.load_state_dict(state, strict=False)
