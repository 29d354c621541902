"""How far apart two embeddings are, in numpy (the gallery and the evaluation share it).

``l2``: Euclidean distance between embeddings (0 to 2 for L2-normalised ones), computed for a 1:N
search as ``sqrt(|g|^2 - 2 G q + |q|^2)`` with one matrix-vector product. ``similarity``: one minus the learned
similarity ``sigmoid(sum_k w_k |a_k - b_k| + b)`` (0 to 1). Smaller always means "more alike".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.core.base.errors import CnnkitError

METRICS = ("l2", "similarity")


@dataclass
class Scorer:
    """Distances under one metric (``w``, ``b``: the similarity head's weights)."""

    metric: str = "l2"
    w: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise CnnkitError(f"unknown distance metric '{self.metric}' ({', '.join(METRICS)})")

    @classmethod
    def from_state(cls, metric: str, state: dict[str, Any]) -> "Scorer":
        """The scorer for a model's state dict (tensors or arrays)."""
        if metric != "similarity":
            return cls(metric)
        w = np.asarray(state["similarity.linear.weight"], dtype=np.float32).reshape(-1)
        return cls(metric, w, float(np.asarray(state["similarity.linear.bias"]).reshape(-1)[0]))

    def pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Distances between the rows of ``a`` and the rows of ``b`` (same shape)."""
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if self.metric == "l2":
            return np.sqrt(((a - b) ** 2).sum(1))
        return 1.0 - _sigmoid(np.abs(a - b) @ self.w + self.b)

    def search(self, query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Distances from one query (D,) to every row of ``gallery`` (N, D)."""
        query = np.asarray(query, np.float32)
        if self.metric == "l2":
            squared = (gallery * gallery).sum(1) - 2.0 * (gallery @ query) + query @ query
            return np.sqrt(np.clip(squared, 0.0, None))
        return 1.0 - _sigmoid(np.abs(gallery - query) @ self.w + self.b)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
