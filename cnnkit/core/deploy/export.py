"""``cnnkit export``: a checkpoint's inference graph to ONNX (or TorchScript), with the metadata a
user needs to run it, checked against torch with onnxruntime before it is kept.

What the graph computes is the task's ``export_module`` (probabilities for classifiers, decoded
boxes and class scores for YOLO, torchvision's detections for its Faster R-CNNs, embeddings,
stylized images). ONNX files are written by torch's TorchScript-based exporter
(``dynamo=False``): it is the path torchvision's detection models are made for, and it needs no
``onnxscript``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from cnnkit.core.base.atomic import Terminated, atomic_path, sigterm_unwinds
from cnnkit.core.base.config import check_value
from cnnkit.core.base.errors import CnnkitError, Interrupted
from cnnkit.core.base.paths import writable_file
from cnnkit.core.data.pixels import RAW
from cnnkit.core.deploy.formats import META_KEY, format_named
from cnnkit.core.deploy.onnxrun import first_line, open_session
from cnnkit.core.weights.checkpoint import state_fingerprint

TOLERANCE = 1e-3  # largest difference from torch, per output, relative to its scale (at least 1)
MIN_OPSET = 7  # torch's oldest ONNX opset


def check_opset(opset: int) -> None:
    """``--opset`` within what this torch and onnx write."""
    if not MIN_OPSET <= opset <= max_opset():
        raise CnnkitError(f"--opset {opset}: this torch and onnx write opsets {MIN_OPSET} to {max_opset()}")


def max_opset() -> int:
    """The newest opset both torch's exporters and the installed onnx write (torch's own table
    where this torch has it; 20, the TorchScript exporter's, where not)."""
    import onnx.defs

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as newest
    except ImportError:
        newest = 20
    return min(int(newest), onnx.defs.onnx_opset_version())


@dataclass
class ExportReport:
    """What ``cnnkit export`` prints."""

    output: str
    format: str
    task: str
    model: str
    input: list[int]
    max_diff: float
    tolerance: float


def encode(value: Any) -> Any:
    """Tensors (nested in dicts and lists) as JSON: ``{"__tensor__": [...], "dtype": "float32"}``."""
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """:func:`encode`'s inverse."""
    if isinstance(value, dict):
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def metadata(task: Any, model: nn.Module, ck: dict[str, Any], img_size: int,
             nms: dict[str, float] | None = None) -> dict[str, str]:
    """The file's metadata: readable keys for any user, and ``cnnkit`` (JSON) to rebuild the task."""
    config = dict(ck["config"], img_size=img_size)
    full = {"model": ck["model"], "task": ck["task"], "classes": list(task.classes or []), "config": config,
            "task_state": task.state, "fingerprint": state_fingerprint(ck["model_state"]),
            "kept_state": task.kept_state(ck["model_state"]),
            "attrs": {**task.export_attrs(model), **({"nms": nms} if nms else {})}}
    mean, std = task.input_norm()
    norm = None if (tuple(mean), tuple(std)) == RAW else {"mean": list(mean), "std": list(std)}
    readable = {"task": ck["task"], "model": ck["model"], "classes": json.dumps(list(task.classes or [])),
                "input": "RGB float in [0, 1], NCHW" + (", then (x - mean) / std" if norm else ""),
                "img_size": str(img_size), "normalization": json.dumps(norm)}
    if "threshold" in task.state:
        readable["threshold"] = str(float(task.state["threshold"]))
    if nms:
        readable["nms"] = json.dumps(nms)
    return {**readable, META_KEY: json.dumps(encode(full))}


def sample_input(task: Any, img_size: int, batch: int) -> torch.Tensor:
    """A test input as the task feeds its model (seeded, so a failed check can be repeated)."""
    x = torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    mean, std = task.input_norm()
    if (tuple(mean), tuple(std)) != RAW:
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x


def outputs_of(value: Any) -> list[np.ndarray]:
    """A module's output (a tensor or a tuple of them) as a list of arrays."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in items]


def max_difference(ours: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """The largest absolute difference over the outputs, and the tolerance of the output it is in
    (:data:`TOLERANCE` times that output's largest magnitude, at least 1: scores in [0, 1] are
    judged at 1e-3, boxes of a 416 px input at about 0.4 px). A missing or misshapen output: inf."""
    if len(ours) != len(reference) or any(a.shape != b.shape for a, b in zip(ours, reference)):
        return float("inf"), TOLERANCE
    worst, tolerance = 0.0, TOLERANCE
    for a, b in zip(ours, reference):
        if a.size:
            diff = float(np.abs(a.astype(np.float64) - b).max())
            tol = TOLERANCE * max(1.0, float(np.abs(b).max()))
            if diff / tol > worst / tolerance:
                worst, tolerance = diff, tol
    return worst, tolerance


def row_order(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Detections (outputs sharing their first length N) in one canonical row order: by the
    values of every output's row, rounded (equal scores may come out of NMS in either order)."""
    n = len(outputs[0]) if outputs and outputs[0].ndim else 0
    if n < 2 or any(o.ndim == 0 or len(o) != n for o in outputs):
        return outputs
    keys = np.concatenate([np.round(o.reshape(n, -1).astype(np.float64), 2) for o in outputs], 1)
    order = np.lexsort(keys.T[::-1])
    return [o[order] for o in outputs]


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """File descriptor 1 to /dev/null: torch's TorchScript-based exporter prints its whole graph
    (tens of KB) on stdout from C++ when one of its passes fails, even where the other exporter
    then succeeds; stdout is the report's (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError, TypeError):
            ctypes.CDLL(None).fflush(None)  # C stdio's buffer goes to /dev/null, not after it
        os.dup2(saved, 1)
        os.close(saved)


def write_onnx(module: nn.Module, x: torch.Tensor, path: Path, opset: int, axes: dict[int, str],
               meta: dict[str, str]) -> list[np.ndarray]:
    """``module`` as an ONNX file with ``meta`` in its metadata; the file's outputs on ``x`` (onnxruntime)."""
    import onnx

    with warnings.catch_warnings(), torch.no_grad(), _stdout_silenced():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset, input_names=["images"],
                              dynamic_axes={"images": axes} if axes else None, do_constant_folding=True)
        except torch.onnx.OnnxExporterError:  # an op only the torch.export-based exporter translates
            dims = {i: torch.export.Dim(name, min=1 if i == 0 else 32) for i, name in axes.items()}
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=max(opset, 18), verbose=False,
                                        input_names=["images"], dynamic_shapes=({**dims},) if dims else None)
            program.save(str(path), external_data=False)
    graph = onnx.load(str(path))
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    session = open_session(path, "cpu")
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def write_torchscript(module: nn.Module, x: torch.Tensor, path: Path, opset: int, axes: dict[int, str],
                      meta: dict[str, str]) -> list[np.ndarray]:
    """``module`` traced to a TorchScript file with ``meta`` inside; the file's outputs on ``x``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"cnnkit.json": json.dumps(meta)})
        return outputs_of(torch.jit.load(str(path), map_location="cpu")(x))


def export(task: Any, model: nn.Module, ck: dict[str, Any], fmt: str, target: Path, img_size: int | None = None,
           dynamic_batch: bool = False, opset: int = 17, nms: dict[str, float] | None = None) -> ExportReport:
    """Write a loaded model's inference graph (``(task, model, ck)`` as ``load_for_eval`` gives them)
    to ``target`` (see :func:`checked_target`) and check it against torch; a file that differs by more
    than :data:`TOLERANCE` is removed (one clear error). ``nms``: ``{"conf", "iou"}`` to put a
    detector's NMS inside the graph. SIGTERM or SIGINT leaves no file."""
    if nms and not task.export_nms:
        raise CnnkitError(f"--nms: {ck['model']} has no NMS to put in its graph (YOLO and Darknet .cfg detectors do)")
    if dynamic_batch and (nms or not task.batch_export):
        raise CnnkitError(f"{ck['model']}: {'with --nms ' if nms else ''}its graph takes one image at a time; "
                          "drop --dynamic-batch")
    size = int(img_size or task.config.img_size)
    module = task.export_module(model, nms).eval()
    batch = 2 if dynamic_batch else 1
    x = sample_input(task, size, batch)
    axes = {**({0: "batch"} if dynamic_batch else {}), **task.export_axes()}
    meta = metadata(task, model, ck, size, nms)
    try:
        with torch.no_grad():
            reference = outputs_of(module(x))
    except Exception as exc:  # too small for its pooling, or memory: one line naming the size
        raise CnnkitError(f"{'--img-size ' if img_size else 'input size '}{size}: {ck['model']} cannot take "
                          f"{size} x {size} inputs ({first_line(exc)})") from None
    try:
        with sigterm_unwinds(), atomic_path(target) as tmp:
            got = _write(fmt, module, x, tmp, opset, axes, meta, ck["model"])
            diff, tolerance = max_difference(outputs_of(got), reference)
            if not diff <= tolerance:
                diff, tolerance = max_difference(row_order(outputs_of(got)), row_order(reference))
            if not diff <= tolerance:
                raise CnnkitError(f"{target}: the exported graph differs from torch by {diff:.3g} "
                                  f"(tolerance {tolerance:.3g}); nothing was written")
    except Terminated:
        raise Interrupted(f"export stopped by SIGTERM; {target} was not written", signal.SIGTERM) from None
    return ExportReport(str(target), fmt, ck["task"], ck["model"], list(x.shape), diff, tolerance)


def checked_target(checkpoint: str | Path, fmt: str, img_size: int | None, opset: int,
                   out: str | Path | None) -> Path:
    """The output file, once the format, opset, size and output place are known to be usable:
    one line for the first that is not, before any model is loaded or any work done."""
    form = format_named(fmt)
    form.check(opset)
    if img_size is not None:
        check_value("img_size", img_size, " (from --img-size)")
    target = Path(out) if out else Path(checkpoint).with_suffix(form.suffix)
    if target.suffix.lower() != form.suffix:
        raise CnnkitError(f"-o {target}: --format {fmt} writes *{form.suffix} files (the commands that run them "
                          f"know them by it): use -o {target.with_suffix(form.suffix)}")
    try:
        return writable_file(target, "-o" if out else "output file")
    except CnnkitError as exc:
        raise CnnkitError(f"{exc}; choose another place with -o" if not out else str(exc)) from None


def _write(fmt: str, module: nn.Module, x: torch.Tensor, tmp: Path, opset: int, axes: dict[int, str],
           meta: dict[str, str], model: str) -> list[np.ndarray]:
    """Export ``module`` into ``tmp`` and run the file on ``x``; the exporters' many failure types
    are one line naming the model."""
    try:
        return format_named(fmt).write(module, x, tmp, opset, axes, meta)
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"{model}: {fmt} export failed ({first_line(exc)})") from None
