"""What plugin authors may import. Everything else in cnnkit is internal.

Cheap names (the hook marker, the specs, the error) import nothing heavy, so a plugin's
``__init__.py`` can use them; the task base classes and the backbone helpers import torch and
are loaded on first access.

    from cnnkit.api import ModelSpec, hookimpl

    @hookimpl
    def register_models(register):
        register(ModelSpec(name="my-net", task="classify", build="my_plugin.models:my_net"))
"""

from __future__ import annotations

import importlib
from typing import Any

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.hookspecs import hookimpl
from cnnkit.core.base.registry import DatasetSpec, LossSpec, ModelSpec, TaskSpec, WeightsSpec

_LAZY = {
    "Task": "cnnkit.core.tasks.base",
    "MappedDataset": "cnnkit.core.tasks.base",
    "ClassifyTask": "cnnkit.core.tasks.classify",
    "DetectionTask": "cnnkit.core.tasks.detect",
    "EmbedTask": "cnnkit.core.tasks.embed",
    "StylizeTask": "cnnkit.core.tasks.stylize",
    "Backbone": "cnnkit.core.models.backbone",
    "build_backbone": "cnnkit.core.models.backbone",
}

__all__ = ["hookimpl", "ModelSpec", "TaskSpec", "LossSpec", "DatasetSpec", "WeightsSpec", "CnnkitError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnkit.api' has no attribute '{name}'")
