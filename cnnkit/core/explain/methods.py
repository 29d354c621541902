"""The attribution methods, on Captum's primitives (``LayerGradCam``, ``LayerActivation``,
``LayerGradientXActivation``, ``IntegratedGradients``). Captum has Grad-CAM and integrated
gradients; Grad-CAM++, Score-CAM and Eigen-CAM are a few lines on its layer gradients and
activations, each citing its paper's formula. Every method returns a non-negative map at the
layer's resolution (integrated gradients: the input's) for one image."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

IG_STEPS = 32  # Riemann steps of the path integral (Sundararajan et al. use 20-300)
IG_SMOOTH = 0.02  # integrated gradients are per pixel: smoothed by a Gaussian of 2 % of the side
SCORECAM_BATCH = 32

Forward = Callable[[torch.Tensor], torch.Tensor]  # inputs (B, 3, H, W) -> the target's scalar (B,)


def _layer(forward: Forward, layer: nn.Module, x: torch.Tensor, at_input: bool, gradients: bool) -> torch.Tensor:
    from captum.attr import LayerActivation, LayerGradientXActivation

    if gradients:  # multiply_by_inputs=False: the layer's gradients themselves
        method = LayerGradientXActivation(forward, layer, multiply_by_inputs=False)
    else:
        method = LayerActivation(forward, layer)
    return method.attribute(x, attribute_to_layer_input=at_input).detach()


def gradcam(forward: Forward, layer: nn.Module, x: torch.Tensor, at_input: bool) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2): ReLU(sum_k a_k A^k), a_k = the mean gradient of
    the score over channel k's positions (Captum's ``LayerGradCam``)."""
    from captum.attr import LayerGradCam

    cam = LayerGradCam(forward, layer).attribute(x, attribute_to_layer_input=at_input, relu_attributions=True)
    return cam[0, 0].detach()


def gradcam_pp(forward: Forward, layer: nn.Module, x: torch.Tensor, at_input: bool) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19 with the exponential score S = exp(Y), whose
    higher derivatives are powers of the first): alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3),
    w_k = sum_ij alpha_ij ReLU(g_ij), map = ReLU(sum_k w_k A^k)."""
    g = _layer(forward, layer, x, at_input, gradients=True)[0]
    a = _layer(forward, layer, x, at_input, gradients=False)[0]
    g2, g3 = g ** 2, g ** 3
    denominator = 2 * g2 + a.sum((1, 2), keepdim=True) * g3
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * F.relu(g)).sum((1, 2), keepdim=True)
    return F.relu((weights * a).sum(0))


def eigencam(forward: Forward, layer: nn.Module, x: torch.Tensor, at_input: bool) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020, eq. 3): the activations (positions x channels) projected
    on their first right singular vector; its sign is chosen so the map agrees with the summed
    activations. Class-agnostic: every target of an image gets the same map."""
    a = _layer(forward, layer, x, at_input, gradients=False)[0]
    c, h, w = a.shape
    matrix = a.reshape(c, h * w).T.float()
    v = torch.linalg.svd(matrix, full_matrices=False).Vh[0]
    projection = matrix @ v
    if (projection * matrix.sum(1)).sum() < 0:
        projection = -projection
    return F.relu(projection.reshape(h, w))


def scorecam(forward: Forward, layer: nn.Module, x: torch.Tensor, at_input: bool) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020, eq. 6-8): each channel, upsampled and scaled to [0, 1], masks
    the input; w = softmax_k of the target's score on the masked inputs (the baseline's score,
    the same for every k, cancels in the softmax); map = ReLU(sum_k w_k A^k). No gradients."""
    a = _layer(forward, layer, x, at_input, gradients=False)[0]
    masks = F.interpolate(a[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
    low = masks.amin((2, 3), keepdim=True)
    span = masks.amax((2, 3), keepdim=True) - low
    masks = (masks - low) / torch.where(span > 0, span, torch.ones_like(span))
    scores = []
    with torch.no_grad():
        for i in range(0, len(masks), SCORECAM_BATCH):
            scores.append(forward(x * masks[i:i + SCORECAM_BATCH]).float())
    weights = torch.cat(scores).softmax(0)
    return F.relu((weights[:, None, None] * a).sum(0))


def integrated_gradients(forward: Forward, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017, eq. 3, Captum's Riemann sum): the
    attribution of each input value along the straight path from ``baseline`` (a black image);
    the map is the absolute sum over colour channels."""
    from captum.attr import IntegratedGradients

    attributions = IntegratedGradients(forward).attribute(x, baselines=baseline, n_steps=IG_STEPS,
                                                          internal_batch_size=8)
    return attributions[0].sum(0).abs().detach()


LAYER = {"gradcam": gradcam, "gradcam++": gradcam_pp, "eigencam": eigencam, "scorecam": scorecam}


def attribute(method: str, forward: Forward, x: torch.Tensor, layer: nn.Module | None = None,
              at_input: bool = False, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """``method``'s map of ``forward``'s scalar for the one image ``x`` (1, 3, H, W), upsampled to
    H x W (bilinear) and scaled to a maximum of 1 (all zeros stays zeros)."""
    if method == "integrated-gradients":
        from torchvision.transforms.functional import gaussian_blur

        raw = integrated_gradients(forward, x, torch.zeros_like(x) if baseline is None else baseline)
        sigma = max(1.0, IG_SMOOTH * max(raw.shape))
        raw = gaussian_blur(raw[None, None], [2 * int(3 * sigma) + 1] * 2, [sigma, sigma])[0, 0]
    else:
        raw = LAYER[method](forward, layer, x, at_input)
    full = F.interpolate(raw[None, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = full.max()
    return (full / top if top > 0 else torch.zeros_like(full)).clamp(0, 1)
