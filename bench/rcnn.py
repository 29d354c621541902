"""R-CNN family benchmark: selective search proposals/s, then training and inference images/s and
peak memory (max RSS of a fresh process) for each detector.

    .venv/bin/python bench/rcnn.py [--size 64] [--images 32] [--threads 1] [--proposals 2000]

Selective search proposals are computed (and cached) before the detectors are timed, so their
training and inference figures are the network's; the search's own cost is the first line.
R-CNN and Fast R-CNN score the same selective-search proposals (at most ``--proposals`` an image,
the papers' 2000 by default; R-CNN's SVMs are fitted on as many).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DETECTORS = ("rcnn", "fast-rcnn", "faster-rcnn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn")


def bench_selective_search(size: int, images: int) -> dict[str, float]:
    from cnnkit.core.data.synthetic import Shapes
    from cnnkit.plugins.rcnn.selective_search import selective_search

    data = Shapes("val", n=images * 4, size=size)
    pixels = [data[i].image for i in range(images)]
    start = time.perf_counter()
    count = sum(len(selective_search(p, "fast")) for p in pixels)
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "proposals_per_s": count / seconds, "proposals_per_image": count / images}


def bench_detector(name: str, size: int, images: int, threads: int, proposals: int) -> dict[str, float]:
    import torch

    from cnnkit.core.base import plugins
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    plugins.load_plugins()
    spec = models.get(name)
    options = {"rcnn": {"test_proposals": proposals, "svm_proposals": proposals},
               "fast-rcnn": {"test_proposals": proposals}}.get(name, {})
    config = TrainConfig(**{**spec.recipe, "model": name, "img_size": size, "options": options,
                            "data": f"synthetic:shapes?n={images}&size={size}"})
    task = make_task(spec, config)
    data = task.dataset("train")
    model = task.build_model()
    batches = list(task.loader(data, train=False))
    if hasattr(task, "search"):  # selective search once, outside the timings
        for images_, _ in batches:
            task.search(images_)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    times = []
    for epoch in range(2):  # the first pass warms up
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            loss = task.loss(model, batch, step)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    model.eval()
    scored = 0
    start = time.perf_counter()
    with torch.no_grad():
        for images_, _ in batches:
            task.predict_batch(model, images_, 0.05, 0.3)
            if hasattr(task, "search"):
                scored += sum(len(p) for p in task.proposals(model, images_))
    infer = time.perf_counter() - start
    return {"train_img_per_s": len(data) / times[-1], "infer_img_per_s": len(data) / infer,
            "proposals_per_image": scored / len(data),
            "batch_size": config.batch_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--proposals", type=int, default=2000, help="R-CNN/Fast R-CNN proposals an image at most")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(bench_detector(args.one, args.size, args.images, args.threads, args.proposals)))
        return
    for size in sorted({args.size, 128}):
        ss = bench_selective_search(size, 10)
        print(f"selective search (fast mode, {size}px): {ss['proposals_per_s']:.0f} proposals/s, "
              f"{ss['images_per_s']:.2f} images/s, {ss['proposals_per_image']:.0f} proposals an image")
    print(f"\ndetectors at {args.size}px, {args.images} images, {args.threads} thread(s), CPU:")
    print(f"{'model':36s} {'batch':>5s} {'train img/s':>12s} {'infer img/s':>12s} {'peak RSS MB':>12s}")
    rows = {}
    for name in DETECTORS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--size", str(args.size), "--images",
                              str(args.images), "--threads", str(args.threads), "--proposals", str(args.proposals)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{name:36s} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            continue
        r = rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:36s} {r['batch_size']:5d} {r['train_img_per_s']:12.2f} {r['infer_img_per_s']:12.2f} "
              f"{r['peak_rss_mb']:12.0f}")
    if "rcnn" in rows and "fast-rcnn" in rows:
        print("\nfast-rcnn / rcnn inference speed: "
              f"{rows['fast-rcnn']['infer_img_per_s'] / rows['rcnn']['infer_img_per_s']:.1f}x "
              f"on the same proposals ({rows['rcnn']['proposals_per_image']:.0f} an image, at most {args.proposals})")
    if "faster-rcnn" in rows and "fast-rcnn" in rows and "rcnn" in rows:
        ss_s = 1 / bench_selective_search(args.size, 5)["images_per_s"]
        for name in ("rcnn", "fast-rcnn"):
            total = 1 / (1 / rows[name]["infer_img_per_s"] + ss_s)
            print(f"{name} end-to-end with selective search: {total:.2f} img/s "
                  f"(faster-rcnn is {rows['faster-rcnn']['infer_img_per_s'] / total:.1f}x faster)")


if __name__ == "__main__":
    main()
