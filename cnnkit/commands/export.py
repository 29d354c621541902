"""``cnnkit export``: a model's inference graph to ONNX or TorchScript (:func:`cnnkit.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.commands.app import SIZE_HELP, app, console, print_json


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `cnnkit train` "
                                      "(or a registered model's name)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx or torchscript."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help=f"Input size, {SIZE_HELP} and one the "
                                           "network can take (default: the training size)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Any batch size (default: batch 1)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (7 to the newest the installed torch and onnx write)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file, named *.onnx or *.torchscript as "
                                       "--format says (default: beside the checkpoint)."),
    nms: bool = typer.Option(False, "--nms", help="Detectors: score threshold and NMS inside the graph "
                             "(one image a run)."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="With --nms: the graph's score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="With --nms: the graph's NMS IoU threshold."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a model's inference graph with its metadata, checked against torch with onnxruntime."""
    from cnnkit.model import export

    report = export(checkpoint, fmt, out=out, img_size=img_size, dynamic_batch=dynamic_batch, opset=opset,
                    nms=nms, conf=conf, iou=iou)
    if as_json:
        print_json(vars(report))
        return
    console.print(f"{report.output}: {report.model} ({report.task}), input {report.input}, "
                  f"max difference from torch {report.max_diff:.3g} (tolerance {report.tolerance:.3g})", markup=False)
