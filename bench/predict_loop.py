"""A model kept loaded: ``m = cnnkit.load("yolov3-tiny"); m.predict(image)`` in a loop, against the bare
network on the same input, and against ``cnnkit detect`` on one image (a fresh process each time).

    .venv/bin/python bench/predict_loop.py [--calls 30] [--threads 1] [--size 416]

Measured in one run, interleaved call by call:

- ``api`` (each runtime: onnxruntime, the default on the CPU for a published model, and torch):
  ``Model.predict`` on an RGB array: letterbox, forward, decode, NMS, boxes back to the image, records;
- ``bare_torch``: the torch network (batch norm folded, as ``load`` gives it) on the letterboxed
  tensor: forward + decode + NMS (``yolo.task.final_detections``) under ``inference_mode``;
- ``bare_onnxruntime``: the compiled graph (NMS inside) on the letterboxed array;
- ``cnnkit detect``: one photo from the command line, wall seconds of the whole process.

The published ``yolov3-tiny.weights`` is used when it is in torch's cache, else seeded random
weights of the same network (``--weights FILE``; no network here). Medians, ms a call after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=416)
    args = parser.parse_args()
    os.environ["CNNKIT_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CNNKIT_CACHE", str(Path(tmp) / "cache"))
        import torch

        torch.set_num_threads(args.threads)
        import cnnkit
        from cnnkit.core.base.registry import weights
        from cnnkit.core.data.pixels import letterbox, to_array
        from cnnkit.core.weights.fetch import cache_path
        from cnnkit.plugins.yolo.task import MAX_CANDIDATES, Decoded, final_detections

        cnnkit.list_models()  # plugins loaded
        published = cache_path(weights.get("yolov3-tiny.weights"))
        ref = None
        if not published.is_file():
            from cnnkit.core.base.registry import models
            from cnnkit.plugins.yolo.weights import save_darknet_weights

            torch.manual_seed(0)
            ref = str(save_darknet_weights(models.get("yolov3-tiny").create(num_classes=80),
                                           Path(tmp) / "yolov3-tiny.weights"))
        image = np.random.default_rng(0).integers(0, 255, (576, 768, 3), np.uint8)
        photo = Path(tmp) / "dog.jpg"
        from PIL import Image

        Image.fromarray(image).save(photo)
        lite = cnnkit.load("yolov3-tiny", weights=ref, verbose=False)
        lite.prepare(img_size=args.size)
        torch_model = cnnkit.load("yolov3-tiny", weights=ref, runtime="torch", verbose=False)
        boxed, _ = letterbox(image, args.size)
        x = to_array(boxed, False)[None]
        net = torch_model.prepare(img_size=args.size).module
        graph = Decoded(net)
        tensor = torch.from_numpy(x)
        runner = lite._runners[(args.size, 0.25, 0.45)].runner  # the compiled graph's session

        def bare_torch() -> None:
            with torch.inference_mode():
                boxes, scores = graph(tensor)
                final_detections(boxes[0], scores[0], 0.25, 0.45, args.size, args.size, MAX_CANDIDATES)

        paths = {"api_onnxruntime": lambda: lite.predict(image, img_size=args.size),
                 "api_torch": lambda: torch_model.predict(image, img_size=args.size),
                 "bare_torch": bare_torch, "bare_onnxruntime": lambda: runner.run(x)}
        times: dict[str, list[float]] = {k: [] for k in paths}
        for name, call in paths.items():  # the first call of each: warm-up, not counted
            call()
        for _ in range(args.calls):
            for name, call in paths.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "cnnkit", "detect", "yolov3-tiny", str(photo), "--no-save",
               "--img-size", str(args.size), *(["--weights", ref] if ref else [])]
        subprocess.run(cli, env=env, capture_output=True, check=True)  # compiled graph in the cache
        detect = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(cli, env=env, capture_output=True, check=True)
            detect.append((time.perf_counter() - start) * 1000)
        row = {k: round(statistics.median(v), 2) for k, v in times.items()}
        row["cnnkit_detect_one_image"] = round(statistics.median(detect), 1)
        row["api_onnxruntime_over_bare_onnxruntime"] = round(row["api_onnxruntime"] / row["bare_onnxruntime"], 2)
        row["api_torch_over_bare_torch"] = round(row["api_torch"] / row["bare_torch"], 2)
        row["cnnkit_detect_over_api"] = round(row["cnnkit_detect_one_image"] / row["api_onnxruntime"], 1)
        print(json.dumps({"weights": "published" if ref is None else "seeded random", "size": args.size,
                          "threads": args.threads, "calls": args.calls, "ms": row}, indent=2))


if __name__ == "__main__":
    main()
