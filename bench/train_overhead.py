"""How close `cnnkit train` comes to the bare model step: images/s of the bare step (forward,
the model's registered loss through its task, backward, optimizer step, on one batch already on
the device) against the engine's own ``Trainer.train_epoch`` (loader, device copies, logging),
same model, batch, size and device, steady state (the first epoch is warm-up, not timed).

    .venv/bin/python bench/train_overhead.py --model yolov3-tiny --img-size 160 --batch-size 8 \\
        --data DIR/data.yaml --device cpu [--amp] [--compile] [--workers N] [--json]
    .venv/bin/python bench/train_overhead.py --write-data DIR [--n 64 --size 256]   # JPEG YOLO folder

Prints one JSON line: bare_img_s, train_img_s, ratio (train / bare), device and settings.
Each figure is the best of ``--repeats`` timings, so a busy machine shows less noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_data(out: str, n: int, size: int) -> Path:
    """A YOLO folder of synthetic shapes rendered to JPEG files (``n`` train, ``n // 4`` val)."""
    from cnnkit.core.data.detection import write_yolo
    from cnnkit.core.data.synthetic import Shapes

    return write_yolo({"train": Shapes("train", n=n, size=size), "val": Shapes("val", n=max(n // 4, 1), size=size)},
                      out, ext="jpg")


def make_trainer(args: argparse.Namespace, out: str):
    """The engine's Trainer for these settings, through the same config layers as `cnnkit train`."""
    from cnnkit.core.base.config import TrainConfig, resolve_config
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.train.trainer import Trainer

    load_plugins()
    spec = models.get(args.model)
    flags = dict(data=args.data, epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size,
                 device=args.device, amp=args.amp, workers=args.workers, compile=args.compile or None,
                 channels_last=args.channels_last, out=out, track=False, seed=0)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = resolve_config(spec.name, spec.recipe, {}, {k: v for k, v in flags.items() if k in known})
    trainer = Trainer(cfg)
    if "multi_scale" in trainer.task.options and not args.multi_scale:
        cfg.options["multi_scale"] = False
    return trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="yolov3-tiny")
    p.add_argument("--img-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data", default="")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--multi-scale", action="store_true", help="Keep YOLO's multi-scale training on.")
    p.add_argument("--cudnn-benchmark", choices=("auto", "on", "off"), default="auto",
                   help="auto: the engine's choice (on unless the input size changes).")
    p.add_argument("--workers", type=int, default=None, help="Default: the engine's default.")
    p.add_argument("--epochs", type=int, default=3, help="Epochs in all; the first is warm-up.")
    p.add_argument("--repeats", type=int, default=1, help="Timings of each; the best counts.")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default).")
    p.add_argument("--json", action="store_true", help="Only the JSON line.")
    p.add_argument("--write-data", default="", help="Write a JPEG YOLO folder here and exit.")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    if args.write_data:
        print(write_data(args.write_data, args.n, args.size))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    from cnnkit.core.base import device as devices
    from cnnkit.core.tasks.base import to_device
    from cnnkit.core.train.callbacks import Run

    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(args, out)
        cfg = trainer.config
        devices.seed_everything(cfg.seed)
        trainer.build_datasets()
        trainer.setup_model()
        trainer.build_loaders()
        if args.cudnn_benchmark != "auto":
            torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
        run = Run("bench", {}, {}, [])
        device, task, model = trainer.device, trainer.task, trainer.train_model
        steps, per_epoch = len(trainer.train_loader), len(trainer.train_ds)
        trainer.train_epoch(run, 0)  # warm-up: kernels, allocator, autotuning, worker start

        batch = to_device(next(iter(trainer.train_loader)), device, cfg.channels_last)
        optimizer, precision = trainer.optimizer, trainer.precision
        n = task.batch_len(batch)

        def bare(count: int) -> float:
            sync(device)
            start = time.perf_counter()
            for i in range(count):
                with precision.autocast():
                    loss = task.loss(model, batch, i)["loss"]
                optimizer.zero_grad(set_to_none=True)
                precision.scaler.scale(loss).backward()
                precision.scaler.step(optimizer)
                precision.scaler.update()
            sync(device)
            return count * n / (time.perf_counter() - start)

        def loop(epochs: range) -> float:
            sync(device)
            start = time.perf_counter()
            for epoch in epochs:
                trainer.train_epoch(run, epoch)
            sync(device)
            return len(epochs) * per_epoch / (time.perf_counter() - start)

        bare(2)
        timed = max(cfg.epochs - 1, 1)
        bare_img_s = train_img_s = 0.0
        for r in range(args.repeats):
            bare_img_s = max(bare_img_s, bare(timed * steps))
            train_img_s = max(train_img_s, loop(range(1 + r * timed, 1 + (r + 1) * timed)))

    row = {"model": args.model, "img_size": args.img_size, "batch_size": args.batch_size, "data": args.data,
           "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "amp": cfg.amp, "channels_last": cfg.channels_last, "compile": getattr(cfg, "compile", False),
           "workers": getattr(trainer.task, "workers", cfg.workers), "multi_scale": bool(args.multi_scale),
           "cudnn_benchmark": torch.backends.cudnn.benchmark, "torch_threads": torch.get_num_threads(),
           "steps_per_epoch": steps, "timed_epochs": timed, "bare_img_s": round(bare_img_s, 2),
           "train_img_s": round(train_img_s, 2), "ratio": round(train_img_s / bare_img_s, 3)}
    print(json.dumps(row), file=sys.stdout)
    if not args.json:
        print(f"bare {bare_img_s:.1f} img/s, cnnkit train {train_img_s:.1f} img/s: {row['ratio']:.0%}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
