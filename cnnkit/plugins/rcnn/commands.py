"""``cnnkit proposals``: selective search region proposals for one image."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.api import CnnkitError


def proposals_cmd(
    image: Path = typer.Argument(..., help="An image file."),
    max_proposals: int = typer.Option(2000, "--max", min=1, help="Keep at most this many (best ranked first)."),
    mode: str = typer.Option("fast", "--mode", help="fast (8 strategies, as the paper) or single."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the image with the top proposals drawn."),
    draw: int = typer.Option(50, "--draw", min=1, help="How many proposals --save draws."),
    as_json: bool = typer.Option(False, "--json", help="Print the boxes as JSON."),
) -> None:
    """Selective search proposals (xyxy pixels of IMAGE), best ranked first."""
    from cnnkit.api import read_image, write_image
    from cnnkit.plugins.rcnn.selective_search import MODES, selective_search

    if mode not in MODES:
        raise CnnkitError(f"--mode {mode}: choose {' or '.join(MODES)}")
    pixels = read_image(image)
    start = time.perf_counter()
    boxes = selective_search(pixels, mode, max_proposals)
    seconds = time.perf_counter() - start
    if save:
        write_image(save, draw_boxes(pixels, boxes[:draw]))
    if as_json:
        print(json.dumps({"image": str(image), "mode": mode, "seconds": round(seconds, 4),
                          "boxes": [[round(float(v), 1) for v in b] for b in boxes]}))
        return
    print(f"{image}: {len(boxes)} proposals in {seconds:.2f} s ({mode} mode)")
    for b in boxes[:10]:
        print("  " + " ".join(f"{v:.0f}" for v in b))
    if save:
        print(f"drew the top {min(draw, len(boxes))} on {save}")


def draw_boxes(image: Any, boxes: Any) -> Any:
    """The image with ``boxes`` outlined (colours cycle through the detection palette)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from cnnkit.api import PALETTE

    img = Image.fromarray(image)
    pen = ImageDraw.Draw(img)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        pen.rectangle([x1, y1, x2 - 1, y2 - 1], outline=PALETTE[i % len(PALETTE)])
    return np.asarray(img)


def register(app: typer.Typer) -> None:
    app.command("proposals")(proposals_cmd)
