"""The gallery: a SQLite database of enrolled people and their pre-computed embeddings.

Write-ahead logging with ``synchronous=FULL`` and one transaction per enrollment: a crash or
Ctrl-C mid-enroll rolls that enrollment back and loses nothing stored before it. Every
embedding row carries the fingerprint of the model that made it, and the gallery refuses
embeddings (or queries) from any other model: distances between two models' embeddings mean
nothing. Names are checked once for every backend (:func:`checked_name`) and printed through
:func:`shown`. On read-only storage the database is read as immutable and searched in memory.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cnnkit.api import CnnkitError, Scorer
from cnnkit.plugins.siamese import vectors as vectors_file
from cnnkit.plugins.siamese.backends import GalleryBase, ModelInfo, checked_name, checked_vectors, shown

SCHEMA_VERSION = "1"
NEW_GENERATION = "lower(hex(randomblob(16)))"
# Any change to the embeddings, by cnnkit or anyone else, gives the gallery a new random generation;
# the search side (vectors.py) records the generation it mirrors, so a stale one is always seen.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS identities (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL)",
    """CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '', created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id)",
    f"INSERT OR IGNORE INTO meta VALUES ('generation', {NEW_GENERATION})",
) + tuple(f"""CREATE TRIGGER IF NOT EXISTS embeddings_{event.lower()} AFTER {event} ON embeddings
BEGIN UPDATE meta SET value = {NEW_GENERATION} WHERE key = 'generation'; END"""
          for event in ("INSERT", "UPDATE", "DELETE"))
TRIGGERS = {"embeddings_insert", "embeddings_update", "embeddings_delete"}
BLOCK = 65_536  # rows read from SQLite at a time when the search side is rebuilt


TABLES = {"meta", "identities", "embeddings"}
BUSY_TIMEOUT_S = 30.0  # sqlite's wait for another writer, per try (CNNKIT_GALLERY_TIMEOUT overrides)
BUSY_TRIES = 4


class Unwritable(CnnkitError):
    """The gallery cannot be written here (read-only storage, no permission)."""

    def __init__(self, path: Path, exc: BaseException, changed: str = "") -> None:
        super().__init__(f"{path}: the gallery cannot be written here ({exc}: read-only storage or no "
                         f"permission){changed}")


def _cannot_write(exc: BaseException) -> bool:
    """Does this error say the gallery or its folder is read-only (or not ours to write)?"""
    if isinstance(exc, OSError):
        return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    return "readonly" in str(exc) or "unable to open database file" in str(exc)


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


class Gallery(GalleryBase):
    """Open (or create) the gallery at ``path``; use as a context manager or call :meth:`close`.

    ``create=False``: the file must exist. An existing database without a gallery's tables is
    refused untouched either way. ``readonly=True``: opened with sqlite's ``mode=ro`` (list, export,
    verify), so reading never changes the database (a stale search side is rebuilt beside it); on
    read-only storage, where not even the ``-shm`` beside it can be made, as ``immutable``.
    """

    local = True

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.vectors_path = self.path.with_name(self.path.name + "-vectors")
        self.readonly = readonly
        self.db_timeout = busy_timeout()
        self.graph = None  # the HNSW graph, opened by the first ``nearest(..., index="hnsw")``
        self._searched: vectors_file.VectorFile | None = None  # the search side last checked
        self._distrust = ""  # why the mapped search side cannot be believed (a row unlike the database's)
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if not create and not exists:
            raise CnnkitError(f"{self.path}: no such gallery (enroll someone first: `cnnkit enroll NAME IMAGE...`)")
        try:
            if readonly:
                self.db = self._connect_readonly()
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None, timeout=self.db_timeout)
            if exists:
                self._check_schema()
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("PRAGMA foreign_keys=ON")
                triggers = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
                if not TRIGGERS <= triggers:
                    with self.transaction() as db:  # all tables at once (concurrent creators see all or none)
                        for statement in SCHEMA:
                            db.execute(statement)
            version = self._meta().get("schema", SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            if not readonly and _cannot_write(exc):
                raise Unwritable(self.path, exc) from None
            raise CnnkitError(f"{self.path}: not a cnnkit gallery ({exc})") from None
        if version != SCHEMA_VERSION:
            raise CnnkitError(f"{self.path}: gallery schema {version} is not supported "
                              f"(this cnnkit writes {SCHEMA_VERSION})")

    def _connect_readonly(self) -> sqlite3.Connection:
        """``mode=ro``; where that cannot open the database because not even its ``-shm`` can be made
        beside it (read-only storage) and no ``-wal`` holds changes, ``immutable=1``."""
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.db_timeout)
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if "unable to open" not in str(exc) or (wal.is_file() and wal.stat().st_size > 0):
                raise
        return sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)

    def _check_schema(self) -> None:
        """Refuse a database without the gallery's tables before touching it."""
        found = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if (found or self.readonly) and not TABLES <= found:
            self.db.close()
            raise CnnkitError(f"{self.path}: not a cnnkit gallery (no {', '.join(sorted(TABLES - found))} "
                              "table); it was left untouched")

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
                if _cannot_write(exc):
                    raise Unwritable(self.path, exc) from None
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == BUSY_TRIES:
                    raise CnnkitError(f"{self.path} is locked by another cnnkit process; gave up after "
                                      f"{attempt} tries of {self.db_timeout:g} s: try again when it is done") from None
                print(f"{self.path} is busy (another process is writing); waiting, try {attempt + 1} of {BUSY_TRIES}",
                      file=sys.stderr)
        try:
            yield self.db
        except BaseException as exc:
            self.db.execute("ROLLBACK")
            if isinstance(exc, (sqlite3.OperationalError, OSError)) and _cannot_write(exc):
                raise Unwritable(self.path, exc, "; nothing was changed") from None
            if isinstance(exc, OSError):  # a full disk
                raise CnnkitError(f"{self.path}: {exc.strerror or exc} writing {exc.filename or 'its search side'}; "
                                  "nothing was changed") from None
            raise
        self.db.execute("COMMIT")

    # ---------------------------------------------------------------- model binding
    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def _dim(self) -> int:
        value = self._meta().get("dim", "")
        if not value.isdigit() or int(value) == 0:
            raise CnnkitError(f"corrupt gallery: {self.path}: its dimension {value!r} is not a positive integer")
        return int(value)

    @property
    def model(self) -> ModelInfo | None:
        """The model this gallery's embeddings come from (None while it is empty)."""
        meta = self._meta()
        if "fingerprint" not in meta or self.db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchone() is None:
            return None
        return ModelInfo(meta["fingerprint"], meta["model"], meta["checkpoint"], meta["metric"], self._dim())

    # ---------------------------------------------------------------- writing
    def enroll(self, name: str, vectors: np.ndarray, sources: list[str], info: ModelInfo) -> int:
        """Add ``vectors`` (N, D) for ``name`` in one transaction; returns the person's total."""
        name = checked_name(name)
        vectors = checked_vectors(name, vectors, len(sources), info)
        now = time.time()
        with self.transaction() as db:
            self.check(info)
            before = self._meta()["generation"]
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("schema", SCHEMA_VERSION), ("fingerprint", info.fingerprint), ("model", info.model),
                ("checkpoint", info.checkpoint), ("metric", info.metric), ("dim", str(info.dim))])
            db.execute("INSERT OR IGNORE INTO identities (name, created) VALUES (?, ?)", (name, now))
            (identity,) = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            ids = np.array([db.execute(
                "INSERT INTO embeddings (identity_id, fingerprint, dim, vector, source, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (identity, info.fingerprint, info.dim, v.tobytes(), src, now)).lastrowid
                for v, src in zip(vectors, sources)], np.int64)
            (total,) = db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", (identity,)).fetchone()
            after = self._meta()["generation"]
            if not vectors_file.append(self.vectors_path, before, ids, vectors, after):
                self._write_vectors(after)
        return int(total)

    def remove(self, name: str) -> int:
        """Delete a person and their embeddings; returns how many embeddings went."""
        with self.transaction() as db:
            row = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise CnnkitError(f"'{shown(name)}' is not enrolled in {self.path}")
            before = self._meta()["generation"]
            gone = np.array([i for (i,) in db.execute("SELECT id FROM embeddings WHERE identity_id = ?", row)],
                            np.int64)
            db.execute("DELETE FROM identities WHERE id = ?", row)
            after = self._meta()["generation"]
            current = vectors_file.VectorFile.open(self.vectors_path)
            if current is not None and current.generation == before and current.altered() is None:
                keep = ~np.isin(current.ids, gone)
                blocks = ((current.ids[s:s + BLOCK][keep[s:s + BLOCK]], current.matrix[s:s + BLOCK][keep[s:s + BLOCK]])
                          for s in range(0, current.rows, BLOCK))
                vectors_file.write(self.vectors_path, blocks, int(keep.sum()), current.dim, after)
            else:
                self._write_vectors(after)
        return len(gone)

    def _write_vectors(self, generation: str) -> None:
        """Rewrite the search side from the database (inside the caller's transaction)."""
        (count,) = self.db.execute("SELECT COUNT(*) FROM embeddings e "
                                   "JOIN identities i ON i.id = e.identity_id").fetchone()
        dim = self._dim() if count else 1
        blocks = ((ids, block) for ids, _, block in self._blocks(dim)) if count else ()
        vectors_file.write(self.vectors_path, blocks, count, dim, generation)

    # ---------------------------------------------------------------- reading
    def _blocks(self, dim: int, name: str | None = None) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
        """Row ids, names and vectors in id order, ``BLOCK`` rows at a time, read in bulk and checked:
        a row of another dimension, a short blob or a non-finite vector is a corrupt gallery."""
        where, params = (" WHERE i.name = ?", (name,)) if name is not None else ("", ())
        bad = self.db.execute(
            "SELECT e.id, e.dim, typeof(e.vector), length(e.vector) FROM embeddings e JOIN identities i "
            f"ON i.id = e.identity_id{where}{' AND' if where else ' WHERE'} (typeof(e.dim) != 'integer' "
            "OR e.dim != ? OR typeof(e.vector) != 'blob' OR length(e.vector) != ?) LIMIT 1",
            (*params, dim, 4 * dim)).fetchone()
        if bad is not None:
            raise CnnkitError(f"corrupt gallery: {self.path}: embedding {bad[0]} is a {bad[1]!r}-d {bad[2]} of "
                              f"{bad[3]} bytes, the gallery is {dim}-d ({4 * dim} bytes a vector)")
        cursor = self.db.execute("SELECT e.id, i.name, e.vector FROM embeddings e JOIN identities i "
                                 f"ON i.id = e.identity_id{where} ORDER BY e.id", params)
        while rows := cursor.fetchmany(BLOCK):
            ids, names, blobs = zip(*rows)
            matrix = np.frombuffer(b"".join(blobs), np.float32).reshape(len(rows), dim)
            finite = np.isfinite(matrix).all(1)
            if not finite.all():
                raise CnnkitError(f"corrupt gallery: {self.path}: embedding {ids[int(np.argmin(finite))]} "
                                  "is not finite (NaN or infinity)")
            yield np.array(ids, np.int64), list(names), matrix

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
        if self.db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchone() is None:
            if name is not None:
                raise CnnkitError(f"'{shown(name)}' is not enrolled in {self.path} (see `cnnkit gallery list`)")
            return [], np.zeros((0, 0), np.float32)
        dim = self._dim()
        names: list[str] = []
        blocks = [np.zeros((0, dim), np.float32)]
        for _, block_names, block in self._blocks(dim, name):
            names += block_names
            blocks.append(block)
        if name is not None and not names:
            raise CnnkitError(f"'{shown(name)}' is not enrolled in {self.path} (see `cnnkit gallery list`)")
        return names, np.concatenate(blocks)

    def vectors(self) -> vectors_file.VectorFile:
        """The search side: ``<db>-vectors`` mapped once it mirrors the database's generation and every
        block agrees with its checksum (checked once per state of the file), else rebuilt from the
        database under the write lock, saying so when it was altered; where it cannot be written
        (read-only storage), the database's rows held in memory, said once on stderr."""
        generation = self._meta().get("generation")
        searched = self._searched
        if searched is not None and searched.generation == generation and not self._distrust and \
                (searched.sums is None or searched.stamp == vectors_file.stamp(self.vectors_path)):
            return searched
        current = vectors_file.VectorFile.open(self.vectors_path)
        altered = ""
        if current is not None and current.generation == generation:
            altered = self._distrust or current.altered() or ""
            if not altered:
                if current.rows and current.dim != self._dim():
                    raise CnnkitError(f"corrupt gallery: {self.path} says {self._dim()}-d, "
                                      f"its vectors are {current.dim}-d")
                self._searched = current
                return current
        self._distrust = ""
        try:
            with Gallery(self.path, create=False) as writer, writer.transaction():
                generation = writer._meta()["generation"]
                current = vectors_file.VectorFile.open(self.vectors_path)
                if altered or current is None or current.generation != generation:
                    writer._write_vectors(generation)
                    current = vectors_file.VectorFile.open(self.vectors_path)
        except Unwritable:
            why = f"disagrees with the database ({altered})" if altered else "is missing or out of date"
            self._searched = self._in_memory()
            print(f"warning: {self.vectors_path} {why} and cannot be rebuilt here (read-only storage or no "
                  f"permission): searching the database's {self._searched.rows} embedding(s) in memory; "
                  "`cnnkit gallery index` where the gallery is writable rebuilds it", file=sys.stderr)
            return self._searched
        if altered:
            print(f"warning: {self.vectors_path} disagreed with the database ({altered}); rebuilt it from the database",
                  file=sys.stderr)
        self._searched = current
        return current

    def _in_memory(self) -> vectors_file.VectorFile:
        """Every embedding of the database as an in-memory search side (read-only storage)."""
        generation = self._meta().get("generation", "")
        if self.count() == 0:
            return vectors_file.VectorFile.in_memory(np.zeros(0, np.int64), np.zeros((0, 1), np.float32), generation)
        parts = list(self._blocks(self._dim()))
        return vectors_file.VectorFile.in_memory(np.concatenate([ids for ids, _, _ in parts]),
                                                 np.concatenate([m for _, _, m in parts]), generation)

    def reindex(self) -> vectors_file.VectorFile:
        """Rewrite the search side from the database whatever it holds (``cnnkit gallery index``)."""
        with self.transaction():
            self._write_vectors(self._meta()["generation"])
        self._searched = None
        return self.vectors()

    def build_hnsw(self) -> int:
        """Build (or rebuild) the approximate index over the whole gallery (``hnsw.py``); returns
        how many rows its graph cannot reach (those are searched exactly)."""
        from cnnkit.plugins.siamese import hnsw

        self.graph = None
        return hnsw.build(self.path, self.vectors())

    def nearest(self, query: np.ndarray, scorer: Scorer, index: str = "exact") -> tuple[str, float]:
        """The enrolled person closest to ``query`` and their distance: an exact search, or
        ``index="hnsw"``: the approximate graph's best candidate (exact distance)."""
        graph = None
        if index == "hnsw":
            from cnnkit.plugins.siamese.hnsw import Graph

            self.graph = graph = self.graph or Graph.open(self.path)
            if graph is None:
                raise CnnkitError(f"{self.path} has no HNSW index: build it with `cnnkit gallery index --hnsw`")
        elif index != "exact":
            raise CnnkitError(f"unknown --index '{index}' (exact, hnsw)")
        for _ in range(BUSY_TRIES):
            vectors = self.vectors()
            if vectors.rows == 0:
                raise CnnkitError(f"{self.path}: the gallery is empty "
                                  "(enroll someone first: `cnnkit enroll NAME IMAGE...`)")
            row, distance = graph.nearest(vectors, query, scorer) if graph else vectors.nearest(query, scorer)
            found = self.db.execute("SELECT i.name, e.vector FROM embeddings e "
                                    "JOIN identities i ON i.id = e.identity_id WHERE e.id = ?",
                                    (int(vectors.ids[row]),)).fetchone()
            if found is None:  # removed since: search again
                continue
            if found[1] != vectors.matrix[row].tobytes():  # changed since, or the search side lies
                if self._meta().get("generation") == vectors.generation:
                    self._distrust = f"embedding {int(vectors.ids[row])} is not the database's"
                continue
            return found[0], distance
        raise CnnkitError(f"{self.path} keeps changing under the search; try again")


