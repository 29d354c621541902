"""Exported graphs run without torch: onnxruntime on numpy arrays, prepared and read back with the
same numpy code the torch path uses (:mod:`cnnkit.core.data.pixels`, :mod:`cnnkit.core.tasks.draw`).

A command that runs one photo through a model pays mostly for importing torch (about 2 CPU seconds
here, four times an OpenCV script's whole run); this path imports onnxruntime instead. It runs the
graphs whose output needs no torch to read: detectors exported with their NMS inside (``cnnkit
export --nms``: final boxes, scores and labels). Everything else runs on torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.core.data.pixels import letterbox, to_array
from cnnkit.core.deploy.formats import META_KEY
from cnnkit.core.deploy.onnxrun import OnnxRunner
from cnnkit.core.tasks.draw import records
from cnnkit.core.tasks.results import Detections


def read_info(meta: dict[str, str]) -> dict[str, Any] | None:
    """The cnnkit metadata of an exported file (tensors left encoded), or None without it."""
    if META_KEY not in meta:
        return None
    info = json.loads(meta[META_KEY])
    info["normalization"] = json.loads(meta.get("normalization", "null"))
    return info


class LiteDetector:
    """A detector's graph with NMS inside, one image a run: letterbox, onnxruntime, boxes back to
    the image's pixels; ``predict`` gives what ``DetectionTask.predict`` gives (records an image)."""

    task = "detect"
    batch_size = 1  # one image a graph run

    def __init__(self, runner: OnnxRunner, info: dict[str, Any]) -> None:
        self.runner, self.info = runner, info
        self.classes = list(info["classes"])
        self.size = int(info["config"]["img_size"])
        norm = info["normalization"]
        self.norm = (tuple(norm["mean"]), tuple(norm["std"])) if norm else False

    @staticmethod
    def accepts(info: dict[str, Any]) -> bool:
        """Graphs with the final detections as outputs (exported with their NMS inside)."""
        return bool(info["attrs"].get("nms"))

    def predict(self, images: list[np.ndarray], conf: float = 0.25, **_: Any) -> list[list[dict[str, Any]]]:
        found = []
        for image in images:
            boxed, lb = letterbox(image, self.size)
            boxes, scores, labels = self.runner.run(to_array(boxed, self.norm)[None])
            keep = scores >= conf  # the graph's own threshold is the floor
            found.append(records(lb.unmap(boxes[keep], image.shape[:2]), scores[keep], labels[keep], self.classes))
        return found

    def result(self, image: str, pixels: np.ndarray, prediction: Any, **_: Any) -> Detections:
        return Detections(image, prediction, pixels)


RUNNERS: dict[str, type] = {"detect": LiteDetector}  # task -> its torch-free runner; other tasks run on torch


def open_lite(path: str | Path, device: str = "cpu") -> Any:
    """The torch-free runner of an exported ONNX file, or None when its graph needs torch."""
    if Path(path).suffix.lower() != ".onnx":
        return None
    runner = OnnxRunner(path, device)
    info = read_info(runner.metadata())
    kind = RUNNERS.get(info["task"]) if info else None
    return kind(runner, info) if kind is not None and kind.accepts(info) else None
