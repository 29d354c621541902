"""Can `cnnkit explain`'s maps be trusted? For a classifier, a YOLO model and Faster R-CNN, each
trained on synthetic images with one object of known box, the pointing game (share of val images
whose map peaks inside the true box) of every method for the trained network, the same network
re-initialised, and one trained on shuffled labels (every image with another's), beside the share
a uniformly random point gets; and the Spearman rank correlation of trained vs re-initialised maps
(Adebayo et al. 2018: a method whose maps do not change when the weights are destroyed is refused).

    PYTHONPATH=. .venv/bin/python bench/explain.py [--quick] [--out runs/bench-explain]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cnnkit.core.explain import METHODS
from cnnkit.core.explain.sanity import RANK_BOUND, Sample, chance, maps, pointing, rank_correlation, reinitialised

FAMILIES = {  # family: (model, data, train flags, layer: None for the task's default)
    # resnet18 at 64 px: its last map (layer4) is 2x2, so the game is played at layer3 (4x4)
    "classifier": ("resnet18", "synthetic:figure-crops?n={n}&size=64",
                   ["--img-size", "64", "--batch-size", "32", "--epochs", "{epochs}"], "layer3"),
    "yolo": ("yolov3-tiny", "synthetic:shapes?n={n}&size=96&max_objects=1",
             ["--img-size", "96", "--batch-size", "16", "--epochs", "{epochs}", "--no-multi-scale"], None),
    "faster-rcnn": ("faster-rcnn", "synthetic:shapes?n={n}&size=96&max_objects=1",
                    ["--img-size", "96", "--batch-size", "8", "--epochs", "{epochs}"], None),
}


def samples(family: str, count: int) -> list[Sample]:
    """Val images with one object each and its box."""
    if family == "classifier":
        from cnnkit.plugins.yolo.synthetic import FigureCrops

        ds = FigureCrops("val", n=4 * count, size=64)
        return [Sample(image, box, label) for image, label, box in (ds.with_box(i) for i in range(count))]
    from cnnkit.core.data.synthetic import Shapes

    ds = Shapes("val", n=8 * count, size=96, max_objects=1)
    found = [ds[i] for i in range(len(ds))]
    return [Sample(s.image, s.boxes[0].tolist(), int(s.labels[0])) for s in found if len(s.boxes)][:count]


def train(model: str, data: str, flags: list[str], out: Path) -> Path:
    from cnnkit.commands import main

    best = out / "weights" / "best.pt"
    if not best.exists():
        try:
            main(["train", model, "--data", data, *flags, "--no-track", "--out", str(out), "--seed", "0"])
        except SystemExit as exc:
            if exc.code:
                raise
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets and few epochs (a smoke run)")
    parser.add_argument("--out", default="runs/bench-explain")
    parser.add_argument("--images", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--n", type=int, default=0, help="training images (default 1024; --quick 128)")
    parser.add_argument("--epochs", type=int, default=0, help="default 12; --quick 2")
    args = parser.parse_args()
    from cnnkit.core.load.source import load_for_eval
    from cnnkit.core.base.plugins import load_plugins

    load_plugins()
    n, epochs, count = (128, 2, 16) if args.quick else (1024, 12, 64)
    n, epochs, count = args.n or n, args.epochs or epochs, args.images or count
    rows = []
    for family in args.families.split(","):
        model, data, flags, layer = FAMILIES[family]
        data, flags = data.format(n=n), [f.format(epochs=epochs) for f in flags]
        start = time.time()
        trained = train(model, data, flags, Path(args.out) / family)
        shuffled = train(model, data + "&shuffle_labels=1", flags, Path(args.out) / f"{family}-shuffled")
        took = time.time() - start
        task, net, ck = load_for_eval(trained)
        shuffled_task, shuffled_net, _ = load_for_eval(shuffled)
        random_net = reinitialised(task)
        found = samples(family, count)
        for method in args.methods.split(","):
            if method in task.explain_refused:
                continue
            start = time.time()
            a = maps(task, net, found, method, layer=layer)
            b = maps(task, random_net, found, method, layer=layer)
            c = maps(shuffled_task, shuffled_net, found, method, layer=layer)
            rho = rank_correlation(a, b)
            rows.append((family, model, method, pointing(a, found), pointing(b, found), pointing(c, found),
                         chance(found), rho, time.time() - start))
            print(f"{family} {method}: trained {rows[-1][3]:.2f} re-init {rows[-1][4]:.2f} shuffled {rows[-1][5]:.2f} "
                  f"chance {rows[-1][6]:.2f} rho {rho:.2f} ({rows[-1][8]:.0f} s; training {took:.0f} s; "
                  f"val metrics {ck.get('metrics')})", flush=True)
    print(f"\n{count} val images a family; rank-correlation bound {RANK_BOUND}\n")
    print("| family | model | method | pointing: trained | re-initialised | shuffled labels | random point | "
          "Spearman trained vs re-init | passes |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for family, model, method, t, r, s, c, rho, _ in rows:
        print(f"| {family} | {model} | {method} | {t:.2f} | {r:.2f} | {s:.2f} | {c:.2f} | {rho:.2f} | "
              f"{'yes' if rho < RANK_BOUND else 'NO'} |")


if __name__ == "__main__":
    main()
