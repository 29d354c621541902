"""Siamese benchmark: embedding throughput, end-to-end verify latency, 1:N gallery search time.

    .venv/bin/python bench/siamese.py [--weights CKPT] [--image FACE.jpg] [--threads N]

Without --weights a randomly initialised siamese-small checkpoint is written to a temp folder
(speed does not depend on the weights). The verify latency is measured in-process (no Python or
torch start-up): read the photo, find and crop the face, embed it, search the gallery, decide.
The 1:N search is one float32 matrix-vector product over N unit vectors plus an argmin.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT.parent / "shared" / "data" / "faces" / "probe" / "obama3.jpg"


def timed(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_checkpoint(folder: Path, img_size: int) -> Path:
    from cnnkit.core.checkpoint import save_checkpoint
    from cnnkit.core.config import TrainConfig
    from cnnkit.core.registry import models

    torch.manual_seed(0)
    model = models.get("siamese-small").create()
    return save_checkpoint(folder / "random.pt", {
        "model": "siamese-small", "task": "embed", "classes": [], "model_state": model.state_dict(),
        "config": TrainConfig(model="siamese-small", img_size=img_size).to_dict(),
        "task_state": {"threshold": 1.0, "metric": "l2"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="an embedder checkpoint (default: random siamese-small)")
    parser.add_argument("--image", type=Path, default=FACE, help="a face photo for the verify latency")
    parser.add_argument("--img-size", type=int, default=0, help="input size (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from cnnkit.core.plugins import load_plugins
    from cnnkit.core.registry import models
    from cnnkit.plugins.siamese.pipeline import Embedder, decide
    from cnnkit.core.scoring import Scorer

    load_plugins()
    img_size = args.img_size or models.get("siamese-small").defaults["img_size"]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or random_checkpoint(Path(tmp), img_size)
        embedder = Embedder(weights, "cpu")
    size = embedder.task.config.img_size
    print(f"model {embedder.info.model} ({sum(p.numel() for p in embedder.model.parameters()) / 1e6:.2f}M params), "
          f"input {size}x{size}, torch threads {torch.get_num_threads()}, CPU")

    rates = {}
    for batch in (1, 64):
        x = torch.rand(batch, 3, size, size)
        with torch.inference_mode():
            seconds = timed(lambda: embedder.model(x), repeat=20 if batch == 1 else 5)
        rates[batch] = batch / seconds
        print(f"embeddings/s at batch {batch:>2}: {rates[batch]:9.1f}  ({seconds * 1e3:.2f} ms a batch)")
    print(f"batching gain (64 vs 1): {rates[64] / rates[1]:.1f}x")

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((1000, embedder.info.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    names = [f"person{i // 5}" for i in range(len(gallery))]
    detect = args.image.is_file()
    image = args.image if detect else None
    if image is None:
        from cnnkit.core.data.images import write_image

        image = write_image(Path(tempfile.mkdtemp()) / "crop.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))

    def verify() -> object:
        crops = embedder.crops(image, detect=detect)
        return decide(embedder.scorer, embedder.embed([crops[0][0]])[0], names, gallery, 1.0)

    latency = timed(verify, repeat=5)
    crop_only = timed(lambda: embedder.crops(image, detect=detect), repeat=5)
    print(f"verify latency, in-process ({'face detection on ' + args.image.name if detect else 'pre-cropped, no detection'}, "
          f"gallery of 1k): {latency * 1e3:.1f} ms, of which reading + detecting + cropping {crop_only * 1e3:.1f} ms")

    scorer = Scorer("l2")
    for n in (1_000, 100_000, 1_000_000):
        matrix = rng.standard_normal((n, embedder.info.dim), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        query = matrix[n // 2] + 0.01 * rng.standard_normal(embedder.info.dim, dtype=np.float32)
        seconds = timed(lambda: int(np.argmin(scorer.search(query, matrix))), repeat=5 if n < 1_000_000 else 3)
        assert int(np.argmin(scorer.search(query, matrix))) == n // 2
        print(f"1:N search, {n:>9,} embeddings ({matrix.nbytes / 2**20:6.1f} MiB): {seconds * 1e3:9.3f} ms "
              f"({seconds / n * 1e9:.2f} ns an embedding)")
        del matrix


if __name__ == "__main__":
    sys.exit(main())
