"""ONNX files run with onnxruntime on numpy arrays, and their metadata read: no torch, so a command
that runs an exported graph never pays for importing it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.core.base.errors import CnnkitError


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line (or its type's name), cut to ``limit`` characters."""
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:limit]


def open_session(path: str | Path, device: str = "cpu") -> Any:
    """An onnxruntime session: CUDA first where asked for and installed, else CPU; threads from
    ``CNNKIT_THREADS`` when set."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    threads = int(os.environ.get("CNNKIT_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if str(device).startswith(("cuda", "auto")) and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:
        raise CnnkitError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


class OnnxRunner:
    """``run(x)``: the graph's outputs for a float32 NCHW batch; a graph made for a fixed batch
    size runs the batch in pieces of that size."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path)
        self.session = open_session(path, device)
        self.input = self.session.get_inputs()[0]

    def metadata(self) -> dict[str, str]:
        """The file's metadata properties (as ``cnnkit export`` wrote them)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def shape(self) -> list[Any]:
        """The input's shape (ints for fixed axes, names for free ones)."""
        return list(self.input.shape)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        want = self.shape
        if any(isinstance(n, int) and x.shape[i] != n for i, n in list(enumerate(want))[1:]):
            raise CnnkitError(f"{self.path} takes inputs of shape {want} and got {list(x.shape)} "
                              "(export again with that --img-size)")
        x = np.ascontiguousarray(x, np.float32)
        if isinstance(want[0], int) and len(x) != want[0]:  # a fixed-batch graph: one run a piece
            runs = [self.session.run(None, {self.input.name: x[i:i + want[0]]}) for i in range(0, len(x), want[0])]
            return [np.concatenate(parts) for parts in zip(*runs)]
        return self.session.run(None, {self.input.name: x})
