"""Classification loss: cross-entropy with label smoothing, plus weighted auxiliary heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ClassificationLoss(nn.Module):
    """Cross-entropy on the main logits; during training, networks with auxiliary classifiers
    (GoogLeNet, Inception-v3) return ``(logits, aux, ...)`` and each aux term is weighted."""

    def __init__(self, label_smoothing: float = 0.0, aux_weight: float = 0.3) -> None:
        super().__init__()
        self.label_smoothing, self.aux_weight = label_smoothing, aux_weight

    def forward(self, outputs: torch.Tensor | tuple[torch.Tensor, ...], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        main, *aux = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        losses = {"cls": F.cross_entropy(main, targets, label_smoothing=self.label_smoothing)}
        if aux:
            losses["aux"] = sum(F.cross_entropy(a, targets, label_smoothing=self.label_smoothing) for a in aux)
        losses["loss"] = losses["cls"] + self.aux_weight * losses.get("aux", 0.0)
        return losses
