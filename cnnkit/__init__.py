"""cnnkit: the classic convolutional-network playbook, from Python and from the command line.

    import cnnkit
    cnnkit.list_models(task="detect")                   # registered names, as `cnnkit models`
    net = cnnkit.create_model("vgg16", pretrained=True)  # a torch.nn.Module
    m = cnnkit.load("yolov3-tiny")                       # a name, a checkpoint, a .cfg or an exported file
    r = m.predict("dog.jpg")                             # one result an image: r[0].boxes, .to_json(), .plot()
    run = cnnkit.train("yolov3-tiny", data="data.yaml", epochs=10)   # run.best, run.metrics, run.run_id

Importing this package loads no torch: each name loads what it needs on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "__version__": "cnnkit.core.base.version",
    "list_models": "cnnkit.model",
    "create_model": "cnnkit.model",
    "load": "cnnkit.model",
    "Model": "cnnkit.model",
    "evaluate": "cnnkit.model",
    "export": "cnnkit.model",
    "train": "cnnkit.training",
    "recent_runs": "cnnkit.training",
    "stylize": "cnnkit.plugins.nst.api",
    "Gallery": "cnnkit.plugins.siamese.api",
    "CnnkitError": "cnnkit.core.base.errors",
    "Interrupted": "cnnkit.core.base.errors",
    "Detections": "cnnkit.core.tasks.results",
    "Classification": "cnnkit.core.tasks.results",
    "Embedding": "cnnkit.core.tasks.results",
    "Stylized": "cnnkit.core.tasks.results",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'cnnkit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
