"""YOLO9000 joint training on synthetic figures: can a detector name classes its boxes never carried?

Detection boxes are all labelled ``shape`` (``synthetic:figures?labels=coarse``); classification
images carry the fine labels (``synthetic:figure-crops``: ring, cross, bar); the WordTree is
``shape -> {ring, cross, bar}``. After joint training, ``cnnkit eval`` on a fine-labelled detection
val set reports map50 over the fine classes. The same run without ``--cls-data`` is the control.

    .venv/bin/python bench/yolo9000.py [--epochs 24] [--n-det 256] [--n-cls 256] [--img-size 160]

Measured (2-core shared CPU, one thread a run, defaults): joint map50 0.413 (map 0.226) on the fine
classes, 342 CPU-s of training (570 s wall); detection-only map50 0.0 (40 detections at conf 0.25,
none naming a fine class), while its class-agnostic map50 is 0.85.

Prints each run's training wall and CPU time (user + system of the training process: the
machine may be shared), its epochs and the fine-class map50, and the share of detections
(conf >= 0.25) that name a fine class.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from cnnkit.plugins.yolo.synthetic import TREE

# A tiny YOLOv2 ([region] head, 0.4M parameters): five 3x3 conv + max pool pairs (stride 32), a 3x3
# conv and the 1x1 output.
# Anchors in grid cells at 160 px (a 5x5 grid): round figures of 1.1-2.3 cells, bars 0.3 x 1-2 cells.
TINY_CFG = "[net]\nwidth={size}\nheight={size}\nchannels=3\n\n" + "".join(
    f"[convolutional]\nbatch_normalize=1\nfilters={w}\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n"
    f"[maxpool]\nsize=2\nstride=2\n\n" for w in (16, 32, 64, 64, 128)) + (
    "[convolutional]\nbatch_normalize=1\nfilters=128\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n"
    "[convolutional]\nfilters=36\nsize=1\nstride=1\npad=1\nactivation=linear\n\n"
    "[region]\nanchors = 1.2,1.2, 2.0,2.0, 1.6,0.5, 0.5,1.6\nclasses=4\ncoords=4\nnum=4\nsoftmax=1\n")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(*args: str) -> subprocess.CompletedProcess:
    """``cnnkit ARGS`` with one intra-op thread (``OMP_NUM_THREADS``, unless set): on a shared CPU two
    threads spin-wait for each other and train several times slower."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], capture_output=True, text=True, env=env)


def run(out: Path, name: str, size: int, epochs: int, joint: bool, n_det: int, n_cls: int) -> dict:
    args = ["train", out / "tiny.cfg", "--data", f"synthetic:figures?n={n_det}&size={size}&labels=coarse",
            "--tree", out / "figures.tree", "--img-size", size, "--epochs", epochs, "--batch-size", 16,
            "--optimizer", "adam", "--lr", "2e-3", "--scheduler", "cosine", "--multi-scale", "false", "--no-track",
            "--out", out / name]
    if joint:
        args += ["--cls-data", f"synthetic:figure-crops?n={n_cls}&size={size}"]
    start, cpu = time.perf_counter(), _child_cpu()
    r = cli(*args)
    if r.returncode:
        raise SystemExit(r.stderr)
    train_s, train_cpu = time.perf_counter() - start, _child_cpu() - cpu
    best = out / name / "weights" / "last.pt"  # best.pt is chosen on the coarse validation set
    r = cli("eval", best, "--data", f"synthetic:figures?n=400&size={size}&labels=fine", "--json")
    if r.returncode:
        raise SystemExit(r.stderr)
    metrics = json.loads(r.stdout)
    fine, named = _named(best, out, size)
    return {"run": name, "train_wall_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1), "epochs": epochs,
            "fine_map50": round(metrics["map50"], 4), "fine_map": round(metrics["map"], 4), "detections": named,
            "fine_share": round(fine / max(named, 1), 3)}


def _named(best: Path, out: Path, size: int) -> tuple[int, int]:
    """(detections naming ring/cross/bar, all detections) at conf 0.25 on 20 val images."""
    from cnnkit.core.data.images import write_image
    from cnnkit.plugins.yolo.synthetic import Figures

    folder = out / "val_images"
    for i in range(20):
        if not (folder / f"{i}.png").exists():
            write_image(folder / f"{i}.png", Figures("val", n=80, size=size)[i].image)
    r = cli("detect", best, *sorted(folder.glob("*.png")), "--conf", "0.25", "--json")
    if r.returncode:
        raise SystemExit(r.stderr)
    classes = [d["class"] for result in json.loads(r.stdout) for d in result["detections"]]
    return sum(c in ("ring", "cross", "bar") for c in classes), len(classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--n-det", type=int, default=256)
    parser.add_argument("--n-cls", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("/tmp/yolo9000-bench"))
    parser.add_argument("--runs", default="joint,detection-only", help="which runs, comma-separated")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.tree").write_text(TREE)
    (args.out / "tiny.cfg").write_text(TINY_CFG.format(size=args.img_size))
    for name in args.runs.split(","):
        print(json.dumps(run(args.out, name, args.img_size, args.epochs, name == "joint", args.n_det, args.n_cls)),
              flush=True)


if __name__ == "__main__":
    main()
