"""The ``perceptual`` loss factory for ``cnnkit train fast-style``: a frozen VGG-16 (Johnson et al.
2016; ``--vgg vgg19`` for the deeper one) and the style image's Grams, with the style settings
recorded in the checkpoint's task state."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.api import CnnkitError, checked_number, read_image, to_tensor
from cnnkit.plugins.nst.losses import PerceptualLoss, gram
from cnnkit.plugins.nst.stylize import fit_long_side
from cnnkit.plugins.nst.vgg import VGGFeatures, check_layers, resolve_weights

DEFAULT_STYLE = "synthetic:textures"  # a built-in texture, so the model trains with no files at all


def layer_names(value: Any) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def style_state(task: Any) -> dict[str, Any]:
    """The style settings of a new run (checked: files exist, layers are the VGG's, weights are numbers)."""
    state = {"style": str(task.option("style") or DEFAULT_STYLE), "vgg": str(task.option("vgg")),
             "style_size": int(task.option("style_size") or task.config.img_size)}
    for key in ("content_weight", "style_weight", "tv_weight"):
        state[key] = checked_number(task.option(key), f"--{key.replace('_', '-')}", "a finite number, 0 or more",
                                    lambda v: 0 <= v < math.inf)
    state["content_layers"] = ",".join(layer_names(task.option("content_layers")))
    state["style_layers"] = ",".join(layer_names(task.option("style_layers")))
    check_layers(layer_names(state["content_layers"]) + layer_names(state["style_layers"]), state["vgg"])
    if state["style"] != DEFAULT_STYLE and not Path(state["style"]).is_file():
        raise CnnkitError(f"--style {state['style']}: no such file")
    return state


def style_image(style: str) -> np.ndarray:
    if style == DEFAULT_STYLE:
        from cnnkit.api import Textures

        return Textures(split="val", n=32, size=256)[5][0]  # rings
    return read_image(style)


def perceptual(model: nn.Module, task: Any) -> PerceptualLoss:
    """Build the loss once per run; a resumed run keeps the style recorded in its checkpoint."""
    if "style" not in task.state:
        task.state.update(style_state(task))
    state = task.state
    content, style = layer_names(state["content_layers"]), layer_names(state["style_layers"])
    arch = state.get("vgg", "vgg19")  # checkpoints from before the VGG-16 default were trained on VGG-19
    weights = resolve_weights(str(task.option("vgg_weights")), arch, "--vgg-weights")  # fail before training
    vgg = VGGFeatures(content + style, weights, seed=task.config.seed, arch=arch)
    image = fit_long_side(to_tensor(style_image(state["style"]), normalize=False)[None], state["style_size"])
    with torch.no_grad():
        features = vgg(image)
    loss = PerceptualLoss(vgg, {k: gram(features[k]) for k in style}, content, state["content_weight"],
                          state["style_weight"], state["tv_weight"])
    loss.style_image = image  # `cnnkit explain` shows the style layers' maps of it
    return loss
