"""The gallery: a SQLite database of enrolled people and their pre-computed embeddings.

Write-ahead logging with ``synchronous=FULL`` and one transaction per enrollment: a crash or
Ctrl-C mid-enroll rolls that enrollment back and loses nothing stored before it. Every
embedding row carries the fingerprint of the model that made it, and the gallery refuses
embeddings (or queries) from any other model: distances between two models' embeddings mean
nothing.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cnnkit.core.errors import CnnkitError

SCHEMA_VERSION = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id);
"""


@dataclass(frozen=True)
class ModelInfo:
    """The model a gallery's embeddings come from."""

    fingerprint: str  # sha256 of the weights
    model: str  # registered model name
    checkpoint: str  # where the checkpoint was when it enrolled (the default for later commands)
    metric: str  # "l2" or "similarity" (see scoring.py)
    dim: int


TABLES = {"meta", "identities", "embeddings"}
BUSY_TIMEOUT_S = 30.0  # sqlite's wait for another writer, per try (CNNKIT_GALLERY_TIMEOUT overrides)
BUSY_TRIES = 4


def busy_timeout() -> float:
    """``CNNKIT_GALLERY_TIMEOUT`` (seconds, a positive number) or :data:`BUSY_TIMEOUT_S`."""
    raw = os.environ.get("CNNKIT_GALLERY_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else BUSY_TIMEOUT_S
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise CnnkitError(f"CNNKIT_GALLERY_TIMEOUT={raw}: give a positive number of seconds")
    return value


class Gallery:
    """Open (or create) the gallery at ``path``; use as a context manager or call :meth:`close`.

    ``create=False``: the file must exist and hold a gallery's tables (nothing is added to another
    database). ``readonly=True``: opened with sqlite's ``mode=ro`` (list, export, verify), so reading
    never changes the file.
    """

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.db_timeout = busy_timeout()
        if not create and not self.path.is_file():
            raise CnnkitError(f"{self.path}: no such gallery (enroll someone first: `cnnkit enroll NAME IMAGE...`)")
        try:
            if readonly:
                self.db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                          isolation_level=None, timeout=self.db_timeout)
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None, timeout=self.db_timeout)
            if not create:
                self._check_schema()
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self.db.executescript(SCHEMA)
            version = self._meta().get("schema", SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            raise CnnkitError(f"{self.path}: not a cnnkit gallery ({exc})") from None
        if version != SCHEMA_VERSION:
            raise CnnkitError(f"{self.path}: gallery schema {version} is not supported (this cnnkit writes {SCHEMA_VERSION})")

    def _check_schema(self) -> None:
        """Refuse a database without the gallery's tables before touching it."""
        found = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not TABLES <= found:
            self.db.close()
            raise CnnkitError(f"{self.path}: not a cnnkit gallery (no {', '.join(sorted(TABLES - found))} "
                              "table); it was left untouched")

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: committed at the end, rolled back on any exception (Ctrl-C included)."""
        for attempt in range(1, BUSY_TRIES + 1):
            try:
                self.db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == BUSY_TRIES:
                    raise CnnkitError(f"{self.path} is locked by another cnnkit process; gave up after "
                                      f"{attempt} tries of {self.db_timeout:g} s: try again when it is done") from None
                print(f"{self.path} is busy (another process is writing); waiting, try {attempt + 1} of {BUSY_TRIES}",
                      file=sys.stderr)
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------- model binding
    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    @property
    def model(self) -> ModelInfo | None:
        """The model this gallery's embeddings come from (None while it is empty)."""
        meta = self._meta()
        if "fingerprint" not in meta or self.count() == 0:
            return None
        return ModelInfo(meta["fingerprint"], meta["model"], meta["checkpoint"], meta["metric"], int(meta["dim"]))

    def check(self, info: ModelInfo) -> None:
        """Refuse a model other than the one that made the stored embeddings."""
        own = self.model
        if own is not None and own.fingerprint != info.fingerprint:
            raise CnnkitError(
                f"{self.path} holds embeddings from another model ({own.model}, fingerprint {own.fingerprint[:12]}, "
                f"enrolled with {own.checkpoint}); these weights are {info.model} {info.fingerprint[:12]}. "
                "Use the gallery's checkpoint, another --gallery, or re-enroll everyone with the new weights")

    # ---------------------------------------------------------------- writing
    def enroll(self, name: str, vectors: np.ndarray, sources: list[str], info: ModelInfo) -> int:
        """Add ``vectors`` (N, D) for ``name`` in one transaction; returns the person's total."""
        name = name.strip()
        if not name:
            raise CnnkitError("the name to enroll is empty")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(sources), -1)
        if vectors.shape[1] != info.dim:
            raise CnnkitError(f"embeddings are {vectors.shape[1]}-d but the model says {info.dim}")
        now = time.time()
        with self.transaction() as db:
            self.check(info)
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("schema", SCHEMA_VERSION), ("fingerprint", info.fingerprint), ("model", info.model),
                ("checkpoint", info.checkpoint), ("metric", info.metric), ("dim", str(info.dim))])
            db.execute("INSERT OR IGNORE INTO identities (name, created) VALUES (?, ?)", (name, now))
            (identity,) = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            db.executemany(
                "INSERT INTO embeddings (identity_id, fingerprint, dim, vector, source, created) VALUES (?, ?, ?, ?, ?, ?)",
                [(identity, info.fingerprint, info.dim, v.tobytes(), src, now) for v, src in zip(vectors, sources)])
            (total,) = db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", (identity,)).fetchone()
        return int(total)

    def remove(self, name: str) -> int:
        """Delete a person and their embeddings; returns how many embeddings went."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CnnkitError(f"'{name}' is not enrolled in {self.path}")
            (count,) = db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", row).fetchone()
            db.execute("DELETE FROM identities WHERE id = ?", row)
        return int(count)

    # ---------------------------------------------------------------- reading
    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def people(self) -> list[dict[str, Any]]:
        """Enrolled people: name, number of embeddings, enrollment time (unix seconds)."""
        rows = self.db.execute(
            "SELECT i.name, COUNT(e.id), i.created FROM identities i LEFT JOIN embeddings e ON e.identity_id = i.id "
            "GROUP BY i.id ORDER BY i.name").fetchall()
        return [{"name": n, "embeddings": int(c), "created": t} for n, c, t in rows]

    def embeddings(self, name: str | None = None) -> tuple[list[str], np.ndarray]:
        """Every stored embedding (or one person's) as (names per row, (N, D) float32 matrix)."""
        query = ("SELECT i.name, e.vector, e.dim FROM embeddings e JOIN identities i ON i.id = e.identity_id"
                 + (" WHERE i.name = ?" if name is not None else "") + " ORDER BY e.id")
        rows = self.db.execute(query, (name,) if name is not None else ()).fetchall()
        if name is not None and not rows:
            raise CnnkitError(f"'{name}' is not enrolled in {self.path} (see `cnnkit gallery list`)")
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        matrix = np.stack([np.frombuffer(blob, np.float32, count=dim) for _, blob, dim in rows])
        return [n for n, _, _ in rows], matrix

    def export(self) -> dict[str, Any]:
        """The whole gallery as plain data (model, people, embeddings as lists of floats)."""
        names, matrix = self.embeddings()
        model = self.model
        people: dict[str, list[list[float]]] = {}
        for n, v in zip(names, matrix):
            people.setdefault(n, []).append([float(x) for x in v])
        return {"gallery": str(self.path), "model": vars(model) if model else None,
                "identities": [{"name": n, "embeddings": e} for n, e in people.items()]}
