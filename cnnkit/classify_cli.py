"""``cnnkit classify MODEL|CHECKPOINT IMAGE...``: the top classes of photos, from a published
model (preprocessed as its publisher does) or a checkpoint written by ``cnnkit train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from cnnkit.core.errors import CnnkitError

console = Console()
SOURCE_HELP = "A registered classifier's name (its published weights) or a checkpoint written by `cnnkit train`."
WEIGHTS_HELP = "With a model name: a weights file or a name from `cnnkit weights list` (default: the model's own)."


def classify_cmd(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    images: list[Path] = typer.Argument(..., help="Image files."),
    top: int = typer.Option(5, "--top", min=1, help="How many classes to print an image."),
    weights: Optional[str] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json", help='One object an image: {"image", "top": [{"index", "class", "prob"}]}.'),
) -> None:
    """Classify images: the top K classes with their probabilities."""
    import torch

    from cnnkit.core.device import resolve_device
    from cnnkit.core.engine import load_for_eval

    task, model, ck = load_for_eval(source, weights_ref=weights)
    if task.spec.task != "classify":
        raise CnnkitError(f"{task.spec.name} is a {task.spec.task} model; `cnnkit classify` runs classifiers")
    prepare = preprocessing(task, ck)
    inputs = [prepare(path) for path in images]  # every image is read (and refused) before any work
    dev = resolve_device(device)
    model.to(dev).eval()
    classes = list(task.classes or [])
    results = []
    with torch.no_grad():
        for i in range(0, len(inputs), 16):
            probs = model(torch.stack(inputs[i:i + 16]).to(dev)).float().softmax(1).cpu()
            values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
            for path, p, k in zip(images[i:i + 16], values.tolist(), indices.tolist()):
                results.append({"image": str(path), "top": [
                    {"index": j, "class": classes[j] if j < len(classes) else str(j), "prob": q}
                    for j, q in zip(k, p)]})
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        console.print(f"{r['image']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]), markup=False)


def preprocessing(task: Any, ck: dict[str, Any]) -> Callable[[Path], Any]:
    """Image file -> input tensor. Published weights: their publisher's evaluation transform
    (torchvision's ``weights.transforms()``, timm's data config: resize, centre crop, the weights'
    mean/std) on the PIL image; a checkpoint: the task's own validation transform."""
    from cnnkit.core.data.images import open_image, read_image
    from cnnkit.core.data.transforms import classification_pipeline, publisher_transform, to_tensor
    from cnnkit.core.registry import weights

    name = str(ck.get("weights") or "")
    if name in weights:
        transform = publisher_transform(weights.get(name))
        return lambda path: transform(open_image(path))
    pipeline, norm = classification_pipeline(task.config.img_size, train=False), task.input_norm()
    return lambda path: to_tensor(pipeline(image=read_image(path))["image"], norm)
