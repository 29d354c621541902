"""Classification networks: torchvision builders where they build exactly the paper's network."""

from __future__ import annotations

from typing import Any

from torch import nn


def torchvision_model(*, arch: str, num_classes: int = 1000, weights: Any = None, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(arch)`` with ``weights=None`` unless the caller passes a
    weights enum (downloads only happen when a user asks for them)."""
    import torchvision

    return torchvision.models.get_model(arch, weights=weights, num_classes=num_classes, **kwargs)
