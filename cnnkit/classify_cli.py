"""``cnnkit classify MODEL|CHECKPOINT IMAGE...``: the top classes of photos, from a published
model (preprocessed as its publisher does) or a checkpoint written by ``cnnkit train``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from cnnkit.core import jsontext

console = Console(soft_wrap=True)  # lines a user copies (anchors, paths) stay whole when piped
SOURCE_HELP = "A registered classifier's name (its published weights) or a checkpoint written by `cnnkit train`."
WEIGHTS_HELP = "With a model name: a weights file or a name from `cnnkit weights list` (default: the model's own)."
PARTIAL_HELP = ("With --weights FILE: let the file lack tensors (left as built) or bring tensors the model has no "
                "place for (ignored).")


def classify_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    images: list[Path] = typer.Argument(..., help="Image files."),
    top: int = typer.Option(5, "--top", min=1, help="How many classes to print an image."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    allow_partial: bool = typer.Option(False, "--allow-partial", help=PARTIAL_HELP),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help='One object an image: {"image", "top": [{"index", "class", "prob"}]}.'),
) -> None:
    """Classify images: the top K classes with their probabilities."""
    import torch

    from cnnkit.core.device import resolve_device
    from cnnkit.core.engine import load_for_eval

    task, model, _ = load_for_eval(source, weights_ref=weights, allow_partial=allow_partial, expect="classify")
    prepare = preprocessing(task)
    inputs = [prepare(path) for path in images]  # every image is read (and refused) before any work
    dev = resolve_device(device)
    graph = task.inference(model.to(dev).eval())  # probabilities: a checkpoint's softmax, or an exported file as is
    classes = list(task.classes or [])
    results = []
    with torch.no_grad():
        for i in range(0, len(inputs), 16):
            probs = graph(torch.stack(inputs[i:i + 16]).to(dev)).float().cpu()
            values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
            for path, p, k in zip(images[i:i + 16], values.tolist(), indices.tolist()):
                results.append({"image": str(path), "top": [
                    {"index": j, "class": classes[j] if j < len(classes) else str(j), "prob": q}
                    for j, q in zip(k, p)]})
    if as_json:
        print(jsontext.dumps(results))
        return
    for r in results:
        console.print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]), markup=False)


def preprocessing(task: Any) -> Callable[[Path], Any]:
    """Image file -> input tensor: the task's evaluation transform (published weights: their
    publisher's, as torchvision's ``weights.transforms()`` and timm's data config; a checkpoint: its
    own validation transform)."""
    from cnnkit.core.data.images import read_image

    prepare = task.sample_transform(train=False).image
    return lambda path: prepare(read_image(path))
