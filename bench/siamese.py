"""Siamese benchmark: embedding throughput, end-to-end verify latency, 1:N gallery search time,
and real-face throughput against dlib.

    .venv/bin/python bench/siamese.py [--weights CKPT] [--image FACE.jpg] [--threads N] [--no-dlib]

Faces/s: detection (MMOD CNN) + 5-point landmarks + aligned chip + 128-d descriptor with the
pretrained face-resnet, on photos of ../shared/data/faces, then dlib's own pipeline
(cnn_face_detection_model_v1, shape_predictor, compute_face_descriptor) on the same photos in the
same run. dlib gets the image our detector scans first (resized, upsample 0), so both search the
same pyramid; its descriptors are compared with ours.

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
FACES = ROOT.parent / "shared" / "data" / "faces"
FACE = FACES / "probe" / "obama3.jpg"
PHOTOS = ("probe/obama_small.jpg", "known/kit_harington/2.jpg", "known/rose_leslie/2.jpg", "probe/obama_and_biden.jpg")


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
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.registry import models
    from cnnkit.core.weights.checkpoint import save_checkpoint

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
    parser.add_argument("--no-dlib", action="store_true", help="skip the real-face comparison with dlib")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.metrics.distances import Scorer
    from cnnkit.plugins.siamese.pipeline import Embedder, decide

    load_plugins()
    img_size = args.img_size or models.get("siamese-small").recipe["img_size"]
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

        image = write_image(Path(tempfile.mkdtemp()) / "crop.png",
                            rng.integers(0, 255, (size, size, 3), dtype=np.uint8))

    def verify() -> object:
        crops = embedder.crops(image, detect=detect)
        distances = embedder.scorer.search(embedder.embed([crops[0][0]])[0], gallery)
        best = int(np.argmin(distances))
        return decide(names[best], float(distances[best]), 1.0)

    latency = timed(verify, repeat=5)
    crop_only = timed(lambda: embedder.crops(image, detect=detect), repeat=5)
    how = "face detection on " + args.image.name if detect else "pre-cropped, no detection"
    print(f"verify latency, in-process ({how}, gallery of 1k): {latency * 1e3:.1f} ms, "
          f"of which reading + detecting + cropping {crop_only * 1e3:.1f} ms")

    scorer = Scorer("l2")
    for n in (1_000, 100_000, 1_000_000):
        matrix = rng.standard_normal((n, embedder.info.dim), dtype=np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        query = matrix[n // 2] + 0.01 * rng.standard_normal(embedder.info.dim, dtype=np.float32)
        seconds = timed(lambda q=query, m=matrix: int(np.argmin(scorer.search(q, m))),
                        repeat=5 if n < 1_000_000 else 3)
        assert int(np.argmin(scorer.search(query, matrix))) == n // 2
        print(f"1:N search, {n:>9,} embeddings ({matrix.nbytes / 2**20:6.1f} MiB): {seconds * 1e3:9.3f} ms "
              f"({seconds / n * 1e9:.2f} ns an embedding)")
        del matrix
    if not args.no_dlib:
        faces_per_second()


def faces_per_second() -> None:
    """Detection + alignment + embedding on real photos: ours and dlib's, same photos, same run."""
    try:
        import dlib
    except ImportError:
        print("faces/s: dlib is not installed (pip install dlib-bin), comparison skipped")
        return
    from cnnkit.core.data.images import read_image
    from cnnkit.plugins.siamese.face_resnet import model_file
    from cnnkit.plugins.siamese.faces import face_chips
    from cnnkit.plugins.siamese.mmod import mmod_detector
    from cnnkit.plugins.siamese.pipeline import Embedder

    photos = [read_image(FACES / p) for p in PHOTOS if (FACES / p).is_file()]
    if not photos:
        print(f"faces/s: no photos under {FACES}, comparison skipped")
        return
    embedder = Embedder("face-resnet", "cpu")
    first_levels = [mmod_detector().levels(img)[0][1] for img in photos]

    def ours() -> list[np.ndarray]:
        out = []
        for img in photos:
            chips = face_chips(img, all_faces=True)
            out.extend(embedder.embed([c for c, _ in chips]))
        return out

    detector = dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
    predictor = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
    recognizer = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

    def theirs() -> list[np.ndarray]:
        out = []
        for img in first_levels:
            for det in detector(img, 0):
                out.append(np.array(recognizer.compute_face_descriptor(img, predictor(img, det.rect))))
        return out

    ours()  # warm-up: model files read, caches filled
    start = time.perf_counter()
    ours_desc = ours()
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    dlib_desc = theirs()
    t_dlib = time.perf_counter() - start
    print(f"faces/s on {len(photos)} photos of {FACES.name}/ (detect + landmarks + chip + descriptor, CPU, "
          f"torch threads {torch.get_num_threads()}): cnnkit {len(ours_desc) / t_ours:.2f} "
          f"({len(ours_desc)} faces in {t_ours:.1f} s), dlib {len(dlib_desc) / t_dlib:.2f} "
          f"({len(dlib_desc)} faces in {t_dlib:.1f} s); our time / dlib's: {t_ours / t_dlib:.2f}x")
    if ours_desc and dlib_desc:
        d = np.linalg.norm(np.asarray(ours_desc)[:, None] - np.asarray(dlib_desc)[None], axis=2).min(1)
        print(f"each of our descriptors to dlib's nearest: median {np.median(d):.4f}, max {d.max():.4f} "
              "(0.6 separates people)")


if __name__ == "__main__":
    sys.exit(main())
