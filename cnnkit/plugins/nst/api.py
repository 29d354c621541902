"""Style transfer from Python (``cnnkit.stylize``), as ``cnnkit stylize`` does it (the command is a
shell over :func:`stylize`): Gatys et al.'s optimisation of the image itself, or one forward pass
of a fast stylizer trained with ``cnnkit train fast-style`` (``model=``), on a photo or a video.

    img = cnnkit.stylize("content.jpg", "style.jpg", steps=300)    # a PIL image
    img.info["cnnkit"]["losses"]                                    # what `--json` prints
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from cnnkit.api import CnnkitError

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def stylize(content: str | Path, style: Any = None, *, model: str | Path | None = None,
            out: str | Path | None = None, size: int | None = None, steps: int = 300, optimizer: str = "lbfgs",
            lr: float | None = None, content_weight: float = 1.0, style_weight: float = 1e6, tv_weight: float = 0.0,
            content_layers: tuple[str, ...] = ("conv4_2",), style_layers: tuple[str, ...] = STYLE_LAYERS,
            style_layer_weights: tuple[float, ...] = (), style_blend: tuple[float, ...] = (), init: str = "content",
            pooling: str = "avg", preserve_colors: bool = False, style_scale: float = 1.0,
            scales: tuple[int, ...] = (), save_every: int = 0, weights: str | None = None, device: str = "auto",
            amp: bool = False, seed: int = 0, track: bool = False, experiment: str = "cnnkit",
            tracking_uri: str | None = None, verbose: bool = True) -> Any:
    """``content`` stylized like ``style`` (an image, or a list of them blended by ``style_blend``) by
    optimising the image (Gatys et al.), or by the fast stylizer ``model`` (a checkpoint or exported
    file; ``content`` may then be a video, camera index or stream URL, written to ``out``). Returns a
    PIL image whose ``info["cnnkit"]`` holds the run's figures (losses, steps, seconds, the MLflow run),
    or for a video the record alone; writes ``out`` when given (intermediate images every
    ``save_every`` steps beside it). ``weights``: VGG-19's (default the ImageNet file, downloaded on
    first use; "random" for none); ``track``: an MLflow run."""
    from PIL import Image

    from cnnkit.api import check_value, is_video, read_image, writable_dir, writable_file

    if lr is not None:
        check_value("lr", lr, " (from --lr)")
    styles = [style] if isinstance(style, (str, Path)) else list(style or [])
    video = is_video(str(content))  # a URL stays a string: Path() would fold its "//"
    if video and (model is None or out is None):
        raise CnnkitError(f"{content}: a video is stylized by a fast stylizer (--model) into a video file (-o)")
    target = writable_file(Path(out), "-o") if out is not None else None
    if save_every and target is not None:
        writable_dir(target.with_name(f"{target.stem}_steps"), "-o steps folder")
    if model is not None:
        if styles:
            raise CnnkitError("--model stylizes with the style it was trained on: give no STYLE images")
        result = _fast(str(content), Path(model), target, size, device, video)
    elif not styles:
        raise CnnkitError("give one or more STYLE images (or --model fast.pt)")
    else:
        from cnnkit.plugins.nst.stylize import StyleConfig

        config = StyleConfig(size=size or 512, steps=steps, optimizer=optimizer.lower(), lr=lr or 0.0,
                             content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                             content_layers=tuple(content_layers), style_layers=tuple(style_layers),
                             style_layer_weights=tuple(style_layer_weights), style_blend=tuple(style_blend),
                             init=init, pooling=pooling, preserve_colors=preserve_colors, style_scale=style_scale,
                             scales=tuple(scales), save_every=save_every if target is not None else 0, amp=amp,
                             seed=seed)
        result = _gatys(read_image(content), Path(content).stem, [Path(s) for s in styles], target, config,
                        weights or "", device, experiment, tracking_uri or "", track, not verbose)
    pixels = result.pop("pixels", None)
    if pixels is None:
        return result
    image = Image.fromarray(pixels)
    image.info["cnnkit"] = result
    return image


def _fast(content: str, checkpoint: Path, out: Path | None, size: int | None, device: str,
          video: bool = False) -> dict[str, Any]:
    """One forward pass of a trained transformation network (a frame at a time for a video)."""
    from cnnkit.api import for_inference, load_for_eval, read_image, resolve_device, write_image

    task, net, _ = load_for_eval(checkpoint, expect="stylize")  # another task's model: one line naming its command
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
    if out is not None:
        write_image(out, stylized)
    return {"output": str(out) if out else None, "model": str(checkpoint), "style": task.state.get("style", ""),
            "size": list(stylized.shape[:2]), "ms": ms, "pixels": stylized}


def _resized(image: Any, size: int | None) -> Any:
    """``image`` with its long side ``size`` (unchanged when no size is given)."""
    if not size:
        return image
    import cv2

    scale = size / max(image.shape[:2])
    return cv2.resize(image, (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _gatys(content_image: Any, name: str, styles: list[Path], out: Path | None, config: Any, weights: str,
           device: str, experiment: str, tracking_uri: str, track: bool, quiet: bool) -> dict[str, Any]:
    """Optimise the image with progress, intermediate images and an MLflow run."""
    from cnnkit.api import read_image, resolve_device, tracked_run, write_image
    from cnnkit.plugins.nst.stylize import style_transfer
    from cnnkit.plugins.nst.vgg import VGGFeatures

    style_images = [read_image(s) for s in styles]
    config.check(len(styles))
    if out is not None and out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"):
        raise CnnkitError(f"{out}: the output must be an image file (.png, .jpg, ...)")
    dev = resolve_device(device)
    vgg = VGGFeatures(list(config.content_layers) + list(config.style_layers), weights, seed=config.seed,
                      pooling=config.pooling)
    steps_dir = out.with_name(f"{out.stem}_steps") if out is not None else None
    run = tracked_run(f"stylize-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                      {**dataclasses.asdict(config), "content": name, "styles": [str(s) for s in styles],
                       "weights": weights or "imagenet", "device": str(dev), "output": str(out or "")},
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
        if out is not None:
            write_image(out, result.image)
            run.log_artifact(out)
        if result.history:
            run.log_figure(_curves(result.history), "loss_curves.png")
        run.log_metrics({f"final_{k}": v for k, v in result.losses.items()}, total)
    first = result.history[0] if result.history else {}
    return {"output": str(out) if out else None, "losses": result.losses,
            "initial_losses": {k: v for k, v in first.items() if k != "step"},
            "style_image_content_loss": result.style_image_content_loss,
            "steps": len(result.history), "seconds": time.perf_counter() - start,
            "size": list(result.image.shape[:2]), "mlflow_run": run.run_id or None, "pixels": result.image}


def _curves(history: list[dict[str, float]]) -> Any:
    """Content, style and total-variation losses per step (log scale)."""
    from cnnkit.api import line_plot

    series = {key: [h[key] for h in history] for key in ("content", "style", "tv", "loss")}
    return line_plot([h["step"] for h in history], {k: v for k, v in series.items() if any(x > 0 for x in v)},
                     "step", log=True)
