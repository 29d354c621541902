"""Gatys et al. style transfer: optimise the generated image itself against a frozen VGG-19
(average pooling, as the paper; ``--pooling max`` for the original network).

:func:`style_transfer` is the whole method without any I/O: RGB uint8 arrays in, an RGB uint8
array and the loss history out. The ``cnnkit stylize`` command wraps it with files, progress
and MLflow.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from cnnkit.api import CnnkitError, to_image, to_tensor
from cnnkit.plugins.nst.losses import StyleTransferLoss, content_cost, gram
from cnnkit.plugins.nst.vgg import POOLING, VGGFeatures, check_layers

CONTENT_LAYERS = ("conv4_2",)
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
INITS = ("content", "noise", "style")
OPTIMIZERS = {"lbfgs": 1.0, "adam": 0.02}  # name -> default learning rate
# RGB <-> YIQ: luminance Y carries the style, the content keeps its chroma (I, Q)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass
class StyleConfig:
    """Everything that shapes one style-transfer run (logged as MLflow params)."""

    size: int = 512  # long side of the result
    steps: int = 300  # optimiser steps (L-BFGS iterations) per scale
    optimizer: str = "lbfgs"
    lr: float = 0.0  # 0: the optimiser's default
    # alpha/beta = 1e-6 where Gatys et al. use 1e-3..1e-4: the costs are the paper's (eq. 1, 4-5), the
    # activations' scale is not. Their Caffe VGG-19 sees 0-255 pixels minus the mean, torchvision's [0, 1]
    # pixels divided by std ~0.226, so features are k = 255 x 0.226 ~ 57.6 times ours (ReLU convolutions scale
    # with their input), content costs k^2 ~ 3.3e3 and style costs (fourth powers) k^4 times ours: the paper's
    # beta/alpha = 1e3 is ours x k^2, about 3.3e6 (1e4: 3.3e7); our 1e6 is its alpha/beta ~ 3e-3. The networks'
    # weights differ too (trained apart), so k is an estimate: set --style-weight per image.
    content_weight: float = 1.0
    style_weight: float = 1e6
    tv_weight: float = 0.0
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = ()  # lambda_l; empty: equal, summing to 1
    style_blend: tuple[float, ...] = ()  # one weight a style image; empty: equal
    # Defaults, measured with `python bench/nst.py --pooling 50` (128 px, 50 L-BFGS iterations,
    # random VGG-19, style weight 1e8; total loss start -> end): avg+content 437 -> 2.25,
    # avg+noise 3201 -> 11.2, max+content 696 -> 16.6, max+noise 22980 -> 34.3. Pooling follows
    # the paper (avg: it also ends lowest relative to its start); the start is the content photo,
    # not the paper's white noise (--init noise), as it ends 2-5x lower in the same iterations.
    init: str = "content"
    pooling: str = "avg"  # Gatys et al.: VGG's max pooling replaced by average pooling
    preserve_colors: bool = False
    style_scale: float = 1.0  # style images' long side relative to the result's
    scales: tuple[int, ...] = ()  # coarse-to-fine long sides; empty: (size,)
    save_every: int = 0
    amp: bool = False
    seed: int = 0

    def check(self, n_styles: int) -> None:
        """Refuse inconsistent settings with one clear line."""
        if self.optimizer not in OPTIMIZERS:
            raise CnnkitError(f"unknown optimizer '{self.optimizer}' (lbfgs or adam)")
        if self.init not in INITS:
            raise CnnkitError(f"unknown init '{self.init}' ({', '.join(INITS)})")
        if self.pooling not in POOLING:
            raise CnnkitError(f"unknown --pooling '{self.pooling}' ({', '.join(POOLING)})")
        check_layers(list(self.content_layers) + list(self.style_layers))
        if self.style_layer_weights and len(self.style_layer_weights) != len(self.style_layers):
            raise CnnkitError(f"--style-layer-weights has {len(self.style_layer_weights)} value(s) "
                              f"for {len(self.style_layers)} style layer(s)")
        if self.style_blend and len(self.style_blend) != n_styles:
            raise CnnkitError(f"--style-blend has {len(self.style_blend)} weight(s) for {n_styles} style image(s)")
        if self.style_blend and (min(self.style_blend) < 0 or sum(self.style_blend) <= 0):
            raise CnnkitError("--style-blend weights must be >= 0 with a positive sum")
        if min(self.stage_sizes) < 16 or self.style_scale <= 0:
            raise CnnkitError("sizes must be >= 16 px and --style-scale > 0")
        if self.steps < 1:
            raise CnnkitError("--steps must be >= 1")

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(self.scales) or (self.size,)

    @property
    def learning_rate(self) -> float:
        return self.lr or OPTIMIZERS[self.optimizer]

    def layer_weights(self) -> dict[str, float]:
        weights = self.style_layer_weights or (1.0 / len(self.style_layers),) * len(self.style_layers)
        return dict(zip(self.style_layers, weights))

    def blend(self, n_styles: int) -> list[float]:
        weights = self.style_blend or (1.0,) * n_styles
        return [w / sum(weights) for w in weights]


@dataclass
class StyleResult:
    """The stylized image, its final losses and the per-step loss history."""

    image: np.ndarray
    losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    style_image_content_loss: float = 0.0  # the style image's own content loss (a yardstick)


Report = Callable[[int, dict[str, float]], None]  # (global step, losses) after each step
Snapshot = Callable[[int, np.ndarray], None]  # (global step, image) every save_every steps


def fit_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize ``(1, C, H, W)`` so that its longer side is ``long_side`` (aspect kept)."""
    h, w = image.shape[-2:]
    scale = long_side / max(h, w)
    size = (max(round(h * scale), 1), max(round(w * scale), 1))
    return F.interpolate(image, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and spread (Gatys et al. 2016)."""
    return (style_y - style_y.mean()) / style_y.std().clamp_min(1e-6) * content_y.std() + content_y.mean()


class _Stage:
    """The images and loss of one scale: content, styles and the generated image's parametrisation."""

    def __init__(self, vgg: VGGFeatures, config: StyleConfig, content: torch.Tensor,
                 styles: list[torch.Tensor], size: int, autocast: Callable) -> None:
        self.vgg, self.config, self.autocast = vgg, config, autocast
        self.content = fit_long_side(content, size)
        self.shape = self.content.shape[-2:]
        styles = [fit_long_side(s, max(round(size * config.style_scale), 1)) for s in styles]
        if config.preserve_colors:  # luminance only: grey images in, chroma from the content out
            self.content_yiq = rgb_to_yiq(self.content)
            luma = self.content_yiq[:, :1]
            styles = [match_luminance(rgb_to_yiq(s)[:, :1], luma).expand(-1, 3, -1, -1) for s in styles]
            self.content = luma.expand(-1, 3, -1, -1)
        for name, image in [("the content image", self.content)] + [("a style image", s) for s in styles]:
            if min(image.shape[-2:]) < vgg.min_size:
                raise CnnkitError(f"{name} is {image.shape[-1]}x{image.shape[-2]} px at this scale; the VGG layers "
                                  f"used need >= {vgg.min_size} px a side (raise --size, --scales or --style-scale)")
        with torch.no_grad(), autocast():
            targets = self.vgg(self.content)
            grams: dict[str, torch.Tensor] = {}
            for weight, style in zip(config.blend(len(styles)), styles):
                features = self.vgg(style)
                for k in config.style_layers:
                    grams[k] = grams.get(k, 0) + weight * gram(features[k])
            first_style = F.interpolate(styles[0], size=self.shape, mode="bilinear", align_corners=False)
            self.style_content_loss = sum(float(content_cost(self.vgg(first_style)[k], targets[k]).sum())
                                          for k in config.content_layers)
        self.first_style = first_style
        self.loss = StyleTransferLoss(
            content={k: targets[k].detach() for k in config.content_layers},
            grams={k: g.detach() for k, g in grams.items()}, layer_weights=config.layer_weights(),
            content_weight=config.content_weight, style_weight=config.style_weight, tv_weight=config.tv_weight)

    def channels(self) -> int:
        return 1 if self.config.preserve_colors else 3

    def initial(self, previous: torch.Tensor | None, init: str, generator: torch.Generator) -> torch.Tensor:
        """The starting variable: the last scale's result upsampled, or content/noise/style."""
        if previous is not None:
            start = F.interpolate(previous, size=self.shape, mode="bilinear", align_corners=False)
        elif init == "noise":
            start = torch.rand((1, self.channels(), *self.shape), generator=generator).to(self.content)
        else:
            start = (self.content if init == "content" else self.first_style)[:, :self.channels()]
        return start.detach().clone().contiguous()

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """What VGG sees: the variable itself, or the luminance variable as a grey RGB image."""
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The costs of the image that will be written: pixels are clamped to [0, 1] first."""
        image = self.image(x.clamp(0, 1))
        with self.autocast():
            features = self.vgg(image)
        return self.loss(features, image)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The RGB result in [0, 1] (luminance recombined with the content's chroma)."""
        if x.shape[1] == 1:
            return yiq_to_rgb(torch.cat([x, self.content_yiq[:, 1:]], 1)).clamp(0, 1)
        return x.clamp(0, 1)


def _floats(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in parts.items()}


def _optimize(stage: _Stage, x: torch.Tensor, config: StyleConfig, offset: int,
              report: Report, snapshot: Snapshot) -> None:
    """Run ``config.steps`` optimiser steps on ``x`` in place."""
    x.requires_grad_(True)
    every = config.save_every
    if config.optimizer == "adam":
        opt = torch.optim.Adam([x], lr=config.learning_rate)
        for step in range(1, config.steps + 1):
            opt.zero_grad(set_to_none=True)
            parts = stage.losses(x)
            parts["loss"].backward()
            opt.step()
            report(offset + step - 1, _floats(parts))  # the losses before this update
            if every and step % every == 0:
                snapshot(offset + step, to_image(stage.output(x.detach())))
        return
    # L-BFGS: one step() call runs a chunk of iterations (up to save_every) with the
    # strong-Wolfe line search; its history carries over between chunks. A step is reported
    # when its line search is over, with the losses of its last evaluation (step 0: the start).
    chunk = every or config.steps
    opt = torch.optim.LBFGS([x], lr=config.learning_rate, max_iter=chunk,
                            line_search_fn="strong_wolfe")
    pending: dict[str, float] = {}
    reported = [-1]

    def flush() -> None:
        step = int(pending.get("step", -1))
        if step > reported[0]:
            report(offset + step, {k: v for k, v in pending.items() if k != "step"})
            reported[0] = step

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        parts = stage.losses(x)
        parts["loss"].backward()
        iteration = opt.state[x].get("n_iter", 0)
        if iteration > pending.get("step", iteration):
            flush()
        pending.update(_floats(parts), step=iteration)
        return parts["loss"]

    done = 0
    while done < config.steps:
        opt.param_groups[0]["max_iter"] = min(chunk, config.steps - done)
        opt.step(closure)
        flush()
        finished = opt.state[x].get("n_iter", 0)
        if finished == done:  # converged: L-BFGS takes no more steps
            break
        done = finished
        if every and done % every == 0:
            snapshot(offset + done, to_image(stage.output(x.detach())))
    if not torch.isfinite(x).all():
        raise CnnkitError("the image diverged (NaN); lower --style-weight or --lr")


def style_transfer(content: np.ndarray, styles: list[np.ndarray], config: StyleConfig, vgg: VGGFeatures,
                   device: torch.device | str = "cpu", report: Report | None = None,
                   snapshot: Snapshot | None = None) -> StyleResult:
    """Stylize ``content`` (RGB uint8) with ``styles`` blended; coarse-to-fine over ``config.scales``."""
    if not styles:
        raise CnnkitError("give at least one style image")
    config.check(len(styles))
    device = torch.device(device)
    vgg = vgg.with_pooling(config.pooling).to(device)
    history: list[dict[str, float]] = []

    def record(step: int, losses: dict[str, float]) -> None:
        history.append({"step": step, **losses})
        if report is not None:
            report(step, losses)

    def autocast() -> contextlib.AbstractContextManager:
        if not config.amp:
            return contextlib.nullcontext()
        from cnnkit.api import amp_dtype

        return torch.autocast(device.type, dtype=amp_dtype(device))

    generator = torch.Generator().manual_seed(config.seed)
    content_t = to_tensor(content, normalize=False)[None].to(device)
    style_ts = [to_tensor(s, normalize=False)[None].to(device) for s in styles]
    x: torch.Tensor | None = None
    stage: _Stage | None = None
    for i, size in enumerate(config.stage_sizes):
        stage = _Stage(vgg, config, content_t, style_ts, size, autocast)
        x = stage.initial(x, config.init, generator)
        _optimize(stage, x, config, i * (config.steps + 1), record, snapshot or (lambda step, image: None))
        x = x.detach()
    assert stage is not None and x is not None
    result = stage.output(x)
    with torch.no_grad():  # the final losses of the image actually written (clamped to [0, 1])
        final = _floats(stage.losses(x))
    return StyleResult(to_image(result), final, history, stage.style_content_loss)
