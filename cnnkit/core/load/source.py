"""Any model source made ready to run: a checkpoint written by ``cnnkit train``, a file written by
``cnnkit export``, or a registered model's name or definition file (``.cfg``) with its published weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.console import notice
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import ModelSpec, is_model_source, models
from cnnkit.core.deploy import exported
from cnnkit.core.models.pretrained import load_entry
from cnnkit.core.tasks.base import Task, from_checkpoint, make_task, refuse_other_task
from cnnkit.core.weights import fetch as weights
from cnnkit.core.weights.checkpoint import load_checkpoint


def load_for_eval(source: str | Path, data: str = "", weights_ref: str | None = None,
                  names: str | None = None, allow_partial: bool = False,
                  expect: str = "") -> tuple[Task, nn.Module, dict[str, Any]]:
    """The task and model to run: a checkpoint written by ``cnnkit train`` (everything comes from it),
    a file written by ``cnnkit export`` (run by onnxruntime or TorchScript), or a registered model's
    name or a definition file a plugin builds (a Darknet ``.cfg``) with its published weights
    (:func:`published_for_eval`). ``data`` overrides the training data. ``expect``: the task the
    calling command runs (``"detect"``); a model of another is refused before its weights load."""
    if is_model_source(source):
        spec = models.get(str(source))
        refuse_other_task(source, spec, expect)
        return published_for_eval(spec, data, weights_ref, names, allow_partial)
    if weights_ref or names or allow_partial:
        raise CnnkitError(f"{source}: a checkpoint carries its own weights and classes; "
                          "--weights and --names go with a model name or a .cfg, as does --allow-partial")
    if exported.is_exported(source):
        task, model, ck = exported.load_exported(source, data)
        refuse_other_task(source, task.spec, expect)
        return task, model, ck
    ck = load_checkpoint(source)
    task, model = from_checkpoint(ck, source, data, expect)
    return task, model, ck


def published_for_eval(spec: ModelSpec, data: str = "", weights_ref: str | None = None,
                       names: str | None = None, allow_partial: bool = False) -> tuple[Task, nn.Module, dict[str, Any]]:
    """``spec`` built with published weights: ``weights_ref`` (a registry name or a file), else the
    model's first registered file (downloaded on first use), else weights that ship in a package
    (``face-resnet``). The classes are ``names`` (a ``.names`` file), else the weights' own list.
    ``allow_partial``: a file may lack tensors (left as built) or bring some the model has no place for."""
    from cnnkit.core.weights.classnames import class_names, read_names

    shipped = "pretrained" in spec.options
    config = TrainConfig(model=spec.name, data=data or spec.default_data, val=data, img_size=spec.img_size,
                         options={"pretrained": True} if shipped and not weights_ref else {},
                         allow_partial=allow_partial,
                         **{k: v for k, v in spec.recipe.items() if k == "batch_size"})
    entry, path = None, None
    if weights_ref:
        entry, path = weights.choose(weights_ref, spec, config.options)
    elif not shipped:
        found = weights.for_model(spec.name)
        if not found:
            raise CnnkitError(f"{spec.name} has no published weights (see `cnnkit weights list`); "
                              "pass --weights FILE, or train it first and use the checkpoint")
        entry = found[0]
    if entry is not None:
        weights.use_variant(entry, spec, config.options)
        config.mean, config.std = list(entry.mean), list(entry.std)  # the input transform they were trained with
        config.weights = entry.name  # a classifier sees its publisher's evaluation transform
        if spec.task == "classify":
            config.img_size = entry.crop
    classes = read_names(names) if names else (class_names(entry.classes) if entry and entry.classes else None)
    task = make_task(spec, config, classes=classes)
    model = task.build_model()
    loaded = None
    if entry is not None:
        loaded, source = load_entry(task, model, entry, path)
        label = f"{entry.name}, {source}"
    elif path is not None:
        loaded, source = task.load_weights(model, str(path)), path
        label = str(path)
    heads = getattr(loaded, "heads", None) or []
    if len(heads) > 2:  # more than a classifier's weight and bias: the file is another network's
        raise CnnkitError(f"{source}: weights do not fit {spec.name}: {len(heads)} tensors differ in shape "
                          f"({', '.join(heads[:3])}, ...); another model's file?")
    if heads:  # run as published: nothing may be re-initialised
        raise CnnkitError(f"{source}: {loaded.heads[0]} does not fit {spec.name} built for "
                          f"{len(task.classes or []) or spec.num_classes} classes; --names must list as many "
                          "classes as the weights have")
    if loaded is not None:  # said once the load is accepted, so a refusal stays one line
        notice(loaded.line(label))
    if task.classes is None:  # no names: the class numbers
        task.classes = [str(i) for i in range(int(getattr(model, "num_classes", 0) or spec.num_classes))]
    model.eval()
    ck = {"model": spec.name, "task": spec.task, "model_state": model.state_dict(), "config": config.to_dict(),
          "classes": list(task.classes), "weights": entry.name if entry else str(path or "")}
    return task, model, ck
