"""YOLO commands: ``cnnkit anchors`` (dimension clusters) and ``cnnkit darknet import|export``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

REGION_STRIDE = 32  # the grid cell of every Darknet [region] head (YOLOv2, tiny, VOC, 9000)


def anchors_cmd(
    data: str = typer.Option("synthetic:shapes", "--data", help="Dataset path or synthetic:NAME[?k=v]."),
    k: int = typer.Option(9, "-k", "--k", min=1, help="Number of anchors (9 for yolov3, 6 tiny, 5 yolov2)."),
    img_size: int = typer.Option(416, "--img-size", min=8, help="Anchors in pixels of images letterboxed to this."),
    split: str = typer.Option("train", "--split", help="Which split's boxes to cluster."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """K-means on the data's box sizes with distance 1 - IoU: anchors sorted by area, and their mean IoU.

    Printed in Darknet's units: input pixels ([yolo] anchors, the same at every input size) and
    32-pixel grid cells ([region] anchors)."""
    from rich.console import Console

    from cnnkit.api import CnnkitError, open_dataset
    from cnnkit.plugins.yolo.anchors import dataset_box_sizes, kmeans_anchors

    if split not in ("train", "val", "test"):
        raise CnnkitError(f"--split {split}: choose train, val or test")
    wh = dataset_box_sizes(open_dataset(data, split, ("detect",)), img_size)
    if not len(wh):
        raise CnnkitError(f"--data {data}: the {split} split has no boxes")
    anchors, mean_iou = kmeans_anchors(wh, k)
    pairs = [[round(float(w), 1), round(float(h), 1)] for w, h in anchors]
    cells = [[round(float(w) / REGION_STRIDE, 4), round(float(h) / REGION_STRIDE, 4)] for w, h in anchors]
    flag = " ".join(f"{w:g},{h:g}" for w, h in pairs)
    if as_json:
        print(json.dumps({"anchors": pairs, "grid_cells": cells, "mean_iou": round(mean_iou, 4),
                          "img_size": img_size, "boxes": len(wh)}, indent=2))
        return
    console = Console(soft_wrap=True)
    for i, ((w, h), (cw, ch)) in enumerate(zip(pairs, cells)):
        console.print(f"{i:>2}  {w:>7.1f} x {h:<7.1f} px   {cw:>7.4f} x {ch:<7.4f} cells")
    console.print(f"mean IoU {mean_iou:.4f} over {len(wh)} boxes at --img-size {img_size}")
    console.print(f"train with: --anchors \"{flag}\" --img-size {img_size}  (pixels; a [region] model keeps them "
                  f"as {REGION_STRIDE}-px grid cells)", markup=False)
    console.print(f".cfg: [yolo] anchors = {', '.join(f'{w:g},{h:g}' for w, h in pairs)}", markup=False)
    console.print(f".cfg: [region] anchors = {', '.join(f'{w:g},{h:g}' for w, h in cells)}", markup=False)


darknet_app = typer.Typer(help="Darknet interop: .weights files to and from cnnkit.", no_args_is_help=True)


@darknet_app.command("import")
def import_cmd(
    weights: Path = typer.Argument(..., help="A Darknet .weights file."),
    model: str = typer.Option(..., "--model", help="A registered model (yolov3, darknet53, ...) or a .cfg path."),
    num_classes: int = typer.Option(0, "--num-classes", min=0, help="0: the model's default (80, or the .cfg's)."),
    out: Path = typer.Option(..., "--out", help="Where the state dict goes (use it with --weights)."),
) -> None:
    """Read Darknet .weights into MODEL and save its state dict for `cnnkit train MODEL --weights OUT`."""
    import torch

    from cnnkit.api import atomic_path, models, writable_file
    from cnnkit.plugins.yolo.weights import load_darknet_weights

    writable_file(out, "--out")  # before reading hundreds of MB
    spec = models.get(model)
    net = spec.create(num_classes=num_classes or spec.num_classes)
    layers, seen = load_darknet_weights(net, weights)
    with atomic_path(out) as tmp:
        torch.save(net.state_dict(), tmp)
    print(f"{weights}: {layers} layers ({seen} images seen) -> {out}")


@darknet_app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `cnnkit train`."),
    out: Path = typer.Option(..., "--out", help="The Darknet .weights file to write."),
) -> None:
    """Write a trained checkpoint's network as a Darknet .weights file."""
    from cnnkit.api import load_for_eval, writable_file
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    writable_file(out, "--out")
    _, net, _ = load_for_eval(checkpoint)
    save_darknet_weights(net, out)
    print(f"{checkpoint} -> {out}")


def register(app: typer.Typer) -> None:
    app.command("anchors")(anchors_cmd)
    app.add_typer(darknet_app, name="darknet")
