"""Style-transfer costs as the lecture states them (Gatys et al.).

- content: ``J = 1/2 ||a(C) - a(G)||^2`` at each content layer;
- style: Gram ``G_kk' = sum_ij a_ijk a_ijk'``, ``J^l = 1/(2 n_H n_W n_C)^2 sum (G(S) - G(G))^2``;
- total variation: the sum of squared differences of neighbouring pixels.

Grams are kept divided by ``n_H n_W`` so that a style image of another size compares fairly;
with equal sizes the style cost is exactly the formula above.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _Gram(torch.autograd.Function):
    """``F F^T / n`` with a one-product backward, ``(dG + dG^T) F / n`` (autograd would take two)."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return torch.bmm(f, f.transpose(1, 2)) / f.shape[-1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return torch.bmm(grad + grad.transpose(1, 2), f) / f.shape[-1]


def gram(features: torch.Tensor) -> torch.Tensor:
    """``G / (n_H n_W)`` for ``(B, C, H, W)`` features: ``(B, C, C)``, in float32."""
    b, c, h, w = features.shape
    return _Gram.apply(features.reshape(b, c, h * w).float())


def content_cost(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1/2 ||a(C) - a(G)||^2`` per image: shape ``(B,)``."""
    return 0.5 * (generated.float() - target.float()).pow(2).flatten(1).sum(1)


def style_cost(generated_gram: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """``1/(2 n_H n_W n_C)^2 sum (G(S) - G(G))^2`` from position-normalised Grams: ``(B,)``."""
    c = generated_gram.shape[-1]
    return (generated_gram - target_gram).pow(2).flatten(1).sum(1) / (4 * c * c)


def tv_cost(image: torch.Tensor) -> torch.Tensor:
    """Total variation (squared neighbour differences) per image: ``(B,)``."""
    dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).pow(2).flatten(1).sum(1)
    dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).pow(2).flatten(1).sum(1)
    return dx + dy


class StyleTransferLoss(nn.Module):
    """``alpha J_content + beta sum_l lambda_l J_style^l + gamma TV`` against fixed targets.

    ``content`` maps layer -> target activations (batch 1 or the generated batch size),
    ``grams`` maps layer -> target Gram ``(1, C, C)``. ``forward(features, image)`` returns the
    mean over the batch of each term and their weighted ``loss``.
    """

    def __init__(self, *, content: dict[str, torch.Tensor], grams: dict[str, torch.Tensor],
                 layer_weights: dict[str, float], content_weight: float = 1.0,
                 style_weight: float = 1e6, tv_weight: float = 0.0) -> None:
        super().__init__()
        self.content, self.grams, self.layer_weights = content, grams, layer_weights
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight

    def forward(self, features: dict[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = image.new_zeros(image.shape[0], dtype=torch.float32)
        content = sum((content_cost(features[k], t) for k, t in self.content.items()), zero)
        style = sum((self.layer_weights[k] * style_cost(gram(features[k]), g) for k, g in self.grams.items()), zero)
        tv = tv_cost(image.float()) if self.tv_weight else zero
        parts = {"content": content.mean(), "style": style.mean(), "tv": tv.mean()}
        parts["loss"] = (self.content_weight * parts["content"] + self.style_weight * parts["style"]
                         + self.tv_weight * parts["tv"])
        return parts


class PerceptualLoss(nn.Module):
    """Johnson et al.'s training loss for a stylizer: the output's VGG features against the
    input photo's (content) and the style image's Grams (style), plus total variation.
    ``forward(output, photos)`` returns the terms and their weighted ``loss``."""

    def __init__(self, vgg: nn.Module, grams: dict[str, torch.Tensor], content_layers: list[str],
                 content_weight: float, style_weight: float, tv_weight: float) -> None:
        super().__init__()
        self.vgg, self.content_layers, self.style_layers = vgg, content_layers, list(grams)
        for i, g in enumerate(grams.values()):
            self.register_buffer(f"gram{i}", g)
        self.weights = (content_weight, style_weight, tv_weight)

    def forward(self, output: torch.Tensor, photos: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            targets = self.vgg(photos)
        grams = {k: getattr(self, f"gram{i}") for i, k in enumerate(self.style_layers)}
        criterion = StyleTransferLoss(
            content={k: targets[k] for k in self.content_layers}, grams=grams,
            layer_weights={k: 1.0 / len(grams) for k in grams}, content_weight=self.weights[0],
            style_weight=self.weights[1], tv_weight=self.weights[2])
        return criterion(self.vgg(output), output)


def content_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The registered ``nst_content`` loss: batch mean of ``1/2 ||a(C) - a(G)||^2``."""
    return content_cost(generated, target).mean()


def style_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The registered ``nst_style`` loss between two feature maps (any sizes): batch mean."""
    return style_cost(gram(generated), gram(target)).mean()


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """The registered ``total_variation`` loss: batch mean."""
    return tv_cost(image).mean()
