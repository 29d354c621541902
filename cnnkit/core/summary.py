"""Model size: parameter counts (built on the meta device, so no memory or time is spent)."""

from __future__ import annotations

from cnnkit.core.registry import ModelSpec


def count_params(spec: ModelSpec, num_classes: int | None = None) -> int | None:
    """Trainable + frozen parameters of ``spec`` with ``num_classes`` outputs (None if it fails)."""
    import torch

    try:
        with torch.device("meta"):
            model = spec.create(num_classes=num_classes or spec.num_classes)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters())
