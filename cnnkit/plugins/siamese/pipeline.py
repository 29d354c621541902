"""Image -> aligned face chip -> embedding -> gallery decision: what `enroll` and `verify` run.

The embedder is a checkpoint or, by default, the pretrained ``face-resnet`` (dlib's face ResNet):
a gallery records which (a registered model's name or the checkpoint's path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.api import CnnkitError, Scorer, load_for_eval, read_image, resolve_device, state_fingerprint
from cnnkit.plugins.siamese.backends import ModelInfo
from cnnkit.plugins.siamese.faces import Face, face_chips


@dataclass
class Decision:
    """The outcome of one verification (what ``--json`` prints)."""

    match: bool
    name: str | None
    distance: float | None
    threshold: float
    closest: str | None = None
    image: str = ""
    face: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "face": self.face, "match": self.match, "name": self.name,
                "closest": self.closest, "distance": self.distance, "threshold": self.threshold}


PRETRAINED = "face-resnet"  # the embedder when neither --weights nor the gallery names one


def is_model_name(source: str) -> bool:
    """Does a gallery's recorded source name a registered model (rather than a checkpoint file)?"""
    from cnnkit.api import models

    return not Path(source).exists() and source in models


class Embedder:
    """An embedder (a checkpoint, or a registered model's own weights) with its fingerprint and threshold."""

    def __init__(self, checkpoint: str | Path = PRETRAINED, device: str = "cpu") -> None:
        self.checkpoint = str(checkpoint) if is_model_name(str(checkpoint)) else str(Path(checkpoint).resolve())
        self.task, self.model, ck = load_for_eval(checkpoint)
        if ck["task"] != "embed":
            raise CnnkitError(f"{checkpoint}: a {ck['task']} checkpoint ({ck['model']}), not an embedder "
                              "(train one: `cnnkit train siamese-small`)")
        self.device = resolve_device(device)
        self.model.to(self.device)
        state = self.task.state
        self.threshold: float | None = float(state["threshold"]) if "threshold" in state else None
        self.scorer = Scorer.from_state(state.get("metric", "l2"), {k: v.numpy() for k, v in ck["model_state"].items()
                                                                    if k.startswith("similarity.")})
        self.info = ModelInfo(ck.get("fingerprint") or state_fingerprint(ck["model_state"]), ck["model"],
                              self.checkpoint, self.scorer.metric, int(self.model.embedding_dim))

    def crops(self, path: str | Path, detect: bool = True, all_faces: bool = False,
              detector: str = "cnn") -> list[tuple[np.ndarray, Face | None]]:
        """The aligned face chip(s) of an image file (the whole image with ``detect=False``)."""
        image = read_image(path)
        if not detect:
            return [(image, None)]
        return face_chips(image, all_faces=all_faces, source=str(path), detector=detector)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of RGB face crops."""
        vectors = self.task.predict(self.model, images, self.device)
        return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, self.info.dim), np.float32)


def decide(closest: str, distance: float, threshold: float, claim: str | None = None) -> Decision:
    """1:1 against ``claim`` (``closest``: its closest enrolled image) or 1:N (``closest``: the
    closest person overall), accepted when the distance is at most ``threshold``."""
    match = distance <= threshold
    if claim is not None:
        return Decision(match, claim, distance, threshold, closest=claim)
    return Decision(match, closest if match else None, distance, threshold, closest=closest)
