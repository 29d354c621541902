"""YOLO9000 joint training on three differently built synthetic sets, as a user runs it.

Each set is written to disk in the layouts a user has (a YOLO ``data.yaml`` for detection, an
ImageFolder for classification, a Darknet WordTree file): detection boxes labelled only with
their coarse class, classification images (one object, larger, as ImageNet's) labelled with the
fine classes, and two val sets of the same images, one labelled coarse, one fine. The sets
differ in figures, number of fine classes (3, 5, 4 in two coarse groups), object sizes, object
counts, colours and backgrounds:

- ``outlines``: 3 outlined figures (ring, square, triangle) on colour gradients, 25-45% of the side;
- ``clutter``: 5 filled figures (disc, plus, star, hexagon, x) on blocky noise, 16-32%, 1-4 an image;
- ``groups``: ``round`` {disc, ring} and ``angular`` {square, diamond} on striped pale grounds,
  dark figures, 20-40%; the boxes carry the two coarse names.

Every run trains ``cnnkit train MODEL --data DET [--cls-data CLS --tree TREE] --img-size 160`` with the
model's registered recipe (plus any ``--extra`` flags), one torch thread, and reports the coarse
(class-agnostic with one coarse class) map50, the fine-class map50 (``cnnkit eval`` on the fine val)
and the training process's CPU seconds (user + system, ``resource.getrusage`` of the child; the
machine is shared, so wall time says little).

    python bench/yolo9000_sets.py [--sets outlines,clutter,groups] [--runs joint,detection-only]
        [--model yolov2-tiny] [--n-det 256] [--n-cls 256] [--extra "--epochs 10"] [--jobs 2]

Measured 2026-12-03 (--n-cls 256, 100 val images, yolov2-tiny's registered recipe and defaults: Adam 2e-3,
burn_in 60, batches of 16, 40 epochs, one size, --cls-box objectness, --cls-zoom 0.4; 2-core machine shared,
two runs at once, one thread a run):

    set       run              coarse map50  fine map50  train CPU s
    outlines  joint            0.998         0.942       742
    outlines  detection-only   0.994         0.0         423
    clutter   joint            0.967         0.544       726
    clutter   detection-only   0.978         0.0         396
    groups    joint            0.988         0.991       695
    groups    detection-only   0.990         0.0         383

Without --cls-data the fine groups get no gradient and, their class rows starting at zero, stay exactly
uniform: the prediction stops at the coarse node (fine map50 0.0).

On clutter (coarse/fine, CPU s), the paper's choices and shorter runs: 12 epochs --cls-box class 0.203/0.018;
with --cls-ratio 4 0.12/0.01 (487); with --cls-objectness darknet 0.028/0.005 (199); 12 epochs objectness
0.264/0.024 (202); 24 epochs objectness 0.847/0.240 (408); 40 epochs --cls-zoom 0.25 0.947/0.525 (671).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 160


# ---------------------------------------------------------------- figures
def _polygon(cx: float, cy: float, r: float, sides: int, turn: float = 0.0, inner: float = 1.0) -> list[tuple]:
    """A regular polygon (``inner`` < 1: a star with that inner radius ratio)."""
    points, k = [], sides * (2 if inner < 1 else 1)
    for i in range(k):
        a = turn + 2 * math.pi * i / k
        rr = r * (inner if inner < 1 and i % 2 else 1.0)
        points.append((cx + rr * math.sin(a), cy - rr * math.cos(a)))
    return points


def draw_figure(draw: ImageDraw.ImageDraw, kind: str, box: list[float], colour: tuple[int, ...]) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, min(w, h) / 2
    line = max(2, int(0.14 * min(w, h)))
    if kind == "ring":
        draw.ellipse(box, outline=colour, width=line)
    elif kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "square-outline":
        draw.rectangle(box, outline=colour, width=line)
    elif kind == "triangle-outline":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], outline=colour, width=line)
    elif kind == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=colour)
    elif kind == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, math.pi / 6), fill=colour)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, r, 5, 0.0, 0.45), fill=colour)
    elif kind in ("plus", "x"):
        t = 0.3 * min(w, h)
        if kind == "plus":
            draw.rectangle([x1, cy - t / 2, x2, cy + t / 2], fill=colour)
            draw.rectangle([cx - t / 2, y1, cx + t / 2, y2], fill=colour)
        else:
            draw.line([(x1, y1), (x2, y2)], fill=colour, width=int(t))
            draw.line([(x1, y2), (x2, y1)], fill=colour, width=int(t))
    else:
        raise ValueError(kind)


# ---------------------------------------------------------------- backgrounds and colours
def gradient(rng: np.random.Generator, s: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, s)
    a = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(a) * t[None, :] + np.sin(a) * t[:, None]
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    return c0 + (c1 - c0) * ramp[..., None]


def blocks(rng: np.random.Generator, s: int) -> np.ndarray:
    cells = int(rng.integers(4, 12))
    small = rng.uniform(40, 215, (cells, cells, 3))
    return np.asarray(Image.fromarray(small.astype(np.uint8)).resize((s, s), Image.NEAREST), np.float32)


def stripes(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(170, 245, 3)
    period, a = rng.uniform(6, 20), rng.uniform(0, math.pi)
    y, x = np.mgrid[0:s, 0:s]
    wave = (np.sin((np.cos(a) * x + np.sin(a) * y) * 2 * math.pi / period) > 0)[..., None]
    return base - wave * rng.uniform(15, 40)


def bright(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def dark(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(c) for c in rng.integers(0, 110, 3))


SETS = {
    "outlines": {"tree": {"figure": ["ring", "square-outline", "triangle-outline"]}, "background": gradient,
                 "colour": bright, "det_size": (0.25, 0.45), "objects": 3},
    "clutter": {"tree": {"thing": ["disc", "plus", "star", "hexagon", "x"]}, "background": blocks,
                "colour": bright, "det_size": (0.16, 0.32), "objects": 4},
    "groups": {"tree": {"round": ["disc", "ring"], "angular": ["square", "diamond"]}, "background": stripes,
               "colour": dark, "det_size": (0.2, 0.4), "objects": 3},
}
CLS_SIZE = (0.35, 0.7)  # classification images: one larger object, as ImageNet's


def tree_text(tree: dict[str, list[str]]) -> str:
    """Darknet's ``name parent`` lines: the coarse roots first, then each one's children."""
    lines = [f"{c} -1" for c in tree]
    for i, fine in enumerate(tree.values()):
        lines += [f"{f} {i}" for f in fine]
    return "\n".join(lines) + "\n"


def make_image(cfg: dict, rng: np.random.Generator, count: int, size_range: tuple[float, float]) -> tuple:
    """An image with ``count`` non-overlapping figures: (array, [(box, coarse, fine)])."""
    img = Image.fromarray(np.clip(cfg["background"](rng, SIZE) + rng.normal(0, 5, (SIZE, SIZE, 3)), 0, 255)
                          .astype(np.uint8))
    draw, placed = ImageDraw.Draw(img), []
    fine = [(c, f) for c, fs in cfg["tree"].items() for f in fs]
    for _ in range(count * 20):
        if len(placed) == count:
            break
        coarse, kind = fine[int(rng.integers(len(fine)))]
        side = rng.uniform(*size_range) * SIZE
        w, h = side * rng.uniform(0.8, 1.2), side * rng.uniform(0.8, 1.2)
        x1, y1 = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
        box = [x1, y1, x1 + w, y1 + h]
        if any(min(b[2], box[2]) > max(b[0], box[0]) and min(b[3], box[3]) > max(b[1], box[1]) for b, _, _ in placed):
            continue
        draw_figure(draw, kind, box, cfg["colour"](rng))
        placed.append((box, coarse, kind))
    return np.asarray(img), placed


def write_set(root: Path, name: str, n_det: int, n_cls: int, n_val: int) -> dict[str, Path]:
    """Write the set once (``root/name/``); returns its paths."""
    cfg, out = SETS[name], root / name
    paths = {"det": out / "det" / "data.yaml", "fine": out / "fine" / "data.yaml", "cls": out / "cls",
             "tree": out / "tree.txt"}
    if (out / "done").exists():
        return paths
    coarse = list(cfg["tree"])
    fine = [f for fs in cfg["tree"].values() for f in fs]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for split, n in (("train", n_det), ("val", n_val)):
        for i in range(n):
            image, placed = make_image(cfg, rng, int(rng.integers(1, cfg["objects"] + 1)), cfg["det_size"])
            for kind, names, label_of in (("det", coarse, lambda c, f: c), ("fine", fine, lambda c, f: f)):
                if kind == "fine" and split == "train":
                    continue
                (out / kind / "images" / split).mkdir(parents=True, exist_ok=True)
                (out / kind / "labels" / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(out / kind / "images" / split / f"{i}.png")
                rows = [f"{names.index(label_of(c, f))} {(b[0] + b[2]) / 2 / SIZE:.5f} {(b[1] + b[3]) / 2 / SIZE:.5f} "
                        f"{(b[2] - b[0]) / SIZE:.5f} {(b[3] - b[1]) / SIZE:.5f}" for b, c, f in placed]
                (out / kind / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    for kind, names in (("det", coarse), ("fine", fine)):
        train = "images/train" if kind == "det" else "images/val"
        (out / kind / "data.yaml").write_text(f"path: .\ntrain: {train}\nval: images/val\nnames: {json.dumps(names)}\n")
    for i in range(n_cls):
        image, placed = make_image(cfg, rng, 1, CLS_SIZE)
        folder = out / "cls" / "train" / placed[0][2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    paths["tree"].write_text(tree_text(cfg["tree"]))
    (out / "done").write_text("")
    return paths


# ---------------------------------------------------------------- runs
def cnnkit(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``cnnkit ARGS`` on one torch thread; (result, the child's CPU seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = ("import resource, runpy, sys; sys.argv = ['cnnkit'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('cnnkit', run_name='__main__')\nfinally:\n"
            "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    print(f'CPU_S {u.ru_utime + u.ru_stime:.1f}', file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    cpu = [float(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("CPU_S ")]
    return r, cpu[-1] if cpu else float("nan")


def evaluate(weights: Path, data: Path) -> float:
    r, _ = cnnkit("eval", weights, "--data", data, "--json")
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return round(json.loads(r.stdout[r.stdout.index("{"):])["map50"], 3)


def run(root: Path, name: str, variant: str, paths: dict[str, Path], model: str, extra: list[str]) -> dict:
    out = root / "runs" / f"{name}-{variant}"
    args = ["train", model, "--data", paths["det"], "--tree", paths["tree"], "--img-size", SIZE,
            "--no-track", "--workers", "0", "--out", out]
    if variant != "detection-only":
        args += ["--cls-data", paths["cls"]]
    r, cpu = cnnkit(*args, *extra)
    if r.returncode:
        return {"set": name, "variant": variant, "error": r.stderr.strip().splitlines()[-1:]}
    last = out / "weights" / "last.pt"
    return {"set": name, "variant": variant, "coarse_map50": evaluate(last, paths["det"]),
            "fine_map50": evaluate(last, paths["fine"]), "train_cpu_s": cpu, "extra": " ".join(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--runs", default="joint,detection-only")
    parser.add_argument("--model", default="yolov2-tiny")
    parser.add_argument("--n-det", type=int, default=256)
    parser.add_argument("--n-cls", type=int, default=256)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--extra", default="", help="more train flags, e.g. '--epochs 8 --cls-objectness darknet'")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each on one thread)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/yolo9000-sets"))
    args = parser.parse_args()
    tag = f"{args.n_det}-{args.n_cls}-{args.n_val}"
    root = args.out / tag
    jobs = [(s, v) for s in args.sets.split(",") for v in args.runs.split(",")]
    paths = {s: write_set(root, s, args.n_det, args.n_cls, args.n_val) for s in args.sets.split(",")}
    label = args.extra.replace(" ", "").replace("--", "_") or "recipe"
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda job: run(root / label, job[0], job[1], paths[job[0]], args.model,
                                            shlex.split(args.extra)), jobs):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
