"""Exported files as models: an ``.onnx`` (onnxruntime) or ``.torchscript`` file written by
``cnnkit export`` is loaded like a checkpoint, so ``detect``, ``eval``, ``verify``, ``enroll`` and
``stylize`` run it. The task is rebuilt from the file's metadata; the model is an
:class:`ExportedModel` whose forward runs the file, and tasks ask ``task.inference(model)`` for
the graph to call (the exported file already is that graph)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.deploy.onnxrun import OnnxRunner, first_line, onnx_metadata

SUFFIXES = (".onnx", ".torchscript")


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported file (by its suffix)."""
    return Path(path).suffix.lower() in SUFFIXES


class ExportedModel(nn.Module):
    """Runs an exported graph on tensors: ``forward(x)`` returns a tensor or a tuple of them, on
    ``x``'s device. The attributes the task needs (``embedding_dim``, ...) come from the metadata."""

    exported = True

    def __init__(self, path: Path, attrs: dict[str, Any], device: str = "cpu") -> None:
        super().__init__()
        self.path = path
        for key, value in attrs.items():
            setattr(self, key, value)
        if path.suffix.lower() == ".onnx":
            self.runner, self.script = OnnxRunner(path, device), None
        else:
            self.runner, self.script = None, torch.jit.load(str(path), map_location="cpu")

    def forward(self, x: torch.Tensor) -> Any:
        if self.script is not None:
            out = self.script(x.cpu())
            return tuple(t.to(x.device) for t in out) if isinstance(out, tuple) else out.to(x.device)
        outs = self.runner.run(x.detach().float().cpu().numpy())
        tensors = tuple(torch.from_numpy(o).to(x.device) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata ``cnnkit export`` wrote into an ONNX or TorchScript file."""
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".onnx":
            return onnx_metadata(path)
        files = {"cnnkit.json": ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files["cnnkit.json"] or "{}")
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable exported model ({first_line(exc)})") from None


def read_task(path: str | Path) -> dict[str, str]:
    """``{"task", "model"}`` of an exported file, without opening a session."""
    meta = read_metadata(Path(path))
    if "task" not in meta:
        raise CnnkitError(f"{path}: not written by `cnnkit export` (no cnnkit metadata)")
    return {"task": meta["task"], "model": meta.get("model", "")}


def load_exported(path: str | Path, data: str = "", device: str = "auto") -> tuple[Any, nn.Module, dict[str, Any]]:
    """``(task, model, ck)`` for an exported file, as :func:`cnnkit.core.load.source.load_for_eval`
    returns them for a checkpoint (``ck["model_state"]`` holds only the tensors the task keeps)."""
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.tasks.base import make_task
    from cnnkit.core.deploy.export import META_KEY, decode
    from cnnkit.core.base.registry import models

    path = Path(path)
    meta = read_metadata(path)
    if META_KEY not in meta:
        raise CnnkitError(f"{path}: not written by `cnnkit export` (no cnnkit metadata)")
    info = decode(json.loads(meta[META_KEY]))
    if info["model"] not in models:
        raise CnnkitError(f"{path}: made by model '{info['model']}', which no loaded plugin provides")
    config = TrainConfig.from_dict(info["config"])
    if data:
        config.data, config.val, config.val_fraction = data, data, 0.0
    task = make_task(models.get(info["model"]), config, classes=info["classes"], state=info["task_state"])
    model = ExportedModel(path, info["attrs"], device).eval()
    ck = {"model": info["model"], "task": info["task"], "config": info["config"], "classes": info["classes"],
          "task_state": info["task_state"], "model_state": info["kept_state"], "fingerprint": info["fingerprint"]}
    return task, model, ck
