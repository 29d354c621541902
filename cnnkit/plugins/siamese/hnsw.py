"""Approximate 1:N search for large galleries: a usearch HNSW graph beside the database (``<db>-hnsw``).

Built on demand (`cnnkit gallery index --hnsw`) over the exact search side (``vectors.py``), keyed by
embedding id, vectors stored as float16; opened as a memory-mapped view (nothing copied in, yet ~170 ms
to open at 1M rows). The ``TOP`` graph candidates are re-scored exactly from the float32 matrix, so a
reported distance is always exact; rows the graph cannot reach are listed when it is built and always
scored with them. A graph older than the gallery stays usable: candidates removed since are dropped,
and rows enrolled after it (ids above its last one) are searched exactly and merged. The description
beside it (``<db>-hnsw.json``) holds the graph file's size and xxh3: a graph that does not match (truncated,
overwritten: usearch's view reads out of bounds and crashes on a damaged body) or a description that is not
one is refused in one line naming the file and the command that rebuilds it.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np
import xxhash

from cnnkit.api import CnnkitError, Scorer, atomic_path
from cnnkit.plugins.siamese.vectors import VectorFile, nearest

CONNECTIVITY = 16  # graph degree (usearch's M)
EXPANSION_ADD = 128  # candidate list while building
EXPANSION_SEARCH = 256  # candidate list while searching: recall@1 at 1M 0.990 with 128, 0.998 with 256 (+0.5 ms)
TOP = 16  # graph candidates re-scored exactly
CHECK_BLOCK = 65_536  # rows searched for at once when listing the ones the graph cannot reach
REBUILD = "rebuild it with `cnnkit gallery index --hnsw`"
DESCRIPTION = {"generation": str, "rows": int, "last_id": int, "dim": int, "bytes": int, "xxh3": str, "unreached": list}


def _paths(gallery: Path) -> tuple[Path, Path]:
    return gallery.with_name(gallery.name + "-hnsw"), gallery.with_name(gallery.name + "-hnsw.json")


def _digest(path: Path) -> tuple[int, str]:
    """Size and xxh3 of a file (hashed through a mapping: no copy)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return 0, xxhash.xxh3_64_hexdigest(b"")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return size, xxhash.xxh3_64_hexdigest(mapped)


def _damaged(path: Path, what: str) -> CnnkitError:
    return CnnkitError(f"{path} {what}: {REBUILD}")


def _description(info: Path) -> dict:
    """The graph's description, checked field by field."""
    try:
        covered = json.loads(info.read_text())
    except FileNotFoundError:
        raise _damaged(info, "is missing") from None
    except (OSError, ValueError) as exc:
        raise _damaged(info, f"is not readable JSON ({exc})") from None
    if not isinstance(covered, dict):
        raise _damaged(info, f"holds a {type(covered).__name__}, not the description of an HNSW graph")
    wrong = [key for key, kind in DESCRIPTION.items() if type(covered.get(key)) is not kind]
    if not wrong and not all(type(i) is int for i in covered["unreached"]):
        wrong = ["unreached"]
    if wrong:
        raise _damaged(info, f"lacks or mistypes {', '.join(wrong)}")
    return covered


def build(gallery: Path, vectors: VectorFile, threads: int = 0) -> int:
    """Build the graph over every row of ``vectors`` on ``threads`` (0: all cores) and save it
    atomically with what it covers; returns how many rows the graph cannot reach.

    A graph can hold rows that no search reaches: usearch's concurrent ``add`` strands some
    (unum-cloud/USearch#735, unfixed in 2.26.6) and neighbour pruning others (1,466 of 1M clustered
    rows on 2 threads, 19 of 100k). So every row is searched for with its own vector, and those not
    among their own ``TOP`` candidates are listed and always scored exactly.
    """
    from usearch.index import Index

    graph, info = _paths(gallery)
    index = Index(ndim=vectors.dim, metric="l2sq", dtype="f16", connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
    unreached = []
    if vectors.rows:
        index.add(vectors.ids.astype(np.uint64), vectors.matrix, threads=threads)
        for start in range(0, vectors.rows, CHECK_BLOCK):
            ids = vectors.ids[start:start + CHECK_BLOCK]
            found = np.asarray(index.search(vectors.matrix[start:start + CHECK_BLOCK], TOP, threads=threads).keys,
                               np.int64)
            unreached += ids[~(found == ids[:, None]).any(axis=1)].tolist()
    with atomic_path(graph) as tmp:
        index.save(str(tmp))
        size, digest = _digest(tmp)
    with atomic_path(info) as tmp:
        tmp.write_text(json.dumps({"generation": vectors.generation, "rows": vectors.rows,
                                   "last_id": int(vectors.ids[-1]) if vectors.rows else 0, "dim": vectors.dim,
                                   "bytes": size, "xxh3": digest, "unreached": unreached}))
    return len(unreached)


def _rows(vectors: VectorFile, ids: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` holding ``ids`` (ids removed since are dropped)."""
    rows = np.searchsorted(vectors.ids, ids)
    return rows[(rows < vectors.rows) & (vectors.ids[np.minimum(rows, vectors.rows - 1)] == ids)]


class Graph:
    """A built graph, mapped read-only (``None`` from :meth:`open` when there is none)."""

    def __init__(self, index, last_id: int, unreached: np.ndarray, dim: int) -> None:
        self.index, self.last_id, self.unreached, self.dim = index, last_id, unreached, dim
        self._unreached_rows: tuple[tuple[str, int], np.ndarray] = (("", -1), np.empty(0, np.int64))

    @classmethod
    def open(cls, gallery: Path) -> "Graph | None":
        """The graph beside ``gallery``, once its file matches its description (None when neither exists)."""
        from usearch.index import Index

        graph, info = _paths(gallery)
        if not graph.exists() and not info.exists():
            return None
        for attempt in (1, 2):  # a rebuild replaces the graph, then its description: look twice
            covered = _description(info)
            try:
                found = _digest(graph)
            except FileNotFoundError:
                raise _damaged(graph, "is missing") from None
            except OSError as exc:
                raise _damaged(graph, f"cannot be read ({exc.strerror})") from None
            if found == (covered["bytes"], covered["xxh3"]):
                break
            if attempt == 2:
                raise _damaged(graph, f"does not match its description ({found[0]} bytes, xxh3 {found[1]}; built "
                               f"as {covered['bytes']} bytes, xxh3 {covered['xxh3']})")
        try:
            index = Index.restore(str(graph), view=True)
        except (RuntimeError, ValueError) as exc:
            raise _damaged(graph, f"is not a usearch graph ({exc})") from None
        if index is None or index.ndim != covered["dim"]:
            raise _damaged(graph, f"is not a {covered['dim']}-d usearch graph")
        index.expansion_search = EXPANSION_SEARCH
        return cls(index, covered["last_id"], np.asarray(covered["unreached"], np.int64), covered["dim"])

    def nearest(self, vectors: VectorFile, query: np.ndarray, scorer: Scorer) -> tuple[int, float]:
        """(row of ``vectors``, exact distance) of the best graph candidate, of a row the graph cannot
        reach, or of a row enrolled after the graph."""
        if scorer.metric != "l2":
            raise CnnkitError("--index hnsw searches l2 embeddings; this model scores with a learned similarity")
        if vectors.rows and vectors.dim != self.dim:
            raise CnnkitError(f"the HNSW graph is {self.dim}-d, the gallery {vectors.dim}-d: {REBUILD}")
        query = np.asarray(query, np.float32)
        keys = np.asarray(self.index.search(query, TOP).keys, np.int64)
        tail = int(np.searchsorted(vectors.ids, self.last_id, side="right"))
        version = (vectors.generation, vectors.rows)
        if self._unreached_rows[0] != version:  # found once per state of the gallery
            self._unreached_rows = version, _rows(vectors, self.unreached)
        rows = np.r_[_rows(vectors, keys), self._unreached_rows[1], np.arange(tail, vectors.rows)]
        if len(rows) == 0:  # everything the graph knew was removed
            return nearest(vectors.matrix, query, scorer, vectors.norms)
        best, distance = nearest(vectors.matrix[rows], query, scorer, vectors.norms[rows])
        return int(rows[best]), distance
