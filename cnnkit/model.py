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
RUNTIMES = ("auto", "torch", "onnxruntime")


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


def create_model(name: str, pretrained: bool = False, num_classes: int | None = None, device: str | None = None,
                 **options: Any) -> Any:
    """A registered model as a ``torch.nn.Module`` (``timm.create_model``'s contract): ``pretrained``
    loads its published weights (downloaded and hash-checked on first use); ``num_classes`` sizes its
    head; ``options`` are the model's architecture options (``shortcut="C"``, ``backbone="vgg16"``);
    ``device``: where it goes (default: where torch builds it, the CPU)."""
    module = _created(name, pretrained, num_classes, options)
    if device is not None:
        from cnnkit.core.base.device import resolve_device

        module.to(resolve_device(device))
    return module


def _created(name: str, pretrained: bool, num_classes: int | None, options: dict[str, Any]) -> Any:
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.tasks.base import make_task

    spec = _registry().get(name)
    if pretrained:
        from cnnkit.core.load.source import published_for_eval

        if num_classes is not None or options:
            raise CnnkitError(f"{name}: published weights come with their own head and options; build with "
                              "pretrained=False to choose num_classes or options")
        return published_for_eval(spec)[1].train()
    task = make_task(spec, TrainConfig(model=spec.name, options=dict(options)),
                     classes=[str(i) for i in range(num_classes)] if num_classes else None)
    return task.build_model()


class TorchRunner:
    """A task and its torch model on a device: predictions as the task makes them."""

    def __init__(self, task: Any, module: Any, device: Any) -> None:
        from cnnkit.core.load.inference import for_inference

        self._task, self.task, self.classes = task, task.spec.task, list(task.classes or [])
        self.batch_size = max(1, min(int(task.config.batch_size), 64))  # the training batch, at most 64
        self.module = for_inference(module, device, channels_last=task.channels_last_inference)
        self.device = device
        task.config.device = str(device)

    def predict(self, images: list[np.ndarray], **kwargs: Any) -> list[Any]:
        import torch

        with torch.no_grad():
            return self._task.predict(self.module, images, self.device, **kwargs)

    def result(self, image: str, pixels: np.ndarray, prediction: Any, **kwargs: Any) -> Any:
        return self._task.result(image, pixels, prediction, **kwargs)


def _lite_runner(source: str, weights: str | None, names: str | None, device: str, runtime: str,
                 settings: dict[str, Any]) -> Any:
    """The onnxruntime runner of ``source`` when it runs without torch (see :mod:`cnnkit.core.load.lite`)."""
    from cnnkit.core.base.hardware import gpu_present
    from cnnkit.core.base.registry import is_model_source
    from cnnkit.core.load.compiled import compiled_graph
    from cnnkit.core.load.lite import open_lite

    if runtime == "torch" or device not in ("cpu", "auto") or (device == "auto" and gpu_present()):
        return None
    if not (runtime == "onnxruntime" or is_model_source(source)):  # a checkpoint runs on torch unless asked
        return None
    path = compiled_graph(source, weights, names, settings.get("img_size"), settings["conf"], settings["iou"])
    return open_lite(path) if path is not None else None


def load(source: str | Path, *, weights: str | None = None, names: str | None = None, device: str = "auto",
         runtime: str = "auto", task: str | None = None, allow_partial: bool = False, verbose: bool = True) -> "Model":
    """A model ready to run: a registered name (its published weights), a checkpoint written by
    ``cnnkit train``, a ``.cfg`` (with ``weights=`` and ``names=`` files) or an exported ``.onnx`` /
    ``.torchscript`` file. It stays loaded between calls. ``runtime``: ``torch``, ``onnxruntime`` (a
    detector on the CPU, its graph compiled once and cached: no torch import), or ``auto``:
    onnxruntime for a registered name or ``.cfg`` on the CPU where it can, torch otherwise
    (checkpoints and exported files run as before unless asked). ``task``: the task the caller
    runs (``"detect"``): a model of another is refused, naming the command that runs it.
    ``allow_partial``: ``weights`` may lack tensors or bring some the model has no place for."""
    if runtime not in RUNTIMES:
        raise CnnkitError(f"runtime {runtime}: choose {', '.join(RUNTIMES)}")
    _registry()
    return Model(str(source), weights, names, device, runtime, verbose, task or "", allow_partial)


def _names_a_source(source: str) -> bool:
    """A registered model, a definition file or an existing file (told without loading it)."""
    from cnnkit.core.base.registry import is_model_source

    return is_model_source(source) or Path(source).is_file()


@dataclass
class _Inputs:
    """Images to predict on: names, and either files or arrays."""

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
    ``module`` the ``torch.nn.Module`` it runs."""

    def __init__(self, source: str, weights: str | None, names: str | None, device: str, runtime: str,
                 verbose: bool, expect: str = "", allow_partial: bool = False) -> None:
        from cnnkit.core.base.registry import is_model_source, models

        self.source, self._weights, self._names = source, weights, names
        self._device, self.runtime, self.verbose = device, runtime, verbose
        self._expect, self._allow_partial = expect, allow_partial
        if expect and is_model_source(source) and models.get(source).task != expect:
            from cnnkit.core.tasks.base import refuse_other_task  # a registered model of another task: refused
                                                                  # before any download
            refuse_other_task(source, models.get(source), expect)
        self._loaded: tuple[Any, Any, dict[str, Any]] | None = None
        self._runners: dict[tuple[Any, ...], Any] = {}
        if runtime == "torch" or allow_partial or not _names_a_source(source):
            self._load()  # bad sources fail here (one line), not at the first prediction

    def _load(self) -> tuple[Any, Any, dict[str, Any]]:
        """(task, torch module, checkpoint dict), loaded once."""
        if self._loaded is None:
            from cnnkit.core.load.source import load_for_eval

            with quiet(not self.verbose):
                self._loaded = load_for_eval(self.source, weights_ref=self._weights, names=self._names,
                                             allow_partial=self._allow_partial, expect=self._expect)
        return self._loaded

    @property
    def module(self) -> Any:
        """The ``torch.nn.Module`` (an exported file's runner for ``.onnx``/``.torchscript``)."""
        return self._load()[1]

    @property
    def name(self) -> str:
        """The registered model it is (or the .cfg it was built from)."""
        return str(self._load()[2]["model"])

    @property
    def task(self) -> str:
        """What it does: classify, detect, embed or stylize."""
        if self._runners and self._loaded is None:
            return next(iter(self._runners.values())).task
        return str(self._load()[2]["task"])

    @property
    def names(self) -> list[str]:
        """Its class names (index order)."""
        if self._runners and self._loaded is None:
            return list(next(iter(self._runners.values())).classes)
        return list(self._load()[0].classes or [])

    def prepare(self, *, conf: float = 0.25, iou: float = 0.45, img_size: int | None = None, **_: Any) -> "Model":
        """Make it ready to predict with these settings now (a detector's graph compiled for
        onnxruntime, or the torch model loaded) rather than at the first ``predict``."""
        self._runner({"conf": conf, "iou": iou, "img_size": img_size})
        return self

    def __repr__(self) -> str:
        return f"Model({self.source!r}, device={self._device!r}, runtime={self.runtime!r})"

    def _runner(self, settings: dict[str, Any]) -> Any:
        lite_key = (settings.get("img_size"), settings["conf"], settings["iou"])
        if lite_key not in self._runners:
            with quiet(not self.verbose):
                runtime = "torch" if self._allow_partial else self.runtime  # compiled graphs take whole files
                runner = _lite_runner(self.source, self._weights, self._names, self._device, runtime, settings)
            if runner is None and self.runtime == "onnxruntime":
                raise CnnkitError(f"{self.source}: runs on torch only (onnxruntime runs detectors on the CPU)")
            if runner is None:
                from cnnkit.core.base.device import resolve_device

                task, module, _ = self._load()
                runner = self._runners.get("torch") or TorchRunner(task, module, resolve_device(self._device))
                self._runners["torch"] = runner
            self._runners[lite_key] = runner
        return self._runners[lite_key]

    def predict(self, images: ImageInput, *, conf: float = 0.25, iou: float = 0.45, img_size: int | None = None,
                top: int = 5, batch_size: int | None = None, stream: bool = False) -> Any:
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
        if (batch_size is not None and batch_size < 1) or top < 1:
            raise CnnkitError("batch_size and top must be 1 or more")
        settings = {"conf": conf, "iou": iou, "img_size": img_size, "top": top}
        found = _inputs(images)
        runner = self._runner(settings)
        settings["batch_size"] = batch_size or runner.batch_size
        results = self._results(runner, found, settings)
        return results if stream else list(results)

    def _results(self, runner: Any, found: _Inputs, settings: dict[str, Any]) -> Iterator[Any]:
        from cnnkit.core.data.images import read_image

        size, done = settings["batch_size"], 0
        for start in range(0, len(found.names), size):
            batch = (found.arrays[start:start + size] if found.arrays is not None
                     else [read_image(p) for p in found.paths[start:start + size]])
            for image, prediction in zip(batch, runner.predict(batch, **settings)):
                yield runner.result(found.names[done], image, prediction, **settings)
                done += 1

    def _pictures(self, images: ImageInput) -> list[tuple[str, np.ndarray]]:
        """(name, RGB array) of every image, all read (and refused) before any work."""
        from cnnkit.core.data.images import read_image

        found = _inputs(images)
        arrays = found.arrays if found.arrays is not None else [read_image(p) for p in found.paths or []]
        return list(zip(found.names, arrays))

    def explain(self, images: ImageInput, *, method: str = "gradcam", target: str | None = None,
                layer: str | None = None, top: int | None = None, conf: float = 0.25, iou: float = 0.45) -> list[Any]:
        """What the network looked at: one ``Explanation`` per decision (a class, a detection, a pair of
        images for an embedder, the style layers for a stylizer), with the map as a numpy array
        (``.map``), the picture (``.overlay``, a PIL image), its ``peak`` and ``top_box``.
        ``method``: gradcam, gradcam++, eigencam, scorecam or integrated-gradients."""
        from cnnkit.core.base.device import resolve_device
        from cnnkit.core.explain import METHODS
        from cnnkit.core.explain import explain as lib

        if method not in METHODS:
            raise CnnkitError(f"--method {method}: choose {', '.join(METHODS)}")
        pictures = self._pictures(images)
        task, module, _ = self._load()
        return lib.explain(task, module, pictures, lib.Options(method, target, layer, top, conf, iou),
                           resolve_device(self._device))

    def feature_maps(self, images: ImageInput, layer: str) -> list[Any]:
        """A grid of ``layer``'s channels for each image (an ``Explanation`` each)."""
        from cnnkit.core.base.device import resolve_device
        from cnnkit.core.explain import explain as lib

        pictures = self._pictures(images)
        task, module, _ = self._load()
        return [lib.feature_maps(task, module, image, layer, name, resolve_device(self._device))
                for name, image in pictures]

    def filters(self) -> Any:
        """The first convolution's kernels as RGB tiles (an ``Explanation``)."""
        from cnnkit.core.explain import explain as lib

        task, module, _ = self._load()
        return lib.first_conv_filters(task, module)

    def evaluate(self, data: str | None = None, *, split: str = "val", batch_size: int = 0) -> dict[str, Any]:
        """Metrics on ``split`` of ``data`` (default: the data it was trained on): the dict
        ``cnnkit eval --json`` prints."""
        from cnnkit.core.base.device import resolve_device
        from cnnkit.core.load.evaluate import evaluate_loaded

        if split not in ("val", "test"):
            raise CnnkitError(f"split {split}: choose val or test")
        task, module, _ = self._load()
        return evaluate_loaded(task, module, resolve_device(self._device), data or "", batch_size, split)

    def export(self, format: str = "onnx", *, out: str | Path | None = None, img_size: int | None = None,
               dynamic_batch: bool = False, opset: int = 17, nms: bool = False, conf: float = 0.25,
               iou: float = 0.45) -> Path:
        """Write the inference graph with its metadata (checked against torch with onnxruntime); the path."""
        return Path(export(self.source, format, out=out, img_size=img_size, dynamic_batch=dynamic_batch,
                           opset=opset, nms=nms, conf=conf, iou=iou).output)


def evaluate(source: str | Path, data: str | None = None, *, split: str = "val", batch_size: int = 0,
             weights: str | None = None, names: str | None = None, allow_partial: bool = False,
             device: str = "auto", track: bool = False,
             experiment: str = "cnnkit", tracking_uri: str | None = None, verbose: bool = True) -> dict[str, Any]:
    """Metrics of any model source on ``split`` of ``data`` (default: the data it was trained on):
    what ``cnnkit eval --json`` prints. ``track``: an ``eval-...`` MLflow run with the metrics and
    the task's figures (ROC and DET curves for embedders)."""
    import time

    if split not in ("val", "test"):
        raise CnnkitError(f"--split {split}: choose val or test")
    if not track:
        model = load(source, weights=weights, names=names, device=device, runtime="torch",
                     allow_partial=allow_partial, verbose=verbose)
        return model.evaluate(data, split=split, batch_size=batch_size)
    from cnnkit.core.train.callbacks import tracked_run

    with tracked_run(f"eval-{Path(source).stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                     {"checkpoint": str(source), "data": data or "", "split": split}, {"cnnkit.eval": "1"},
                     track=True, uri=tracking_uri or "", experiment=experiment, progress=False) as run:
        model = load(source, weights=weights, names=names, device=device, runtime="torch",
                     allow_partial=allow_partial, verbose=verbose)
        metrics = model.evaluate(data, split=split, batch_size=batch_size)
        run.log_metrics({f"{split}_{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=0)
        model._load()[0].log_evaluation(run)
    return metrics


def export(source: str | Path, format: str = "onnx", *, out: str | Path | None = None, img_size: int | None = None,
           dynamic_batch: bool = False, opset: int = 17, nms: bool = False, conf: float = 0.25,
           iou: float = 0.45) -> Any:
    """Export a checkpoint's (or a registered model's) inference graph beside it (or to ``out``),
    checked against torch with onnxruntime; returns the report (``output`` path, input shape,
    largest difference from torch): what ``cnnkit export --json`` prints. Everything asked for
    (format, opset, size, the output's name and place) is checked before the model loads."""
    from cnnkit.core.deploy.export import checked_target
    from cnnkit.core.deploy.export import export as write
    from cnnkit.core.load.source import load_for_eval

    target = checked_target(source, format, img_size, opset, out)
    _registry()
    task, module, ck = load_for_eval(str(source))
    if getattr(module, "exported", False):
        raise CnnkitError(f"{source}: already an exported file; export the checkpoint it came from")
    return write(task, module, ck, format, target, img_size, dynamic_batch, opset,
                 {"conf": conf, "iou": iou} if nms else None)


def describe_models(task: str | None = None, count: bool = False) -> list[dict[str, Any]]:
    """The rows ``cnnkit models --json`` prints: name, task, plugin, parameter counts (ours once
    counted; ``count=True`` builds the models not counted yet) and the paper's."""
    from cnnkit.core.models.summary import param_counts

    list_models(task)  # an unknown task: one line naming the known ones
    specs = [spec for _, spec in _registry().items() if not task or spec.task == task]
    counts = param_counts(specs, count)
    return [{"name": spec.name, "task": spec.task, "plugin": spec.plugin, "params": counts[spec.name],
             "paper_params": spec.paper_params, "aliases": list(spec.aliases), "description": spec.description}
            for spec in specs]


def summary(name: str, img_size: int | None = None, num_classes: int | None = None, **options: Any) -> dict[str, Any]:
    """A registered model's layer table (output shapes, parameters, multiply-adds, the paper's
    figures): what ``cnnkit summary --json`` prints."""
    from cnnkit.core.models.summary import summarize

    return summarize(_registry().get(name), img_size=img_size, num_classes=num_classes, options=options)
