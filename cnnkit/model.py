"""Models from Python: list and build them (as timm does), load any model source and run it (as
Ultralytics' ``YOLO(...)`` does). The command line's ``detect``, ``classify``, ``eval`` and ``export``
are thin shells over these functions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.core.base.console import quiet
from cnnkit.core.base.errors import CnnkitError

ImageInput = Any  # a path (file or folder), a numpy HxWx3 RGB uint8 array, a PIL image, or a list of them


def _registry() -> Any:
    """The model registry, filled by the plugins."""
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models

    load_plugins()
    return models


def list_models(task: str | None = None) -> list[str]:
    """Registered model names (``cnnkit models``), only those of ``task`` when given (classify, detect, ...)."""
    specs = [spec for _, spec in _registry().items()]
    if task and not any(s.task == task for s in specs):
        raise CnnkitError(f"no models for task '{task}' (tasks: {', '.join(sorted({s.task for s in specs}))})")
    return [s.name for s in specs if not task or s.task == task]


def create_model(name: str, pretrained: bool = False, num_classes: int | None = None, **options: Any) -> Any:
    """A registered model as a ``torch.nn.Module`` (``timm.create_model``'s contract): ``pretrained``
    loads its published weights (downloaded and hash-checked on first use); ``num_classes`` sizes its
    head; ``options`` are the model's architecture options (``shortcut="C"``, ``backbone="vgg16"``)."""
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.tasks.base import make_task

    spec = _registry().get(name)
    if pretrained:
        from cnnkit.core.load.source import published_for_eval

        if num_classes is not None or options:
            raise CnnkitError(f"{name}: pretrained weights come with their own head and options; build with "
                              "pretrained=False to choose num_classes or options")
        _, module, _ = published_for_eval(spec)
        return module.train()
    config = TrainConfig(model=spec.name, options=dict(options))
    task = make_task(spec, config, classes=[str(i) for i in range(num_classes)] if num_classes else None)
    return task.build_model()


def load(source: str | Path, *, weights: str | None = None, names: str | None = None, device: str = "auto",
         verbose: bool = True) -> "Model":
    """A model ready to run: a registered name (its published weights), a checkpoint written by
    ``cnnkit train``, a ``.cfg`` (with ``weights=`` and ``names=`` files) or an exported ``.onnx`` /
    ``.torchscript`` file. It stays loaded between calls."""
    from cnnkit.core.base.device import resolve_device
    from cnnkit.core.load.inference import for_inference
    from cnnkit.core.load.source import load_for_eval

    _registry()
    with quiet(not verbose):
        task, module, checkpoint = load_for_eval(str(source), weights_ref=weights, names=names)
    dev = resolve_device(device)
    for_inference(module, dev, channels_last=task.channels_last_inference)
    task.config.device = str(dev)
    return Model(task, module, checkpoint, str(source), dev, verbose)


@dataclass
class _Inputs:
    """Images to predict on: names, and either files (read in the loader) or arrays."""

    names: list[str]
    paths: list[Path] | None = None
    arrays: list[np.ndarray] | None = None


def _inputs(images: ImageInput) -> _Inputs:
    from cnnkit.core.data.detection import image_paths

    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if all(isinstance(i, (str, Path)) for i in items):
        paths = image_paths(items)
        if not paths:
            raise CnnkitError("no images found in " + ", ".join(map(str, items)))
        return _Inputs([str(p) for p in paths], paths=paths)
    arrays = []
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            raise CnnkitError("give paths or images, not both in one call")
        array = np.asarray(item.convert("RGB")) if hasattr(item, "convert") else np.asarray(item)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise CnnkitError(f"image{i}: expected an RGB uint8 array of shape (H, W, 3), got "
                              f"{array.dtype} {tuple(array.shape)}")
        arrays.append(array)
    return _Inputs([f"image{i}" for i in range(len(arrays))], arrays=arrays)


class Model:
    """A loaded model: ``predict`` images, ``evaluate`` on data, ``export`` to ONNX/TorchScript.
    ``task`` names what it does (classify, detect, embed, stylize), ``names`` its classes and
    ``module`` the ``torch.nn.Module`` (or the exported file's runner)."""

    def __init__(self, task: Any, module: Any, checkpoint: dict[str, Any], source: str, device: Any,
                 verbose: bool = True) -> None:
        self._task, self.module, self.checkpoint = task, module, checkpoint
        self.source, self.device, self.verbose = source, device, verbose

    @property
    def name(self) -> str:
        """The registered model it is (or the .cfg it was built from)."""
        return str(self.checkpoint["model"])

    @property
    def task(self) -> str:
        return str(self.checkpoint["task"])

    @property
    def names(self) -> list[str]:
        """Its class names (index order)."""
        return list(self._task.classes or [])

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task!r}, source={self.source!r}, device='{self.device}')"

    def predict(self, images: ImageInput, *, conf: float = 0.25, iou: float = 0.45, img_size: int | None = None,
                top: int = 5, batch_size: int = 16, stream: bool = False) -> Any:
        """Predictions for ``images`` (a path, a folder, an RGB array, a PIL image, or a list of them):
        a list of results, one an image (``Detections``, ``Classification``, ``Embedding`` or
        ``Stylized``); ``stream=True`` yields them as they come. Detectors take ``conf``/``iou``
        (and ``img_size``), classifiers ``top``."""
        from cnnkit.core.base.config import check_value

        if img_size is not None:
            check_value("img_size", img_size, " (from img_size)")
        for key, value in (("conf", conf), ("iou", iou)):
            if not 0 <= value <= 1:
                raise CnnkitError(f"{key}: {value!r} must be in [0, 1]")
        if batch_size < 1 or top < 1:
            raise CnnkitError("batch_size and top must be 1 or more")
        found = _inputs(images)
        results = self._results(found, conf=conf, iou=iou, img_size=img_size, top=top, batch_size=batch_size)
        return results if stream else list(results)

    def _batches(self, found: _Inputs, batch_size: int) -> Iterator[list[np.ndarray]]:
        if found.arrays is not None:
            for i in range(0, len(found.arrays), batch_size):
                yield found.arrays[i:i + batch_size]
            return
        from cnnkit.core.data.images import ImageFiles

        loader = self._task.loader(ImageFiles(found.paths), train=False, batch_size=batch_size, collate_fn=list,
                                   **({"num_workers": 0} if len(found.paths) <= batch_size else {}))
        for batch in loader:
            bad = next((x for x in batch if isinstance(x, str)), None)
            if bad is not None:
                raise CnnkitError(bad)
            yield batch

    def _results(self, found: _Inputs, **kwargs: Any) -> Iterator[Any]:
        import torch

        done = 0
        with torch.no_grad():
            for batch in self._batches(found, kwargs["batch_size"]):
                predictions = self._task.predict(self.module, batch, self.device, **kwargs)
                for image, prediction in zip(batch, predictions):
                    yield self._task.result(found.names[done], image, prediction, **kwargs)
                    done += 1

    def evaluate(self, data: str | None = None, *, split: str = "val", batch_size: int = 0) -> dict[str, Any]:
        """Metrics on ``split`` of ``data`` (default: the data it was trained on): the dict
        ``cnnkit eval --json`` prints."""
        from cnnkit.core.load.evaluate import evaluate_loaded

        if split not in ("val", "test"):
            raise CnnkitError(f"split {split}: choose val or test")
        return evaluate_loaded(self._task, self.module, self.device, data or "", batch_size, split)

    def export(self, format: str = "onnx", *, out: str | Path | None = None, img_size: int | None = None,
               dynamic_batch: bool = False, opset: int = 17, nms: bool = False, conf: float = 0.25,
               iou: float = 0.45) -> Path:
        """Write the inference graph with its metadata (checked against torch with onnxruntime); the path."""
        return Path(export(self.source, format, out=out, img_size=img_size, dynamic_batch=dynamic_batch,
                           opset=opset, nms=nms, conf=conf, iou=iou).output)


def evaluate(source: str | Path, data: str | None = None, *, split: str = "val", batch_size: int = 0,
             weights: str | None = None, names: str | None = None, device: str = "auto",
             verbose: bool = True) -> dict[str, Any]:
    """Metrics of any model source on ``split`` of ``data``: what ``cnnkit eval --json`` prints."""
    model = load(source, weights=weights, names=names, device=device, verbose=verbose)
    return model.evaluate(data, split=split, batch_size=batch_size)


def export(source: str | Path, format: str = "onnx", *, out: str | Path | None = None, img_size: int | None = None,
           dynamic_batch: bool = False, opset: int = 17, nms: bool = False, conf: float = 0.25,
           iou: float = 0.45) -> Any:
    """Export a checkpoint's (or a registered model's) inference graph; returns the report
    (``output`` path, input shape, largest difference from torch)."""
    from cnnkit.core.deploy.export import export as write

    return write(source, format, img_size, dynamic_batch, opset, out, {"conf": conf, "iou": iou} if nms else None)

