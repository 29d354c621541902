"""Published weights into a model: the model itself, or each of its backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import WeightsSpec, models
from cnnkit.core.weights.fetch import fetch, read_state


def load_entry(task: Any, model: Any, entry: WeightsSpec, path: Path | None = None) -> tuple[Any, Path]:
    """Load ``entry`` (from ``path``, else its cache file, downloaded if needed) into ``model``, or
    into each of its backbones when the weights are a backbone's (Faster R-CNN's 4-step schedule
    starts both of its trunks from them, as the paper does). Returns (what the model or its first
    backbone took from the file, the file)."""
    from cnnkit.core.models.backbone import Trunk
    from cnnkit.core.weights.checkpoint import load_weights_into

    targets = [model]
    if entry.model not in (task.spec.name, *task.spec.aliases):  # a backbone's weights
        targets = [m.body for m in model.modules() if isinstance(m, Trunk)]
        if not targets:
            raise CnnkitError(f"{task.spec.name} does not build its backbone through cnnkit's backbone contract, "
                              f"so {entry.name} has nowhere to go; use --weights PATH")
    path = path or fetch(entry)
    if entry.format == "darknet":  # the family reads its own format
        return task.load_weights(model, str(path)), path
    state = read_state(entry, path)
    partial = bool(task.config.allow_partial)
    loaded = [load_weights_into(t, state, entry.model or task.spec.name, path, strict=False, allow_partial=partial,
                                unused_ok=() if t is model else head_tensors(entry.model, t))
              for t in targets]
    return loaded[0], path


def head_tensors(name: str, trunk: Any) -> set[str]:
    """The tensors of model ``name``'s whole network that its ``trunk`` leaves out (the classifier a
    backbone's file carries), built on the meta device: a file may bring these and nothing else."""
    import torch

    spec = models.get(name)
    with torch.device("meta"):
        whole = spec.create(num_classes=spec.num_classes, **spec.options)
    return set(whole.state_dict()) - set(trunk.state_dict())
