"""YOLO throughput: inference images/s (batch 1 and 8), training images/s, peak memory and the
achieved GFLOP/s as a fraction of a large matmul's GFLOP/s measured in the same run.

    .venv/bin/python bench/yolo.py [--img-size 416] [--iters 2] [--train-batch 4] [--device auto]

Each model is measured in its own process so that peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) belongs to that model alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

MODELS = ("yolov3", "yolov3-tiny")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device) -> float:
    """GFLOP/s of a large float32 matmul: the machine's practical peak."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < 1.0:
        a @ b
        reps += 1
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn, iters: int, device: torch.device) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def measure(name: str, img_size: int, iters: int, train_batch: int, device: torch.device) -> dict:
    from cnnkit.core.base import plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.yolo.losses import YOLOv3Loss

    plugins.load_plugins()
    model = models.get(name).create(num_classes=80).to(device)
    row: dict = {"model": name, "img_size": img_size, "device": str(device)}
    model.eval()
    for batch in (1, 8):
        x = torch.rand(batch, 3, img_size, img_size, device=device)
        with torch.inference_mode():
            flops = count_flops(lambda: model(x)) / batch
            seconds = timed(lambda: model(x), iters, device)
        row[f"infer_b{batch}_img_s"] = batch / seconds
        row[f"infer_b{batch}_gflops"] = flops * batch / seconds / 1e9
    row["gflops_per_img"] = flops / 1e9

    model.train()
    criterion = YOLOv3Loss(80, model.anchors)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    x = torch.rand(train_batch, 3, img_size, img_size, device=device)
    box = torch.tensor([[0.2, 0.3, 0.5, 0.8], [0.55, 0.1, 0.9, 0.4]]) * img_size
    targets = [{"boxes": box, "labels": torch.tensor([0, 17])}] * train_batch

    def step() -> None:
        loss = criterion(model(x), targets, img_size)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_flops = count_flops(step) / train_batch
    seconds = timed(step, iters, device)
    row["train_img_s"] = train_batch / seconds
    row["train_gflops"] = train_flops * train_batch / seconds / 1e9
    if device.type == "cuda":
        row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        row["peak_mem_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--iters", type=int, default=0, help="timed calls (0: 2 on CPU, 20 on GPU)")
    parser.add_argument("--train-batch", type=int, default=0, help="0: 4 on CPU, 16 on GPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    iters = args.iters or (20 if gpu else 2)
    train_batch = args.train_batch or (16 if gpu else 4)
    if args.one:
        print(json.dumps(measure(args.one, args.img_size, iters, train_batch, device)))
        return

    peak = matmul_gflops(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"large matmul: {peak:.1f} GFLOP/s (the reference for the fractions below)")
    header = (f"{'model':<12} {'size':>4} {'GFLOP/img':>9} {'inf b1 img/s':>12} {'inf b8 img/s':>12} "
              f"{'train img/s':>11} {'peak MB':>8} {'b1 frac':>7} {'b8 frac':>7} {'train frac':>10}")
    print(header)
    for name in MODELS:
        cmd = [sys.executable, __file__, "--one", name, "--img-size", str(args.img_size), "--iters", str(iters),
               "--train-batch", str(train_batch), "--device", str(device)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{name:<12} {row['img_size']:>4} {row['gflops_per_img']:>9.2f} {row['infer_b1_img_s']:>12.2f} "
              f"{row['infer_b8_img_s']:>12.2f} {row['train_img_s']:>11.2f} {row['peak_mem_mb']:>8.0f} "
              f"{row['infer_b1_gflops'] / peak:>7.3f} {row['infer_b8_gflops'] / peak:>7.3f} "
              f"{row['train_gflops'] / peak:>10.3f}")
    print(f"(train batch {train_batch}, {iters} timed calls each after one warm-up; fractions = achieved "
          "GFLOP/s / matmul GFLOP/s; FLOPs from torch.utils.flop_counter)")


if __name__ == "__main__":
    main()
