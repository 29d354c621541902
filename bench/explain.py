"""Can `cnnkit explain`'s maps be trusted? For a classifier, a YOLO model and Faster R-CNN, each
trained on synthetic images with one object of known box, the pointing game (share of val images
whose map peaks inside the true box) of every method for the trained network, the same network
re-initialised, and one trained on shuffled labels (every image with another's), beside the share
a uniformly random point gets; and the Spearman rank correlation of trained vs re-initialised maps
(Adebayo et al. 2018: a method whose maps do not change when the weights are destroyed is refused).
Methods a family refuses are measured too (the refusal is this table's verdict).

    PYTHONPATH=. .venv/bin/python bench/explain.py [--quick] [--families yolo] [--out runs/bench-explain]
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass
from pathlib import Path

from cnnkit.core.explain import METHODS
from cnnkit.core.explain.sanity import (
    RANK_BOUND,
    boxed_samples,
    chance,
    maps,
    pointing,
    rank_correlation,
    reinitialised,
)


@dataclass
class Family:
    """A model, its data (``{n}``: training images) and training flags (``{epochs}``), the layers
    the game is played at (None: the task's default) and the default size of the training."""

    model: str
    data: str
    flags: list[str]
    layers: tuple[str | None, ...]
    n: int
    epochs: int


FAMILIES = {
    # resnet18 at 64 px: layer4's map is 2x2, layer3's 4x4, layer2's 8x8 (the figures are 19-38 px)
    "classifier": Family("resnet18", "synthetic:figure-crops?n={n}&size=64",
                         ["--img-size", "64", "--batch-size", "32", "--epochs", "{epochs}"], ("layer3", "layer2"),
                         1024, 12),
    "yolo": Family("yolov3-tiny", "synthetic:shapes?n={n}&size=96&max_objects=1",
                   ["--img-size", "96", "--batch-size", "16", "--epochs", "{epochs}", "--no-multi-scale"], (None,),
                   512, 15),
    "faster-rcnn": Family("faster-rcnn", "synthetic:shapes?n={n}&size=96&max_objects=1",
                          ["--img-size", "96", "--batch-size", "8", "--epochs", "{epochs}"], (None,), 512, 12),
}


def cpu() -> float:
    """CPU seconds used so far by this process and its finished children (data loader workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def train(model: str, data: str, flags: list[str], out: Path) -> tuple[Path, float]:
    """The run's best.pt (trained unless there already) and the CPU seconds training took."""
    from cnnkit.commands import main

    best, start = out / "weights" / "best.pt", cpu()
    if not best.exists():
        try:
            main(["train", model, "--data", data, *flags, "--no-track", "--out", str(out), "--seed", "0"])
        except SystemExit as exc:
            if exc.code:
                raise
    return best, cpu() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets and few epochs (a smoke run)")
    parser.add_argument("--out", default="runs/bench-explain")
    parser.add_argument("--images", type=int, default=0, help="val images a family (default 48; --quick 16)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--n", type=int, default=0, help="training images (default: the family's; --quick 128)")
    parser.add_argument("--epochs", type=int, default=0, help="default: the family's; --quick 2")
    args = parser.parse_args()
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.load.source import load_for_eval

    load_plugins()
    rows = []
    for family in args.families.split(","):
        f = FAMILIES[family]
        n, epochs = (128, 2) if args.quick else (f.n, f.epochs)
        n, epochs, count = args.n or n, args.epochs or epochs, args.images or (16 if args.quick else 48)
        data, flags = f.data.format(n=n), [x.format(epochs=epochs) for x in f.flags]
        trained, cpu_trained = train(f.model, data, flags, Path(args.out) / family)
        shuffled, cpu_shuffled = train(f.model, data + "&shuffle_labels=1", flags,
                                       Path(args.out) / f"{family}-shuffled")
        task, net, ck = load_for_eval(trained)
        shuffled_task, shuffled_net, shuffled_ck = load_for_eval(shuffled)
        refused = dict(type(task).explain_refused)
        task.explain_refused = shuffled_task.explain_refused = {}  # measured all the same
        random_net = reinitialised(task)
        found = boxed_samples(data, count)
        key = f"val_{task.key_metric}"
        print(f"{family}: {f.model} on {data}, {epochs} epochs; {key} {ck['metrics'][key]:.3f} trained, "
              f"{shuffled_ck['metrics'][key]:.3f} shuffled labels; "
              f"training CPU {cpu_trained:.0f} s + {cpu_shuffled:.0f} s",
              flush=True)
        for layer in f.layers:
            for method in args.methods.split(","):
                if method == "integrated-gradients" and layer != f.layers[0]:
                    continue  # at the input: the same whatever the layer
                start = cpu()
                a = maps(task, net, found, method, layer=layer)
                b = maps(task, random_net, found, method, layer=layer)
                c = maps(shuffled_task, shuffled_net, found, method, layer=layer)
                where = "input" if method == "integrated-gradients" else layer or "default"
                rows.append((family, f.model, data, epochs, ck["metrics"][key], where, method, pointing(a, found),
                             pointing(b, found), pointing(c, found), chance(found), rank_correlation(a, b),
                             "yes" if method in refused else "no"))
                print(f"  {where} {method}: trained {rows[-1][7]:.2f} re-init {rows[-1][8]:.2f} shuffled "
                      f"{rows[-1][9]:.2f} random point {rows[-1][10]:.2f} rho {rows[-1][11]:.2f} "
                      f"({cpu() - start:.0f} CPU s)", flush=True)
    print(f"\n{count} val images a family; rank-correlation bound {RANK_BOUND}\n")
    print("| family | model | data | epochs | val | layer | method | pointing: trained | re-initialised | "
          "shuffled labels | random point | Spearman trained vs re-init | passes | refused |")
    print("|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---|")
    for family, model, data, epochs, val, layer, method, t, r, s, c, rho, refusal in rows:
        print(f"| {family} | {model} | `{data}` | {epochs} | {val:.2f} | {layer} | {method} | {t:.2f} | {r:.2f} | "
              f"{s:.2f} | {c:.2f} | {rho:.2f} | {'yes' if rho < RANK_BOUND else 'NO'} | {refusal} |")


if __name__ == "__main__":
    main()
