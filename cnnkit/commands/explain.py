"""``cnnkit explain MODEL|CKPT|FILE IMAGE...``: overlays of what the network looked at, a layer's
feature maps (``--feature-maps LAYER``) or the first convolution's kernels (``--filters``).
No torch at import: the command line stays fast to start."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.commands.app import app, console
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.explain import METHODS

SOURCE_HELP = ("A checkpoint written by `cnnkit train`, a registered model name (its published weights), "
               "a .cfg, or a file written by `cnnkit export` (--feature-maps and --filters need the torch model).")


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-") or "x"


@app.command("explain")
def explain_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    images: Optional[list[Path]] = typer.Argument(None, help="Image files (an embedder: pairs of images)."),
    method: str = typer.Option("gradcam", "--method", help=f"{', '.join(METHODS)}."),
    target: Optional[str] = typer.Option(None, "--target", help="A class name or number, or all (default: the top "
                                         "--top classes; a detector: every detection)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Explain at this layer (default: the family's, e.g. "
                                        "the last feature map; names as in `cnnkit summary`)."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Classes to explain (default 1); a detector: at "
                                      "most this many detections (default all)."),
    feature_maps: Optional[str] = typer.Option(None, "--feature-maps", help="Instead: a grid of LAYER's channels "
                                               "for each image."),
    filters: bool = typer.Option(False, "--filters", help="Instead: the first convolution's kernels as RGB tiles."),
    out: Path = typer.Option(Path("runs/explain"), "-o", "--out", help="Where the PNGs go."),
    weights: Optional[str] = typer.Option(None, "--weights", help="With a model name or .cfg: a weights file or a "
                                          "name from `cnnkit weights list` (default: the model's own)."),
    names: Optional[str] = typer.Option(None, "--names", help="With a model name or .cfg: a .names file."),
    conf: float = typer.Option(0.25, "--conf", min=0.0, max=1.0, help="Detectors: the score threshold."),
    iou: float = typer.Option(0.45, "--iou", min=0.0, max=1.0, help="Detectors: the NMS IoU threshold."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, mps or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print each map's record (peak, box of its top 10 %, file)."),
    track: bool = typer.Option(False, "--track", help="Log the pictures to MLflow as an explain-... run's images."),
    experiment: str = typer.Option("cnnkit", "--experiment", help="MLflow experiment name (with --track)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI."),
) -> None:
    """Show what a network looked at: a heatmap over each image for each class (or detection, or
    pair of faces) it decided on, with --json the map's peak and the box of its top 10 %."""
    from cnnkit.core.base.paths import writable_dir
    from cnnkit.model import load

    paths = [str(p) for p in images or []]
    if not paths and not filters:
        raise CnnkitError("give one or more images (or --filters for the first convolution's kernels)")
    if method not in METHODS:
        raise CnnkitError(f"--method {method}: choose {', '.join(METHODS)}")
    writable_dir(out, "-o")
    model = load(source, weights=weights, names=names, device=device, runtime="torch")
    if filters:
        results = [(model.filters(), f"{_safe(model.name)}_filters.png")]
    elif feature_maps:
        results = [(e, f"{_safe(Path(e.image).stem)}_features_{_safe(feature_maps)}.png")
                   for e in model.feature_maps(paths, feature_maps)]
    else:
        found = model.explain(paths, method=method, target=target, layer=layer, top=top, conf=conf, iou=iou)
        results = [(e, _file_name(e, i)) for i, e in enumerate(found)]
    _write(results, out, model.name, source, method, as_json, track, experiment, tracking_uri or "")


def _file_name(e: Any, i: int) -> str:
    stem = _safe(Path(e.image).stem)
    if "pair" in e.extra:
        return f"{stem}_{_safe(Path(e.extra['pair']).stem)}_{e.method}.png"
    return f"{stem}_{e.method}_{i:02d}_{_safe(e.target)}.png"


def _write(results: list[tuple[Any, str]], out: Path, model: str, source: str, method: str, as_json: bool,
           track: bool, experiment: str, uri: str) -> None:
    import numpy as np

    from cnnkit.core.data.images import write_image
    from cnnkit.core.train.callbacks import tracked_run

    records = []
    with tracked_run(f"explain-{model}-{time.strftime('%Y%m%d-%H%M%S')}", {"source": source, "method": method},
                     {"cnnkit.explain": "1"}, track=track, uri=uri, experiment=experiment, progress=False) as run:
        for e, name in results:
            path = write_image(out / name, np.asarray(e.overlay))
            run.log_image(np.asarray(e.overlay), f"explain/{name}")
            record = {k: v for k, v in e.to_json().items() if not isinstance(v, np.ndarray)}
            records.append({**record, "file": str(path)})
    if as_json:
        print(json.dumps(records, indent=2))
        return
    for r in records:
        where = f" peak {r['peak'][0]},{r['peak'][1]}" if r.get("peak") else " empty map" if "peak" in r else ""
        what = f"{r['target']} {r['score']:.3f} " if r["target"] else ""
        console.print(f"{r['image']}: {what}({r['method']} at {r['layer']}{where}) -> {r['file']}", markup=False)
    if run.run_id:
        console.print(f"mlflow run: {run.run_id}")
