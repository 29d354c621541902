"""The backbone contract: a registered model that can serve as another network's trunk exposes
``forward_features(x) -> (B, C, H, W)`` and ``feature_channels`` (``C``), after timm's
``forward_features``/``num_features``, and drops its classifier when built with
``num_classes=0``. Detectors and embedders take their trunks through :func:`build_backbone`."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.registry import models


@runtime_checkable
class Backbone(Protocol):
    """What a model must expose to serve as a trunk."""

    feature_channels: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...


class Trunk(nn.Module):
    """A backbone model as a module: ``forward(x)`` is its ``forward_features(x)``;
    ``out_channels`` (torchvision's name) is its ``feature_channels``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.body = model
        self.out_channels = int(model.feature_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)


def build_backbone(name: str, **kwargs: Any) -> Trunk:
    """The registered model ``name`` built without its classifier, as a :class:`Trunk`.
    Plugins must be loaded (the CLI and the engine load them before any model is built)."""
    model = models.get(name).create(num_classes=0, **kwargs)
    if not isinstance(model, Backbone):
        raise CnnkitError(f"model '{name}' cannot serve as a backbone: it has no forward_features/"
                          "feature_channels")
    return Trunk(model)
