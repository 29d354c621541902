"""Exported files as models: an ``.onnx`` (onnxruntime) or ``.torchscript`` file written by
``cnnkit export`` is loaded like a checkpoint, so ``detect``, ``eval``, ``verify``, ``enroll`` and
``stylize`` run it. The task is rebuilt from the file's metadata; the model is an
:class:`ExportedModel` whose forward runs the file, and tasks ask ``task.inference(model)`` for
the graph to call (the exported file already is that graph)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.deploy.formats import format_of
from cnnkit.core.deploy.onnxrun import first_line
from cnnkit.core.weights.checkpoint import refuse_non_finite


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported file (by its suffix, :data:`formats.FORMATS`)."""
    return format_of(path) is not None


class ExportedModel(nn.Module):
    """Runs an exported graph on tensors: ``forward(x)`` returns a tensor or a tuple of them, on
    ``x``'s device. The attributes the task needs (``embedding_dim``, ...) come from the metadata."""

    exported = True

    def __init__(self, path: Path, attrs: dict[str, Any], device: str = "cpu") -> None:
        super().__init__()
        self.path = path
        for key, value in attrs.items():
            setattr(self, key, value)
        self.runner = format_of(path).open(path, device)

    def forward(self, x: torch.Tensor) -> Any:
        outs = self.runner.run(x.detach().float().cpu().numpy())
        tensors = tuple(torch.from_numpy(np.asarray(o)).to(x.device) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors


class ScriptRunner:
    """A TorchScript file: ``run(array)`` gives its outputs as arrays."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        self.script = _load_script(path)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.script(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _load_script(path: Path, extra_files: dict[str, str] | None = None) -> Any:
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice, on every run of the file
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})


def weight_arrays(graph: Any) -> dict[str, torch.Tensor]:
    """An ONNX graph's floating-point initializers of more than one value (its weights; a single
    value may be a deliberate bound such as -inf), stored inside the file."""
    import onnx
    from onnx import numpy_helper

    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    return {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float32)) for t in graph.initializer
            if t.data_type in floats and t.data_location != onnx.TensorProto.EXTERNAL and int(np.prod(t.dims)) > 1}


def read_onnx(path: Path, check_weights: bool = False) -> dict[str, str]:
    """An ONNX file's metadata properties; ``check_weights``: refuse NaN or inf weights, naming the tensor."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    if check_weights:
        refuse_non_finite(weight_arrays(graph.graph), path)
    return {p.key: p.value for p in graph.metadata_props}


def read_torchscript(path: Path, check_weights: bool = False) -> dict[str, str]:
    """The metadata ``cnnkit export`` kept in a TorchScript file; ``check_weights`` as :func:`read_onnx`."""
    files = {"cnnkit.json": ""}
    script = _load_script(path, files)
    if check_weights:
        refuse_non_finite(script.state_dict(), path)
    return json.loads(files["cnnkit.json"] or "{}")


def read_metadata(path: Path, check_weights: bool = False) -> dict[str, str]:
    """The metadata ``cnnkit export`` wrote into an exported file; ``check_weights``: refuse a file
    whose weights hold NaN or inf, naming the tensor."""
    if not path.is_file():
        raise CnnkitError(f"{path}: no such file")
    try:
        return format_of(path).read(path, check_weights)
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
    from cnnkit.core.base.registry import models
    from cnnkit.core.deploy.export import decode
    from cnnkit.core.deploy.formats import META_KEY
    from cnnkit.core.tasks.base import make_task

    path = Path(path)
    meta = read_metadata(path, check_weights=True)
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
