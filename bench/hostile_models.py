"""Issue 30's model rows re-run as a hostile user would, with other models, formats, sizes and
suffixes than the tests use: each case a fresh `cnnkit` process (the installed entry point, this
checkout's package first on PYTHONPATH) in a scratch folder. Prints one row a case (issue row,
case, exit code, first stderr line, traceback?, whether the outcome is the expected one) and the
counts.

    python bench/hostile_models.py [--keep DIR]

Rows: 1 exported classifiers' probabilities, 2 weights of another model, 3 non-finite weights,
12 signals during export, 13 a model given to the wrong command, 14 export's output place,
15 export sizes, 16 opsets (and stdout), 17 output suffixes, 29 click's own option checks.
Read-only storage (row 14) is a read-only bind mount when run as root, else permission bits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CNNKIT = str(Path(sys.executable).with_name("cnnkit"))
CLASSES = ["circle", "square", "triangle"]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass
class Case:
    row: int
    name: str
    args: list[str]
    code: int = 2  # the exit code expected
    check: Callable[[Outcome], bool] | None = None  # anything else the outcome must show
    signal_after: Callable[[], bool] | None = None  # send SIGNAL once this holds
    signal: int = 0


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CNNKIT_WEIGHTS_MIRROR": "http://127.0.0.1:9",
            "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}


def run(case: Case, cwd: Path) -> Outcome:
    proc = subprocess.Popen([CNNKIT, *case.args], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if case.signal_after is not None:
        end = time.monotonic() + 300
        while not case.signal_after() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        proc.send_signal(case.signal)
    out, err = proc.communicate(timeout=600)
    return Outcome(proc.returncode, out, err)


# ------------------------------------------------------------------------------------------ models
def make_models(folder: Path) -> None:
    """Tiny models of each task (seeded random weights), their exports, hostile weights files."""
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.model import export
    from cnnkit.plugins.yolo.weights import save_darknet_weights
    from tests.test_export import photos, untrained

    load_plugins()
    untrained("darknet19", folder / "dk.pt", 48, CLASSES)
    edit(folder / "dk.pt", lambda s: s[next(k for k in s if k.endswith("weight") and s[k].ndim == 4 and
                                             s[k].shape[0] == 3)].mul_(30))  # far from uniform
    untrained("resnet34", folder / "r34.pt", 40, ["a", "b"])
    edit(folder / "r34.pt", lambda s: s["fc.weight"].mul_(40))
    untrained("siamese-resnet18", folder / "emb.pt", 32)
    untrained("fast-style", folder / "sty.pt", 32)
    untrained("yolov2-tiny-voc", folder / "yolo.pt", 64, CLASSES)
    untrained("yolov1-tiny", folder / "y1.pt", 64, CLASSES)
    for name in ("dk", "r34", "emb", "sty"):
        export(folder / f"{name}.pt")
    export(folder / "dk.pt", "torchscript")
    export(folder / "r34.pt", "onnx", img_size=56, dynamic_batch=True, out=folder / "r34-56.onnx")
    photos(folder, 3)
    photos(folder / "wide", 1, (24, 220))
    torch.manual_seed(0)
    torch.save(models.get("resnet50").create(num_classes=1000).state_dict(), folder / "resnet50.pth")
    torch.save(models.get("densenet121").create(num_classes=1000).state_dict(), folder / "densenet121.pth")
    tiny = models.get("yolov3-tiny").create(num_classes=80).state_dict()
    torch.save({**tiny, "extra.weight": torch.zeros(4, 4)}, folder / "tiny_plus.pth")
    vgg = models.get("alexnet").create(num_classes=1000).state_dict()
    vgg["features.3.weight"][0, 0, 0, 0] = float("-inf")
    torch.save(vgg, folder / "alexnet_inf.pth")
    shutil.copy(folder / "dk.pt", folder / "dk_nan.pt")
    edit(folder / "dk_nan.pt", lambda s: next(v for v in s.values() if v.is_floating_point()).fill_(float("nan")))
    shutil.copy(folder / "yolo.pt", folder / "yolo_nan.pt")
    edit(folder / "yolo_nan.pt", lambda s: s[next(k for k in s if "running_var" in k)].fill_(float("inf")))
    shutil.copy(ROOT / "cnnkit" / "plugins" / "yolo" / "cfg" / "yolov2-tiny.cfg", folder / "v2tiny.cfg")
    save_darknet_weights(models.get("yolov2-tiny").create(num_classes=80), folder / "v2tiny.weights")
    data = bytearray((folder / "v2tiny.weights").read_bytes())
    data[-400:] = np.full(100, np.nan, np.float32).tobytes()  # the last layer's weights
    (folder / "v2tiny.weights").write_bytes(bytes(data))
    nan_onnx(folder / "emb.onnx", folder / "emb_nan.onnx")
    inf_script(folder / "dk.torchscript", folder / "dk_inf.torchscript")
    (folder / "notes.txt").write_text("a file where a folder should be")
    (folder / "existing.onnx").mkdir()
    (folder / "ro").mkdir()
    (folder / "store").mkdir()
    shutil.copy(folder / "r34.pt", folder / "store" / "r34.pt")


def edit(path: Path, change: Callable[[dict], object]) -> None:
    ck = torch.load(path, weights_only=True)
    change(ck["model_state"])
    torch.save(ck, path)


def nan_onnx(source: Path, target: Path) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(source))
    init = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(graph, str(target))


def inf_script(source: Path, target: Path) -> None:
    files = {"cnnkit.json": ""}
    script = torch.jit.load(str(source), _extra_files=files)
    with torch.no_grad():
        list(script.parameters())[-1].fill_(float("inf"))
    torch.jit.save(script, str(target), _extra_files=files)


@contextlib.contextmanager
def read_only(*folders: Path) -> Iterator[str]:
    """Read-only bind mounts of ``folders`` as root (root writes through permission bits), else 0o500."""
    done = []
    try:
        for folder in folders:
            if os.geteuid() == 0:
                subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
                done.append(folder)
                subprocess.run(["mount", "-o", "remount,bind,ro", str(folder), str(folder)], check=True)
            else:
                folder.chmod(0o500)
        yield "read-only bind mount" if os.geteuid() == 0 else "permission bits"
    finally:
        for folder in done:
            subprocess.run(["umount", str(folder)], check=False)
        for folder in folders:
            folder.chmod(0o755)


# ------------------------------------------------------------------------------------------- cases
def probabilities(folder: Path, model: str, images: list[str]) -> list:
    out = run(Case(1, "", ["classify", model, *images, "--json", "--top", "3"], 0), folder)
    return [[t["prob"] for t in r["top"]] for r in json.loads(out.stdout)] if out.code == 0 else []


def same_as(folder: Path, checkpoint: str, images: list[str]) -> Callable[[Outcome], bool]:
    expected = probabilities(folder, checkpoint, images)

    def check(o: Outcome) -> bool:
        got = [[t["prob"] for t in r["top"]] for r in json.loads(o.stdout)]
        return bool(expected) and np.allclose(got, expected, atol=1e-5)
    return check


def cases(folder: Path) -> list[Case]:
    imgs = ["p0.png", "p1.png", "wide/p0.png"]

    def tmp(pattern: str) -> Callable[[], bool]:
        return lambda: bool(list(folder.glob(pattern)))

    def no_tmp(o: Outcome) -> bool:  # no temporary file left, no output written
        return not list(folder.glob(".*.tmp")) and not list(folder.glob("sig*"))

    def stdout_empty(o: Outcome) -> bool:
        return o.stdout == ""

    found = [
        Case(1, "classify dk.onnx = dk.pt", ["classify", "dk.onnx", *imgs, "--json", "--top", "3"], 0,
             same_as(folder, "dk.pt", imgs)),
        Case(1, "classify dk.torchscript = dk.pt", ["classify", "dk.torchscript", *imgs, "--json", "--top", "3"], 0,
             same_as(folder, "dk.pt", imgs)),
        Case(1, "classify r34.onnx = r34.pt", ["classify", "r34.onnx", *imgs, "--json", "--top", "3"], 0,
             same_as(folder, "r34.pt", imgs)),
        Case(1, "classify r34-56.onnx (56 px, any batch): sums to 1",
             ["classify", "r34-56.onnx", *imgs, "--json", "--top", "2"], 0,
             lambda o: all(abs(sum(t["prob"] for t in r["top"]) - 1) < 1e-5 for r in json.loads(o.stdout))),
        Case(2, "classify resnet18 --weights resnet50.pth",
             ["classify", "resnet18", "p0.png", "--weights", "resnet50.pth"]),
        Case(2, "classify resnet34 --weights resnet50.pth",
             ["classify", "resnet34", "p0.png", "--weights", "resnet50.pth"]),
        Case(2, "eval densenet121 --weights resnet50.pth", ["eval", "densenet121", "--weights", "resnet50.pth"]),
        Case(2, "detect yolov3-tiny --weights tiny_plus.pth", ["detect", "yolov3-tiny", "p0.png", "--weights",
                                                               "tiny_plus.pth", "--no-save"]),
        Case(2, "train resnet18 --weights resnet50.pth", ["train", "resnet18", "--weights", "resnet50.pth", "--data",
                                                          "synthetic:textures?n=4&size=32", "--img-size", "32",
                                                          "--no-track", "--out", "r2run"],
             check=lambda o: not (folder / "r2run" / "weights").exists()),
        Case(2, "classify resnet18 --weights resnet50.pth --allow-partial",
             ["classify", "resnet18", "p0.png", "--weights", "resnet50.pth", "--allow-partial"], 2),
        Case(3, "classify dk_nan.pt (checkpoint)", ["classify", "dk_nan.pt", "p0.png", "--json"]),
        Case(3, "detect yolo_nan.pt (checkpoint)", ["detect", "yolo_nan.pt", "p0.png", "--json", "--no-save"]),
        Case(3, "classify alexnet --weights alexnet_inf.pth", ["classify", "alexnet", "p0.png", "--weights",
                                                               "alexnet_inf.pth", "--json"]),
        Case(3, "detect v2tiny.cfg --weights (Darknet, NaN)", ["detect", "v2tiny.cfg", "p0.png", "--weights",
                                                                "v2tiny.weights", "--no-save", "--json"]),
        Case(3, "enroll --weights emb_nan.onnx", ["enroll", "ada", "p0.png", "--weights", "emb_nan.onnx",
                                                  "--no-detect", "--gallery", "g.db"]),
        Case(3, "classify dk_inf.torchscript", ["classify", "dk_inf.torchscript", "p0.png", "--json"]),
        Case(12, "SIGTERM during export onnx", ["export", "r34.pt", "--img-size", "512", "--dynamic-batch", "-o",
                                                "sig1.onnx"], 143, no_tmp, tmp(".sig1.onnx.*.tmp"), signal.SIGTERM),
        Case(12, "SIGINT during export onnx", ["export", "r34.pt", "--img-size", "512", "--dynamic-batch", "-o",
                                               "sig2.onnx"], 130, no_tmp, tmp(".sig2.onnx.*.tmp"), signal.SIGINT),
        Case(12, "SIGTERM during export torchscript", ["export", "dk.pt", "--format", "torchscript", "--img-size",
                                                       "640", "-o", "sig3.torchscript"], 143, no_tmp,
             tmp(".sig3.torchscript.*.tmp"), signal.SIGTERM),
        *[Case(13, f"detect {m} --json", ["detect", m, "p0.png", "--json", "--no-save"], check=stdout_empty)
          for m in ("dk.pt", "dk.onnx", "dk.torchscript", "emb.pt", "emb.onnx", "sty.pt", "sty.onnx", "densenet121")],
        Case(13, "classify yolo.pt", ["classify", "yolo.pt", "p0.png"]),
        Case(13, "classify emb.onnx", ["classify", "emb.onnx", "p0.png"]),
        Case(13, "classify yolov3-tiny (offline)", ["classify", "yolov3-tiny", "p0.png"]),
        Case(13, "enroll --weights yolo.pt", ["enroll", "ada", "p0.png", "--weights", "yolo.pt", "--no-detect",
                                              "--gallery", "g.db"]),
        Case(13, "stylize --model dk.onnx", ["stylize", "p0.png", "--model", "dk.onnx", "-o", "s.png"]),
        Case(14, "export -o ro/x.onnx (read-only)", ["export", "dk.pt", "-o", "ro/x.onnx"]),
        Case(14, "export store/r34.pt (read-only, beside it)", ["export", "store/r34.pt", "--format", "torchscript"]),
        Case(14, "export -o notes.txt/x.onnx", ["export", "dk.pt", "-o", "notes.txt/x.onnx"]),
        Case(14, "export -o existing.onnx (a folder)", ["export", "sty.pt", "-o", "existing.onnx"]),
        Case(15, "export dk.pt --img-size 8 (darknet19)", ["export", "dk.pt", "--img-size", "8"]),
        Case(15, "export dk.pt --img-size 16 --format torchscript", ["export", "dk.pt", "--img-size", "16", "--format",
                                                                    "torchscript"]),
        Case(15, "export yolo.pt --img-size 13 (yolov2-tiny-voc takes it)", ["export", "yolo.pt", "--img-size", "13",
                                                                             "-o", "y13.onnx"], 0),
        Case(15, "export dk.pt --img-size 1000000", ["export", "dk.pt", "--img-size", "1000000"]),
        Case(15, "export r34.pt --img-size 4097", ["export", "r34.pt", "--img-size", "4097"]),
        Case(15, "export sty.pt --img-size 7 --format torchscript", ["export", "sty.pt", "--img-size", "7", "--format",
                                                                    "torchscript"]),
        Case(16, "export --opset 999", ["export", "dk.pt", "--opset", "999"], check=stdout_empty),
        Case(16, "export --opset 24", ["export", "yolo.pt", "--opset", "24"], check=stdout_empty),
        Case(16, "export --opset 6", ["export", "emb.pt", "--opset", "6"], check=stdout_empty),
        Case(16, "export --opset -1", ["export", "emb.pt", "--opset", "-1"], check=stdout_empty),
        Case(16, "export y1.pt --json (fallback exporter): stdout is JSON", ["export", "y1.pt", "--json"], 0,
             lambda o: json.loads(o.stdout)["output"] == "y1.onnx"),
        Case(17, "export --format onnx -o x.torchscript", ["export", "dk.pt", "-o", "x.torchscript"]),
        Case(17, "export -o cls.txt", ["export", "dk.pt", "-o", "cls.txt"]),
        Case(17, "export --format torchscript -o x.onnx",
             ["export", "sty.pt", "--format", "torchscript", "-o", "x.onnx"]),
        Case(17, "export -o x.pt", ["export", "emb.pt", "-o", "x.pt"]),
        Case(17, "export -o UPPER.ONNX (accepted)", ["export", "emb.pt", "-o", "UPPER.ONNX"], 0),
        Case(29, "classify --top 0", ["classify", "resnet18", "p0.png", "--top", "0"]),
        Case(29, "anchors -k abc", ["anchors", "-k", "abc"]),
        Case(29, "detect --every 0", ["detect", "yolo.pt", "v.mp4", "--every", "0"]),
        Case(29, "verify --every 0", ["verify", "p0.png", "--every", "0"]),
        Case(29, "stylize --steps 0", ["stylize", "p0.png", "--steps", "0"]),
        Case(29, "export --opset abc", ["export", "dk.pt", "--opset", "abc"]),
        Case(29, "eval --batch-size -1", ["eval", "dk.pt", "--batch-size", "-1"]),
        Case(29, "classify (missing argument)", ["classify"]),
        Case(29, "gallery list --bogus", ["gallery", "list", "--bogus"]),
        Case(29, "nosuch (unknown command)", ["nosuch"]),
    ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="hostile-models-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    make_models(folder)
    print(f"models made in {time.monotonic() - started:.0f} s ({folder}); cnnkit: {CNNKIT}")
    rows, tracebacks, unexpected = [], 0, 0
    with read_only(folder / "ro", folder / "store") as how:
        print(f"read-only storage: {how}")
        for case in cases(folder):
            o = run(case, folder)
            trace = "Traceback" in o.stderr or "Traceback" in o.stdout
            try:
                ok = o.code == case.code and not trace and (case.check is None or bool(case.check(o)))
            except (ValueError, KeyError, TypeError):
                ok = False
            tracebacks += trace
            unexpected += not ok
            first = next((line for line in o.stderr.splitlines() if line.strip()), "")
            rows.append((case.row, case.name, o.code, first, trace, ok))
            print(f"{case.row:>3} | {case.name[:52]:<52} | {o.code:>3} | {'TRACEBACK' if trace else 'no tb':<9} | "
                  f"{'ok' if ok else 'UNEXPECTED':<10} | {first[:150]}", flush=True)
    print(f"\n{len(rows)} cases, {tracebacks} with a traceback, {unexpected} not as expected "
          f"({time.monotonic() - started:.0f} s)")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
