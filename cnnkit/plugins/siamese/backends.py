"""What every face gallery backend shares: the abstract :class:`GalleryBase` with every method the
commands and the Python API call, the model a gallery is bound to, the one rule for names on every
backend, and the table that picks a backend by the gallery's URL scheme (a SQLite file, or
``milvus://HOST:PORT/COLLECTION``)."""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.api import CnnkitError, Scorer, resolve

# URL scheme -> the backend's class ("" is a path: a SQLite file); a new backend is one more row
BACKENDS = {"": "cnnkit.plugins.siamese.gallery:Gallery", "milvus": "cnnkit.plugins.siamese.milvus:MilvusGallery"}


NAME_MAX = 128  # characters in a name, on every backend (at most 512 bytes of UTF-8: Milvus's name field)

DIRECTION_MARKS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class ModelInfo:
    """The model a gallery's embeddings come from."""

    fingerprint: str  # sha256 of the weights
    model: str  # registered model name
    checkpoint: str  # where the checkpoint was when it enrolled (the default for later commands)
    metric: str  # "l2" or "similarity" (see scoring.py)
    dim: int


def _invisible(char: str) -> bool:
    """A character that moves or hides text in a terminal: controls (escape, newline), line and
    paragraph separators, lone surrogates (undecodable bytes), direction marks and overrides."""
    return unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in DIRECTION_MARKS


def shown(name: str) -> str:
    """``name`` as plain text for a terminal: invisible characters as escapes (``\\n``, ``\\x1b``)."""
    return "".join(c.encode("unicode_escape", "backslashreplace").decode("ascii") if _invisible(c) else c
                   for c in name)


def checked_name(name: str) -> str:
    """The name to enroll, stripped; the same limits on every backend, checked before anything is
    written: not empty, at most ``NAME_MAX`` characters, nothing :func:`_invisible`."""
    name = name.strip()
    if not name:
        raise CnnkitError("the name to enroll is empty")
    if len(name) > NAME_MAX:
        raise CnnkitError(f"the name to enroll is {len(name)} characters long ('{shown(name[:24])}...'); "
                          f"at most {NAME_MAX}")
    bad = next((c for c in name if _invisible(c)), None)
    if bad is not None:
        raise CnnkitError(f"the name '{shown(name)}' holds a control character ({shown(bad)}): "
                          "use letters, digits, spaces and punctuation")
    return name


def checked_vectors(name: str, vectors: np.ndarray, rows: int, info: ModelInfo) -> np.ndarray:
    """``vectors`` as an (rows, D) float32 array; another dimension or a non-finite value is
    refused before anything is stored."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(rows, -1)
    if vectors.shape[1] != info.dim:
        raise CnnkitError(f"embeddings are {vectors.shape[1]}-d but the model says {info.dim}")
    if not np.isfinite(vectors).all():
        raise CnnkitError(f"an embedding of {shown(name)} is not finite (NaN or infinity): nothing was enrolled")
    return vectors


def export(gallery: Any) -> dict[str, Any]:
    """A gallery (SQLite or Milvus) as plain data: model, people, embeddings as lists of floats."""
    names, matrix = gallery.embeddings()
    model = gallery.model
    people: dict[str, list[list[float]]] = {}
    for n, v in zip(names, matrix.tolist()):
        people.setdefault(n, []).append(v)
    return {"gallery": str(gallery.path), "model": vars(model) if model else None,
            "identities": [{"name": n, "embeddings": e} for n, e in people.items()]}


class GalleryBase(ABC):
    """A gallery backend: everything the commands and the Python API call. Backends are chosen by
    the gallery's URL scheme (:data:`BACKENDS`); the model check and ``with`` are shared here."""

    path: Any
    local = False  # a file on this machine (its leftovers can be removed when a first enroll fails)

    @property
    @abstractmethod
    def model(self) -> ModelInfo | None:
        """The model whose embeddings the gallery holds (None while empty)."""

    @abstractmethod
    def enroll(self, name: str, vectors: np.ndarray, sources: list[str], info: ModelInfo) -> int:
        """Store ``name``'s embeddings (all or none); their number for that name afterwards."""

    @abstractmethod
    def remove(self, name: str) -> int:
        """Remove a person; how many embeddings went."""

    @abstractmethod
    def count(self) -> int:
        """Embeddings stored."""

    @abstractmethod
    def people(self) -> list[dict[str, Any]]:
        """``[{"name", "embeddings"}]``, one a person."""

    @abstractmethod
    def embeddings(self, name: str | None = None) -> tuple[list[str], np.ndarray]:
        """Every embedding (or ``name``'s) with its person's name."""

    @abstractmethod
    def nearest(self, query: np.ndarray, scorer: Scorer, index: str = "exact") -> tuple[str, float]:
        """The closest person to ``query`` and the distance."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def reindex(self) -> Any:
        """Rebuild the search side from the stored rows (a backend with its own index: one line)."""
        raise CnnkitError(f"{self.path}: this gallery keeps its own index")

    def build_hnsw(self) -> int:
        """Build the approximate index (a backend with its own index: one line)."""
        raise CnnkitError(f"{self.path}: this gallery keeps its own index")

    def export(self) -> dict[str, Any]:
        """The whole gallery as plain data (model, people, embeddings as lists of floats)."""
        return export(self)
    def check(self, info: ModelInfo) -> None:
        """Refuse a model other than the one that made the stored embeddings."""
        own = self.model
        if own is not None and own.fingerprint != info.fingerprint:
            raise CnnkitError(
                f"{self.path} holds embeddings from another model ({own.model}, fingerprint {own.fingerprint[:12]}, "
                f"enrolled with {own.checkpoint}); these weights are {info.model} {info.fingerprint[:12]}. "
                "Use the gallery's checkpoint, another --gallery, or re-enroll everyone with the new weights")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def scheme_of(uri: str | Path) -> str:
    """A gallery's URL scheme (``milvus``), or "" for a path."""
    text = str(uri)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def open_gallery(uri: str | Path, create: bool = True, readonly: bool = False) -> GalleryBase:
    """The gallery at ``uri``, opened by the backend its scheme names (:data:`BACKENDS`)."""
    scheme = scheme_of(uri)
    if scheme not in BACKENDS:
        raise CnnkitError(f"{uri}: no gallery backend for {scheme}:// (known: a file path, "
                          f"{', '.join(s + '://' for s in BACKENDS if s)})")
    return resolve(BACKENDS[scheme])(uri, create=create, readonly=readonly)
