"""Dataset scan time: a YOLO split of N label files (and as many small images) scanned cold, then
opened again from the cache beside the labels; the same for a COCO json of N images.

    .venv/bin/python bench/data_scan.py [--n 10000] [--size 32] [--dir /tmp/scan-bench]

The dataset is written once (kept in --dir for later runs); every run deletes the caches first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cnnkit.core.base import plugins
from cnnkit.core.data import open_dataset
from cnnkit.core.data.images import write_image


def write(root: Path, n: int, size: int) -> None:
    if (root / "data.yaml").exists():
        return
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        name = f"{i:06d}.png"
        write_image(root / "images" / "train" / name, rng.integers(0, 255, (size, size, 3), np.uint8))
        label = root / "labels" / "train" / f"{i:06d}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        boxes = rng.uniform(0.2, 0.8, (int(rng.integers(0, 6)), 2))
        label.write_text("".join(f"{i % 3} {x:.4f} {y:.4f} 0.2000 0.2000\n" for x, y in boxes))
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        annotations += [{"id": len(annotations) + 1, "image_id": i + 1, "category_id": i % 3 + 1, "iscrowd": 0,
                         "bbox": [(x - 0.1) * size, (y - 0.1) * size, 0.2 * size, 0.2 * size], "area": 1.0}
                        for x, y in boxes]
    categories = [{"id": c + 1, "name": n} for c, n in enumerate("abc")]
    (root / "images" / "train.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                             "categories": categories}))
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [a, b, c]\n")


def timed(spec: str) -> tuple[float, str, int]:
    start = time.perf_counter()
    ds = open_dataset(spec, "train", ("detect",))
    return time.perf_counter() - start, ds.report.cache, ds.report.boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cnnkit-scan-bench"))
    args = parser.parse_args()
    root = args.dir / f"n{args.n}-s{args.size}"
    start = time.perf_counter()
    write(root, args.n, args.size)
    print(f"dataset: {root} ({args.n} images {args.size}x{args.size}, ready in {time.perf_counter() - start:.1f} s)")
    plugins.load_plugins()
    for name, spec in (("YOLO", root / "data.yaml"), ("COCO", root / "images" / "train.json")):
        for cache in root.rglob("*.cnnkit.cache"):
            cache.unlink()
        cold, status, boxes = timed(str(spec))
        warm, again, _ = timed(str(spec))
        print(f"{name}: {args.n} images, {boxes} boxes: cold scan {cold:.2f} s ({args.n / cold:.0f} images/s, "
              f"cache {status}), cached start {warm:.3f} s (cache {again}), {cold / warm:.0f}x faster")


if __name__ == "__main__":
    main()
