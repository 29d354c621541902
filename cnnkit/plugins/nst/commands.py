"""``cnnkit stylize``: Gatys optimisation (CONTENT STYLE...) or a trained fast stylizer (--model)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.api import CnnkitError

STYLE_LAYERS = "conv1_1,conv2_1,conv3_1,conv4_1,conv5_1"


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
        style_blend: Optional[str] = typer.Option(None, "--style-blend", help="Weights of the style images, e.g. 0.7,0.3."),
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
        from cnnkit.api import writable_dir, writable_file

        from cnnkit.api import check_value
        from cnnkit.api import is_video, source_stem

        if lr is not None:
            check_value("lr", lr, " (from --lr)")
        video = is_video(content)  # a URL stays a string: Path() would fold its "//"
        out = writable_file(out or Path(f"{source_stem(content)}_stylized" + (".mp4" if video else ".png")), "-o")
        if save_every:
            writable_dir(out.with_name(f"{out.stem}_steps"), "-o steps folder")
        if model is not None:
            if styles:
                raise CnnkitError("--model stylizes with the style it was trained on: give no STYLE images")
            result = _fast(content, model, out, size, device, video)
        elif not styles:
            raise CnnkitError("give one or more STYLE images (or --model fast.pt)")
        else:
            from cnnkit.plugins.nst.stylize import StyleConfig

            config = StyleConfig(
                size=size or 512, steps=steps, optimizer=optimizer.lower(), lr=lr or 0.0,
                content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                content_layers=_names(content_layers), style_layers=_names(style_layers),
                style_layer_weights=_numbers(style_layer_weights, "--style-layer-weights"),
                style_blend=_numbers(style_blend, "--style-blend"), init=init, pooling=pooling,
                preserve_colors=preserve_colors,
                style_scale=style_scale, scales=_numbers(scales, "--scales", int), save_every=save_every,
                amp=amp, seed=seed)
            result = _gatys(Path(content), list(styles), out, config, weights or "", device,
                            experiment, tracking_uri or "", not no_track, as_json)
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            print(f"stylized image: {result['output']}")


def _fast(content: str, checkpoint: Path, out: Path, size: Optional[int], device: str,
          video: bool = False) -> dict[str, Any]:
    """One forward pass of a trained transformation network (a frame at a time for a video)."""
    from cnnkit.api import load_checkpoint
    from cnnkit.api import read_image, write_image
    from cnnkit.api import resolve_device
    from cnnkit.api import load_for_eval
    from cnnkit.api import is_exported, read_task
    from cnnkit.api import for_inference

    kind = (read_task if is_exported(checkpoint) else load_checkpoint)(checkpoint)["task"]
    if kind != "stylize":
        raise CnnkitError(f"{checkpoint}: a '{kind}' checkpoint, not a fast-style one")
    task, net, _ = load_for_eval(checkpoint)
    dev = resolve_device(device)
    net = for_inference(net, dev, channels_last=False)  # NCHW: measured faster for this network
    if video:
        from cnnkit.api import run_video as run

        def frame(image: Any) -> tuple[dict[str, Any], Any]:
            return {}, task.predict(net, [_resized(image, size)], dev)[0]

        frames = run(content, frame, out)
        return {"output": str(out), "model": str(checkpoint), "style": task.state.get("style", ""), "frames": frames}
    image = _resized(read_image(content), size)
    start = time.perf_counter()
    stylized = task.predict(net.to(dev), [image], dev)[0]
    ms = (time.perf_counter() - start) * 1000
    write_image(out, stylized)
    return {"output": str(out), "model": str(checkpoint), "style": task.state.get("style", ""),
            "size": list(stylized.shape[:2]), "ms": ms}


def _resized(image: Any, size: Optional[int]) -> Any:
    """``image`` with its long side ``size`` (unchanged when no size is given)."""
    if not size:
        return image
    import cv2

    scale = size / max(image.shape[:2])
    return cv2.resize(image, (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _gatys(content: Path, styles: list[Path], out: Path, config: Any, weights: str, device: str,
           experiment: str, tracking_uri: str, track: bool, quiet: bool) -> dict[str, Any]:
    """Optimise the image with progress, intermediate images and an MLflow run."""
    from cnnkit.api import tracked_run
    from cnnkit.api import read_image, write_image
    from cnnkit.api import resolve_device
    from cnnkit.plugins.nst.stylize import style_transfer
    from cnnkit.plugins.nst.vgg import VGGFeatures

    content_image = read_image(content)
    style_images = [read_image(s) for s in styles]
    config.check(len(styles))
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"):
        raise CnnkitError(f"{out}: the output must be an image file (.png, .jpg, ...)")
    dev = resolve_device(device)
    vgg = VGGFeatures(list(config.content_layers) + list(config.style_layers), weights, seed=config.seed,
                      pooling=config.pooling)
    steps_dir = out.with_name(f"{out.stem}_steps")
    run = tracked_run(f"stylize-{content.stem}-{time.strftime('%Y%m%d-%H%M%S')}",
                      {**dataclasses.asdict(config), "content": str(content), "styles": [str(s) for s in styles],
                       "weights": weights or "imagenet", "device": str(dev), "output": str(out)},
                      {"cnnkit.plugin": "nst", "cnnkit.model": "gatys", "cnnkit.task": "stylize",
                       "cnnkit.key_metric": "loss"},
                      track=track, uri=tracking_uri, experiment=experiment, progress=not quiet)
    total = len(config.stage_sizes) * config.steps

    def report(step: int, losses: dict[str, float]) -> None:
        run.emit("on_step", losses, min(step - step // (config.steps + 1), total))
        run.log_metrics({f"{k}_loss" if k != "loss" else k: v for k, v in losses.items()}, step)

    def snapshot(step: int, image: Any) -> None:
        run.log_artifact(write_image(steps_dir / f"step_{step:05d}.png", image), "intermediate")

    start = time.perf_counter()
    with run:
        run.emit("on_epoch_start", "stylize", total)
        result = style_transfer(content_image, style_images, config, vgg, dev, report, snapshot)
        write_image(out, result.image)
        run.log_artifact(out)
        if result.history:
            run.log_figure(_curves(result.history), "loss_curves.png")
        run.log_metrics({f"final_{k}": v for k, v in result.losses.items()}, total)
    first = result.history[0] if result.history else {}
    return {"output": str(out), "losses": result.losses,
            "initial_losses": {k: v for k, v in first.items() if k != "step"},
            "style_image_content_loss": result.style_image_content_loss,
            "steps": len(result.history), "seconds": time.perf_counter() - start,
            "size": list(result.image.shape[:2]), "mlflow_run": run.run_id or None}


def _curves(history: list[dict[str, float]]) -> Any:
    """Content, style and total-variation losses per step (log scale)."""
    from cnnkit.api import line_plot

    series = {key: [h[key] for h in history] for key in ("content", "style", "tv", "loss")}
    return line_plot([h["step"] for h in history], {k: v for k, v in series.items() if any(x > 0 for x in v)},
                     "step", log=True)
