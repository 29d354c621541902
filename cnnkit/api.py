"""What plugins may import: every name the built-in plugins use, and nothing else of cnnkit is a
plugin's to import (``tests/test_import_graph.py`` holds the built-in plugins to it, as a third party is).

Cheap names (the hook marker, the specs, the error) load with this module, so a plugin's
``__init__.py`` can use them without importing torch; every other name loads its module on first
use.

    from cnnkit.api import ModelSpec, hookimpl

    @hookimpl
    def register_models(register):
        register(ModelSpec(name="my-net", task="classify", build="my_plugin.models:my_net"))
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit.core.base.errors import CnnkitError, checked_number
from cnnkit.core.base.hookspecs import hookimpl
from cnnkit.core.base.registry import DatasetSpec, LossSpec, ModelSpec, TaskSpec, WeightsSpec

# name -> "module" (the same name there) or "module:name" (another name there), by wing
_LAZY = {
    # base: registries, settings, device, output places
    "models": "cnnkit.core.base.registry", "weights": "cnnkit.core.base.registry",
    "IMAGENET_MEAN": "cnnkit.core.base.registry", "IMAGENET_STD": "cnnkit.core.base.registry",
    "HALF": "cnnkit.core.base.registry", "resolve": "cnnkit.core.base.registry",
    "load_plugins": "cnnkit.core.base.plugins",
    "check_value": "cnnkit.core.base.config", "resolve_device": "cnnkit.core.base.device",
    "amp_dtype": "cnnkit.core.base.device", "unwrap": "cnnkit.core.base.device",
    "atomic_path": "cnnkit.core.base.atomic", "writable_dir": "cnnkit.core.base.paths",
    "writable_file": "cnnkit.core.base.paths",
    # data: images, datasets, synthetic sets, pixels into tensors
    "read_image": "cnnkit.core.data.images", "write_image": "cnnkit.core.data.images",
    "list_images": "cnnkit.core.data.images", "is_image": "cnnkit.core.data.images",
    "image_paths": "cnnkit.core.data.detection", "DetectionSample": "cnnkit.core.data.detection",
    "open_dataset": "cnnkit.core.data", "paths_of": "cnnkit.core.data.splits", "source_of": "cnnkit.core.data.splits",
    "scanned": "cnnkit.core.data.classification",
    "is_pairs_file": "cnnkit.core.data.identities", "pairs_dataset": "cnnkit.core.data.identities",
    "Synthetic": "cnnkit.core.data.synthetic",
    "Textures": "cnnkit.core.data.synthetic", "background": "cnnkit.core.data.synthetic",
    "overlap": "cnnkit.core.data.synthetic", "sample_rng": "cnnkit.core.data.synthetic",
    "to_tensor": "cnnkit.core.data.pixels", "to_image": "cnnkit.core.data.pixels",
    "to_pixels": "cnnkit.core.data.pixels",
    # weights: checkpoints and published files
    "load_checkpoint": "cnnkit.core.weights.checkpoint", "load_state_dict": "cnnkit.core.weights.checkpoint",
    "load_weights_into": "cnnkit.core.weights.checkpoint", "state_fingerprint": "cnnkit.core.weights.checkpoint",
    "fetch_weights": "cnnkit.core.weights.fetch:fetch",
    # metrics
    "Scorer": "cnnkit.core.metrics.distances", "line_plot": "cnnkit.core.metrics.plots",
    # models: the backbone contract, boxes
    "Backbone": "cnnkit.core.models.backbone", "build_backbone": "cnnkit.core.models.backbone",
    "batched_nms": "cnnkit.core.models.boxes", "box_convert": "cnnkit.core.models.boxes",
    "box_iou": "cnnkit.core.models.boxes", "clip_boxes": "cnnkit.core.models.boxes",
    "nms": "cnnkit.core.models.boxes", "wh_iou": "cnnkit.core.models.boxes",
    # tasks: the base classes a family extends, drawing, what explain asks of a task
    "Task": "cnnkit.core.tasks.base", "MappedDataset": "cnnkit.core.tasks.base",
    "ClassifyTask": "cnnkit.core.tasks.classify", "DetectionTask": "cnnkit.core.tasks.detect",
    "DetectionTransform": "cnnkit.core.tasks.detect", "Prediction": "cnnkit.core.tasks.detect",
    "EmbedTask": "cnnkit.core.tasks.embed", "StylizeTask": "cnnkit.core.tasks.stylize",
    "PALETTE": "cnnkit.core.tasks.draw", "detection_targets": "cnnkit.core.tasks.explaining",
    "producers": "cnnkit.core.tasks.explaining",
    # deploy, load, train: exported files, any model source, video, tracked runs
    "is_exported": "cnnkit.core.deploy.exported", "read_task": "cnnkit.core.deploy.exported",
    "load_for_eval": "cnnkit.core.load.source", "for_inference": "cnnkit.core.load.inference",
    "is_video": "cnnkit.core.load.video", "run_video": "cnnkit.core.load.video:run",
    "source_stem": "cnnkit.core.load.video",
    "tracked_run": "cnnkit.core.train.callbacks",
}

__all__ = ["hookimpl", "ModelSpec", "TaskSpec", "LossSpec", "DatasetSpec", "WeightsSpec", "CnnkitError",
           "checked_number", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnkit.api' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
