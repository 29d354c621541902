"""``cnnkit detect`` and ``cnnkit classify``: a model's predictions on images (detect also on a
video, camera or stream). Each calls :func:`cnnkit.load` and ``Model.predict`` and prints the
results' records."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from cnnkit.commands.app import NAMES_HELP, PARTIAL_HELP, SIZE_HELP, SOURCE_HELP, WEIGHTS_HELP, app, console, print_json


@app.command("detect")
def detect_cmd(
    checkpoint: str = typer.Argument(..., help=SOURCE_HELP),
    sources: list[str] = typer.Argument(..., help="Images or folders of images; or one video file, camera index "
                                        "or stream URL."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    names: Optional[str] = typer.Option(None, "--names", help=NAMES_HELP),
    allow_partial: bool = typer.Option(False, "--allow-partial", help=PARTIAL_HELP),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="NMS IoU threshold."),
    img_size: Optional[int] = typer.Option(None, "--img-size",
                                           help=f"Inference size, {SIZE_HELP} (default: training size)."),
    save_dir: Path = typer.Option(Path("runs/detect"), "--save-dir", help="Where annotated images go."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not write annotated images."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(0, "--batch-size", min=0,
                                   help="Images a batch (0: the training batch size, at most 64)."),
    as_json: bool = typer.Option(False, "--json", help="Print detections as JSON."),
    every: int = typer.Option(1, "--every", min=1, help="Video: process every Nth frame."),
    runtime: str = typer.Option("auto", "--runtime", help="torch, onnxruntime (on the CPU: the detector's graph "
                                "compiled once and cached, no torch import) or auto (onnxruntime for published "
                                "models, .cfg and .onnx files on the CPU; torch otherwise)."),
) -> None:
    """Detect objects in images with a trained or published detector; boxes are in original image pixels.
    A video or stream gives one JSON line a frame and an annotated video in --save-dir."""
    from cnnkit.core.base.config import check_value
    from cnnkit.core.base.paths import writable_dir
    from cnnkit.core.data.images import write_image
    from cnnkit.core.load.video import detect_video, is_video
    from cnnkit.core.tasks.draw import annotated_names
    from cnnkit.model import load

    if img_size is not None:  # every setting is checked before any work
        check_value("img_size", img_size, " (from --img-size)")
    if not no_save:
        writable_dir(save_dir, "--save-dir")
    video = len(sources) == 1 and is_video(sources[0])
    model = load(checkpoint, weights=weights, names=names, device=device, runtime=runtime, task="detect",
                 allow_partial=allow_partial)
    settings = dict(conf=conf, iou=iou, img_size=img_size, batch_size=batch_size or None)
    if video:
        return detect_video(sources[0], model.prepare(**settings), None if no_save else save_dir, every, **settings)
    results = model.predict(sources, **settings)
    if not no_save:
        for r, name in zip(results, annotated_names([Path(r.image) for r in results])):
            write_image(save_dir / name, np.asarray(r.plot()))
    if as_json:
        print_json([r.to_json() for r in results])
        return
    for r in results:
        found = ", ".join(f"{d['class']} {d['score']:.2f}" for d in r.detections) or "nothing"
        console.print(f"{r.image}: {found}", markup=False)
    if not no_save:
        console.print(f"annotated images in {save_dir}", markup=False)


@app.command("classify")
def classify_cmd(
    source: str = typer.Argument(..., help="A registered classifier's name (its published weights) or a checkpoint "
                                 "written by `cnnkit train`."),
    images: list[Path] = typer.Argument(..., help="Image files."),
    top: int = typer.Option(5, "--top", min=1, help="How many classes to print an image."),
    weights: Optional[str] = typer.Option(None, "--weights", help="With a model name: a weights file or a name "
                                          "from `cnnkit weights list` (default: the model's own)."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help=PARTIAL_HELP),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json",
                                 help='One object an image: {"image", "top": [{"index", "class", "prob"}]}.'),
) -> None:
    """Classify images: the top K classes with their probabilities."""
    from cnnkit.model import load

    model = load(source, weights=weights, device=device, runtime="torch", task="classify", allow_partial=allow_partial)
    results = model.predict([str(p) for p in images], top=top)
    if as_json:
        print_json([r.to_json() for r in results])
        return
    for r in results:
        console.print(f"{r.image}: " + ", ".join(f"{n} {p:.3f}" for n, p in zip(r.names, r.scores)), markup=False)
