"""``cnnkit stylize``: Gatys optimisation (CONTENT STYLE...) or a trained fast stylizer (--model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.api import CnnkitError
from cnnkit.plugins.nst.api import STYLE_LAYERS as DEFAULT_STYLE_LAYERS

STYLE_LAYERS = ",".join(DEFAULT_STYLE_LAYERS)


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _numbers(value: Optional[str], flag: str, cast: Any = float) -> tuple[Any, ...]:
    if not value:
        return ()
    try:
        return tuple(cast(v) for v in _names(value))
    except ValueError:
        raise CnnkitError(f"{flag} takes comma-separated numbers, not '{value}'") from None


def register(app: typer.Typer) -> None:
    @app.command("stylize")
    def stylize_cmd(
        content: str = typer.Argument(..., help="The photo to stylize (or, with --model, a video, camera index "
                                      "or stream URL)."),
        styles: Optional[list[Path]] = typer.Argument(None, help="Style image(s); several are blended."),
        out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output image (default <content>_stylized.png)."),
        model: Optional[Path] = typer.Option(None, "--model", help="A `cnnkit train fast-style` checkpoint: "
                                             "one forward pass instead of optimising."),
        size: Optional[int] = typer.Option(None, "--size", min=16, help="Long side of the result (default 512; "
                                           "with --model the content's own size)."),
        steps: int = typer.Option(300, "--steps", min=1, help="Optimiser steps (L-BFGS iterations) per scale."),
        optimizer: str = typer.Option("lbfgs", "--optimizer", help="lbfgs or adam."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 1 for lbfgs, 0.02 for adam)."),
        content_weight: float = typer.Option(1.0, "--content-weight", help="alpha."),
        style_weight: float = typer.Option(1e6, "--style-weight", help="beta."),
        tv_weight: float = typer.Option(0.0, "--tv-weight", help="Total-variation weight."),
        content_layers: str = typer.Option("conv4_2", "--content-layers", help="Comma-separated VGG-19 layers."),
        style_layers: str = typer.Option(STYLE_LAYERS, "--style-layers", help="Comma-separated VGG-19 layers."),
        style_layer_weights: Optional[str] = typer.Option(None, "--style-layer-weights",
                                                          help="lambda_l per style layer (default equal)."),
        style_blend: Optional[str] = typer.Option(None, "--style-blend",
                                                  help="Weights of the style images, e.g. 0.7,0.3."),
        init: str = typer.Option("content", "--init", help="content, noise (white noise, as Gatys et al.) or style."),
        pooling: str = typer.Option("avg", "--pooling", help="avg (Gatys et al.: VGG's max pooling replaced by "
                                    "average pooling) or max."),
        preserve_colors: bool = typer.Option(False, "--preserve-colors", help="Transfer luminance only; keep "
                                             "the content's colours."),
        style_scale: float = typer.Option(1.0, "--style-scale", help="Style images' size relative to the result's."),
        scales: Optional[str] = typer.Option(None, "--scales", help="Coarse-to-fine long sides, e.g. 256,512."),
        save_every: int = typer.Option(0, "--save-every", min=0, help="Save an intermediate image every N steps."),
        weights: Optional[str] = typer.Option(None, "--weights", help="VGG-19 state dict, or 'random' "
                                              "(default: the ImageNet VGG-19, downloaded on first use)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
        amp: bool = typer.Option(False, "--amp", help="Mixed-precision VGG forward/backward."),
        seed: int = typer.Option(0, "--seed"),
        experiment: str = typer.Option("cnnkit", "--experiment", help="MLflow experiment name."),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
        no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
        as_json: bool = typer.Option(False, "--json", help="Print the final losses and output path as JSON."),
    ) -> None:
        """Stylize CONTENT like STYLE (Gatys et al.), or with a trained fast stylizer (--model)."""
        from cnnkit.api import is_video, source_stem
        from cnnkit.plugins.nst.api import stylize

        video = is_video(content)  # a URL stays a string: Path() would fold its "//"
        out = out or Path(f"{source_stem(content)}_stylized" + (".mp4" if video else ".png"))
        result = stylize(content, list(styles or []), model=model, out=out, size=size, steps=steps,
                         optimizer=optimizer, lr=lr, content_weight=content_weight, style_weight=style_weight,
                         tv_weight=tv_weight, content_layers=_names(content_layers),
                         style_layers=_names(style_layers),
                         style_layer_weights=_numbers(style_layer_weights, "--style-layer-weights"),
                         style_blend=_numbers(style_blend, "--style-blend"), init=init, pooling=pooling,
                         preserve_colors=preserve_colors, style_scale=style_scale,
                         scales=_numbers(scales, "--scales", int), save_every=save_every, weights=weights,
                         device=device, amp=amp, seed=seed, track=not no_track, experiment=experiment,
                         tracking_uri=tracking_uri, verbose=not as_json)
        record = result if isinstance(result, dict) else result.info["cnnkit"]
        if as_json:
            print(json.dumps(record, indent=2))
        else:
            print(f"stylized image: {record['output']}")
