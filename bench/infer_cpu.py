"""CPU inference: cnnkit's torch path, its ONNX export under onnxruntime, and OpenCV's DNN module
on the same network and weights, timed interleaved in one run (each round runs every path once,
in a rotating order, so load from other processes falls on all of them alike).

    .venv/bin/python bench/infer_cpu.py [--models yolov3-tiny yolov3] [--threads 1 2] [--rounds 10]
                                        [--size 416] [--extras] [--omp-passive]

Darknet models: the packaged .cfg with random weights written by cnnkit's .weights writer; OpenCV
reads the .cfg and .weights (``cv2.dnn.readNetFromDarknet``), cnnkit a checkpoint of the same
weights and the .onnx ``cnnkit export`` writes from it. Each path includes decoding the boxes
(OpenCV's ``[yolo]`` layers decode too). Paths:

- ``torch``: the model as ``load_for_eval`` gives it, under ``no_grad`` (cnnkit before this change)
- ``torch_fast``: batch norm folded into the convolutions, ``inference_mode``, NCHW
- ``torch_fast_cl``: the same in channels-last memory format (measured, not assumed): ``cnnkit detect``'s path
- ``onnxruntime``: the exported file (``intra_op_num_threads`` = threads)
- ``opencv``: ``cv2.dnn`` with ``cv2.setNumThreads``

One JSON line per case (model, threads): median ms per image of each path and its ratio to OpenCV.
``--extras``: also face-resnet per 150 px chip and the fast stylizer at 512 px (torch, onnxruntime,
and OpenCV reading the .onnx).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.deploy.onnxrun import open_session
from cnnkit.core.load.inference import for_inference
from cnnkit.core.load.source import load_for_eval
from cnnkit.core.tasks.base import make_task
from cnnkit.core.weights.checkpoint import save_checkpoint
from cnnkit.model import export


def darknet_files(name: str, size: int, folder: Path) -> tuple[Path, Path, Path]:
    """(cfg, .weights, checkpoint) for a packaged Darknet model with seeded random weights."""
    from cnnkit.plugins.yolo.darknet import packaged_cfg
    from cnnkit.plugins.yolo.weights import save_darknet_weights

    cfg = packaged_cfg(name)
    spec = models.get(str(cfg))
    config = TrainConfig(model=spec.name, img_size=size)
    torch.manual_seed(0)
    task = make_task(spec, config, classes=[f"c{i}" for i in range(80)])
    model = task.build_model().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # stats as a trained network has them
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    weights = save_darknet_weights(model, folder / f"{name}.weights")
    ckpt = save_checkpoint(folder / f"{name}.pt", {"model": spec.name, "task": "detect", "classes": task.classes,
                                                   "model_state": model.state_dict(), "config": config.to_dict(),
                                                   "task_state": task.state})
    return cfg, weights, ckpt


def torch_paths(ckpt: Path) -> dict[str, Callable[[np.ndarray], Any]]:
    task, model, _ = load_for_eval(ckpt)
    plain = task.inference(model)
    fast = task.inference(for_inference(load_for_eval(ckpt)[1]).to(memory_format=torch.contiguous_format))
    fast_cl = task.inference(for_inference(load_for_eval(ckpt)[1]))  # what `cnnkit detect` runs on CPU

    def run_plain(x: np.ndarray) -> Any:
        with torch.no_grad():
            return plain(torch.from_numpy(x))

    def run_fast(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return fast(torch.from_numpy(x))

    def run_fast_cl(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return fast_cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))

    return {"torch": run_plain, "torch_fast": run_fast, "torch_fast_cl": run_fast_cl}


def onnx_path(onnx: Path) -> Callable[[np.ndarray], Any]:
    session = open_session(onnx, "cpu")  # threads from CNNKIT_THREADS
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def opencv_path(net: Any) -> Callable[[np.ndarray], Any]:
    outputs = net.getUnconnectedOutLayersNames()

    def run(x: np.ndarray) -> Any:
        net.setInput(x)
        return net.forward(outputs)

    return run


def interleaved(paths: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms of each path over ``rounds`` rounds (after one warm-up call each)."""
    for fn in paths.values():
        fn(x)
    times: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            paths[name](x)
            times[name].append((time.perf_counter() - start) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def case(name: str, threads: int, build: Callable[[], dict[str, Callable]], x: np.ndarray, rounds: int) -> dict:
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    os.environ["CNNKIT_THREADS"] = str(threads)
    ms = interleaved(build(), x, rounds)
    row: dict[str, Any] = {"model": name, "threads": threads, "batch": 1, "input": list(x.shape), "ms": ms}
    ref = ms.get("opencv")
    row["onnxruntime_to_torch_fast"] = round(ms["onnxruntime"] / min(ms["torch_fast"], ms["torch_fast_cl"]), 3)
    if ref:
        row["ratio_to_opencv"] = {k: round(v / ref, 3) for k, v in ms.items() if k != "opencv"}
        torch_best = min(v for k, v in ms.items() if k.startswith("torch_fast"))
        row["torch_path_ratio"] = round(torch_best / ref, 3)
        row["fastest_cnnkit_ratio"] = round(min(torch_best, ms["onnxruntime"]) / ref, 3)
    row["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return row


def darknet_case(name: str, size: int, threads: list[int], rounds: int, folder: Path) -> None:
    cfg, weights, ckpt = darknet_files(name, size, folder)
    onnx = Path(export(ckpt, img_size=size, out=folder / f"{name}.onnx").output)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    ours = torch_paths(ckpt)["torch_fast"](x)[1].reshape(-1)
    theirs = np.concatenate([o[:, 5:].reshape(-1) for o in opencv_path(net)(x)])  # objectness x class already
    print(json.dumps({"model": name, "check": "sorted class scores, cnnkit vs OpenCV",
                      "max_diff": float(np.abs(np.sort(ours.numpy()) - np.sort(theirs)).max())}), flush=True)
    for t in threads:
        print(json.dumps(case(name, t, lambda: {**torch_paths(ckpt), "onnxruntime": onnx_path(onnx),
                                                 "opencv": opencv_path(net)}, x, rounds)), flush=True)


def extra_case(name: str, ckpt: str | Path, size: int, threads: list[int], rounds: int, folder: Path) -> None:
    """A model without a Darknet twin: OpenCV runs cnnkit's own .onnx."""
    onnx = Path(export(ckpt, img_size=size, out=folder / f"{name}.onnx").output)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    try:
        theirs = {"opencv": opencv_path(cv2.dnn.readNetFromONNX(str(onnx)))}
    except cv2.error as exc:  # the stylizer's instance norm over free H and W: OpenCV cannot read it
        theirs = {}
        print(json.dumps({"model": name,
                          "opencv": "cannot read the .onnx: " + str(exc).strip().splitlines()[-2][:160]}))
    for t in threads:
        print(json.dumps(case(name, t, lambda: {**torch_paths(ckpt), "onnxruntime": onnx_path(onnx), **theirs},
                              x, rounds)), flush=True)


def fast_style_checkpoint(folder: Path) -> Path:
    spec = models.get("fast-style")
    config = TrainConfig(model="fast-style", img_size=512)
    task = make_task(spec, config)
    model = task.build_model().eval()
    return save_checkpoint(folder / "fast-style.pt", {"model": "fast-style", "task": "stylize", "classes": [],
                                                      "model_state": model.state_dict(), "config": config.to_dict(),
                                                      "task_state": task.state})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov3-tiny", "yolov3"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--extras", action="store_true", help="Also face-resnet (150 px) and fast-style (512 px).")
    parser.add_argument("--omp-passive", action="store_true", help="Run with OMP_WAIT_POLICY=PASSIVE (OpenMP "
                        "threads sleep instead of spinning between parallel regions: it matters on a loaded machine).")
    args = parser.parse_args()
    if args.omp_passive and os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":  # must be set before OpenMP starts
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    load_plugins()
    print(json.dumps({"cpu_count": os.cpu_count(), "torch": torch.__version__, "opencv": cv2.__version__,
                      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
                      "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.models:
            darknet_case(name, args.size, args.threads, args.rounds, folder)
        if args.extras:
            extra_case("face-resnet", "face-resnet", 150, args.threads, args.rounds * 3, folder)
            extra_case("fast-style", fast_style_checkpoint(folder), 512, args.threads, args.rounds, folder)

if __name__ == "__main__":
    main()
