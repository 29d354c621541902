"""Neural style transfer benchmark: optimisation speed and overhead, L-BFGS vs Adam, fast stylizer.

    python bench/nst.py [--threads N] [--quality] [--memory]

Prints, measured in this one run on the real images in ../shared/data/nst (random VGG-19
weights, as no pre-trained file can be had here):
- seconds per optimisation step at 256 and 512 px (one Adam step = one loss forward+backward;
  L-BFGS iterations also shown), and a bare VGG-19 forward+backward of the same layers on the
  same input: the ratio is the overhead of cnnkit's losses (target <= 1.15);
- L-BFGS vs Adam: total loss after the same wall time;
- the fast stylizer's milliseconds per image at 256 and 512 px;
- ``--quality``: the issue's quality bars at 128 px, 100 iterations;
- ``--pooling``: Gatys et al.'s choices at 128 px: average vs max pooling, content vs white-noise
  start; final losses, each also re-measured on the max-pooling network (one common yardstick);
- ``--memory``: peak memory of a 512 px ``cnnkit stylize`` run on CPU (a child process).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from cnnkit.core.data.images import read_image
from cnnkit.core.data.pixels import to_tensor
from cnnkit.plugins.nst.models import TransformerNet
from cnnkit.plugins.nst.stylize import STYLE_LAYERS, StyleConfig, _Stage, style_transfer
from cnnkit.plugins.nst.vgg import VGGFeatures

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nst"
QUALITY_STYLE_WEIGHT = 1e8  # "a suitable style weight" for random VGG-19 features


class _Stop(Exception):
    pass


def _lbfgs_iteration(content, style, size: int, steps: int, vgg: VGGFeatures) -> float:
    """Mean seconds per L-BFGS iteration (line-search evaluations included)."""
    marks: list[float] = []
    style_transfer(content, [style], StyleConfig(size=size, steps=steps + 1, style_weight=QUALITY_STYLE_WEIGHT), vgg,
                   report=lambda step, losses: marks.append(time.perf_counter()))
    return (marks[-1] - marks[1]) / (len(marks) - 2)


def _step_vs_bare(content, style, size: int, steps: int, vgg: VGGFeatures) -> tuple[float, float, float]:
    """Adam steps of cnnkit's stylizer, each followed by a bare VGG-19 forward+backward of the same
    stack on an input of the same shape, timed alternately so that both see the same (shared)
    CPU. Returns the fastest step, the fastest bare pass and the median of the per-step ratios."""
    steps_s: list[float] = []
    bare_s: list[float] = []
    last = [0.0]

    def report(step: int, losses: dict[str, float]) -> None:
        now = time.perf_counter()
        if step >= 2:  # the first steps warm up
            steps_s.append(now - last[0])
        x = torch.rand(1, 3, *shape, requires_grad=True)
        start = time.perf_counter()
        vgg.body((x - vgg.mean) / vgg.std).sum().backward()
        if step >= 2:
            bare_s.append(time.perf_counter() - start)
        last[0] = time.perf_counter()

    h, w = content.shape[:2]
    shape = (round(h * size / max(h, w)), round(w * size / max(h, w)))
    style_transfer(content, [style], StyleConfig(size=size, steps=steps + 3, optimizer="adam",
                                                 style_weight=QUALITY_STYLE_WEIGHT), vgg, report=report)
    ratios = sorted(a / b for a, b in zip(steps_s, bare_s))
    return min(steps_s), min(bare_s), ratios[len(ratios) // 2]


def speed(content, style, vgg: VGGFeatures, steps: int) -> None:
    print("== seconds per step (CPU) ==")
    for size in (256, 512):
        step, bare, ratio = _step_vs_bare(content, style, size, steps, vgg)
        lbfgs = _lbfgs_iteration(content, style, size, steps, vgg)
        print(f"{size:4d} px: stylize step {step:.3f} s  bare VGG-19 fwd+bwd {bare:.3f} s  ratio {ratio:.3f} "
              f"(median of {steps} interleaved pairs)  |  L-BFGS iteration {lbfgs:.3f} s")


def _race(content, style, vgg: VGGFeatures, size: int, seconds: float, optimizer: str) -> dict[str, float]:
    """The last reported losses of an ``optimizer`` run stopped after ``seconds``."""
    last: dict[str, float] = {}
    start = time.perf_counter()

    def report(step: int, losses: dict[str, float]) -> None:
        last.update(losses, step=step)
        if time.perf_counter() - start > seconds:
            raise _Stop

    try:
        style_transfer(content, [style], StyleConfig(size=size, steps=100_000, optimizer=optimizer,
                                                     style_weight=QUALITY_STYLE_WEIGHT), vgg, report=report)
    except _Stop:
        pass
    return last


def equal_time(content, style, vgg: VGGFeatures, size: int, seconds: float) -> None:
    print(f"== L-BFGS vs Adam after {seconds:.0f} s at {size} px (style weight {QUALITY_STYLE_WEIGHT:g}) ==")
    for name in ("lbfgs", "adam"):
        last = _race(content, style, vgg, size, seconds, name)
        print(f"{name:6s}: {int(last['step'])} steps  loss {last['loss']:.4g}  content {last['content']:.4g}  "
              f"style {last['style']:.4g}")


def fast_stylizer(runs: int) -> None:
    print("== fast stylizer (Johnson et al.), one forward pass ==")
    net = TransformerNet().eval()
    for size in (256, 512):
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            for _ in range(2):
                net(x)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - start)
        print(f"{size:4d} px: {min(times) * 1000:.1f} ms/image (fastest of {runs})")


def quality(content, style, vgg: VGGFeatures) -> None:
    print("== quality bars: 128 px, 100 iterations, random VGG-19 ==")
    runs = [("texture synthesis (L-BFGS, --content-weight 0 --init noise)", 1000,
             StyleConfig(size=128, steps=100, content_weight=0, init="noise")),
            (f"stylize (L-BFGS, --style-weight {QUALITY_STYLE_WEIGHT:g})", 100,
             StyleConfig(size=128, steps=100, style_weight=QUALITY_STYLE_WEIGHT)),
            (f"stylize (Adam, --style-weight {QUALITY_STYLE_WEIGHT:g})", 10,
             StyleConfig(size=128, steps=100, style_weight=QUALITY_STYLE_WEIGHT, optimizer="adam"))]
    for name, bar, cfg in runs:
        start = time.perf_counter()
        r = style_transfer(content, [style], cfg, vgg)
        fold = r.history[0]["style"] / r.losses["style"]
        ratio = r.losses["content"] / r.style_image_content_loss
        print(f"{name}: style loss {r.history[0]['style']:.4g} -> {r.losses['style']:.4g} ({fold:.0f}-fold, "
              f"bar {bar}) content loss {r.losses['content']:.4g} = {ratio:.3f} x the style image's "
              f"{r.style_image_content_loss:.4g}  [{time.perf_counter() - start:.0f} s]")


def _losses_on(vgg: VGGFeatures, cfg: StyleConfig, content, style, image) -> dict[str, float]:
    """The losses of ``image`` (RGB uint8) measured with ``vgg``."""
    stage = _Stage(vgg, cfg, to_tensor(content, normalize=False)[None], [to_tensor(style, normalize=False)[None]],
                   cfg.size, contextlib.nullcontext)
    with torch.no_grad():
        return {k: float(v) for k, v in stage.losses(to_tensor(image, normalize=False)[None]).items()}


def pooling_and_init(content, style, vgg: VGGFeatures, steps: int) -> None:
    print(f"== --pooling avg|max x --init content|noise: 128 px, {steps} L-BFGS iterations, random VGG-19 ==")
    yardstick = vgg.with_pooling("max")
    for pooling in ("avg", "max"):
        for init in ("content", "noise"):
            cfg = StyleConfig(size=128, steps=steps, style_weight=QUALITY_STYLE_WEIGHT, pooling=pooling, init=init)
            start = time.perf_counter()
            r = style_transfer(content, [style], cfg, vgg)
            common = _losses_on(yardstick, dataclasses.replace(cfg, pooling="max"), content, style, r.image)
            print(f"--pooling {pooling} --init {init}: loss {r.history[0]['loss']:.4g} -> {r.losses['loss']:.4g} "
                  f"(content {r.losses['content']:.4g}, style {r.losses['style']:.4g}); on the max-pooling "
                  f"network: loss {common['loss']:.4g} (content {common['content']:.4g}, style {common['style']:.4g})"
                  f"  [{time.perf_counter() - start:.0f} s]")


def memory(threads: int) -> None:
    print("== peak memory of `cnnkit stylize --size 512` on CPU ==")
    cli = Path(sys.executable).with_name("cnnkit")
    out = Path("/tmp/cnnkit_bench_nst_512.png")
    cmd = [str(cli), "stylize", str(DATA / "tubingen.jpg"), str(DATA / "starry_night.jpg"), "--size", "512",
           "--steps", "5", "--weights", "random", "--no-track", "--device", "cpu", "-o", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"5 L-BFGS iterations at 512 px: peak RSS {peak:.2f} GiB (bar 4 GiB) [{time.perf_counter() - start:.0f} s]")
    out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per size")
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget of the L-BFGS vs Adam race")
    parser.add_argument("--quality", action="store_true", help="also run the 128 px quality bars")
    parser.add_argument("--memory", action="store_true", help="also measure a 512 px run's peak memory")
    parser.add_argument("--pooling", type=int, default=0, metavar="STEPS",
                        help="only compare --pooling avg|max and --init content|noise with STEPS iterations")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), images from {DATA}")
    content, style = read_image(DATA / "tubingen.jpg"), read_image(DATA / "starry_night.jpg")
    vgg = VGGFeatures(["conv4_2", *STYLE_LAYERS], "random")
    if args.pooling:
        pooling_and_init(content, style, vgg, args.pooling)
        return
    speed(content, style, vgg, args.steps)
    equal_time(content, style, vgg, 128, args.seconds)
    fast_stylizer(args.steps)
    if args.quality:
        quality(content, style, vgg)
    if args.memory:
        memory(args.threads or torch.get_num_threads())


if __name__ == "__main__":
    main()
