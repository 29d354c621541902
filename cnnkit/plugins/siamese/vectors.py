"""The gallery's search side: one memory-mapped file beside the SQLite database (``<db>-vectors``).

Layout: a 64-byte header (magic, dim, rows, capacity, the database generation it mirrors), then
``capacity`` row ids (int64), squared norms (float32) and the float32 matrix (capacity x dim), rows
sorted by id. Opening maps the file (nothing is read until searched); an exact 1:N search is one
BLAS matrix-vector product over the mapped rows (``|g|^2 - 2 G q + |q|^2`` with the stored norms),
so memory stays the matrix plus a few vectors of N floats. An enrollment appends rows in place
(data first, then the header); a file that is full, or any removal, is rewritten whole
(atomically). The header's generation is compared with the database's: a mismatch means stale.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np

from cnnkit.core.base.atomic import atomic_path
from cnnkit.core.metrics.distances import Scorer

MAGIC = b"CNNKITV1"
HEADER = struct.Struct("<8sQQQ32s")  # magic, dim, rows, capacity, generation (ascii, padded)
HEADER_SIZE = 64
CHUNK = 65_536  # rows per block for the similarity metric (bounded temporaries)


def _capacity(rows: int) -> int:
    """Room for a quarter more rows (at least 1024), a multiple of 16 so the matrix stays 64-byte aligned."""
    return -(-max(1024, rows + rows // 4) // 16) * 16


def _offsets(capacity: int, dim: int) -> tuple[int, int, int, int]:
    ids = HEADER_SIZE
    norms = ids + 8 * capacity
    matrix = norms + 4 * capacity
    return ids, norms, matrix, matrix + 4 * capacity * dim


class VectorFile:
    """A read-only mapping of a vectors file (``None`` from :meth:`open` when absent or unreadable)."""

    def __init__(self, mm: mmap.mmap, dim: int, rows: int, capacity: int, generation: str) -> None:
        self.mm, self.dim, self.rows, self.capacity, self.generation = mm, dim, rows, capacity, generation
        ids, norms, matrix, _ = _offsets(capacity, dim)
        self.ids = np.frombuffer(mm, np.int64, rows, ids)
        self.norms = np.frombuffer(mm, np.float32, rows, norms)
        self.matrix = np.frombuffer(mm, np.float32, rows * dim, matrix).reshape(rows, dim)

    @classmethod
    def open(cls, path: Path) -> "VectorFile | None":
        try:
            with open(path, "rb") as fh:
                header = _read_header(fh)
                if header is None:
                    return None
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError:
            return None
        return cls(mm, *header)

    def nearest(self, query: np.ndarray, scorer: Scorer) -> tuple[int, float]:
        """(row, distance) of the row closest to ``query``."""
        return nearest(self.matrix, query, scorer, self.norms)


def _read_header(fh) -> tuple[int, int, int, str] | None:
    """(dim, rows, capacity, generation) of an open vectors file; None when it is not one."""
    size = os.fstat(fh.fileno()).st_size
    raw = os.pread(fh.fileno(), HEADER.size, 0)
    if len(raw) < HEADER.size:
        return None
    magic, dim, rows, capacity, generation = HEADER.unpack(raw)
    if magic != MAGIC or rows > capacity or _offsets(capacity, dim)[3] > size:
        return None
    return int(dim), int(rows), int(capacity), generation.rstrip(b"\0").decode()


def nearest(matrix: np.ndarray, query: np.ndarray, scorer: Scorer,
            norms: np.ndarray | None = None) -> tuple[int, float]:
    """(row, distance) of the row of ``matrix`` closest to ``query`` (exact)."""
    query = np.asarray(query, np.float32)
    if scorer.metric == "l2":
        squared = matrix @ query
        squared *= -2.0
        squared += (norms if norms is not None else np.einsum("ij,ij->i", matrix, matrix)) + query @ query
        best = int(np.argmin(squared))  # the expansion cancels badly near 0: the winner's distance is recomputed
        return best, float(np.linalg.norm(matrix[best].astype(np.float64) - query))
    best, distance = -1, np.inf
    for start in range(0, len(matrix), CHUNK):
        d = scorer.search(query, matrix[start:start + CHUNK])
        i = int(np.argmin(d))
        if d[i] < distance:
            best, distance = start + i, float(d[i])
    return best, distance


def _write_rows(fh, capacity: int, dim: int, start: int, ids: np.ndarray, matrix: np.ndarray) -> None:
    off_ids, off_norms, off_matrix, _ = _offsets(capacity, dim)
    matrix = np.ascontiguousarray(matrix, np.float32)
    os.pwrite(fh.fileno(), np.ascontiguousarray(ids, np.int64).tobytes(), off_ids + 8 * start)
    os.pwrite(fh.fileno(), np.einsum("ij,ij->i", matrix, matrix).astype(np.float32).tobytes(), off_norms + 4 * start)
    os.pwrite(fh.fileno(), matrix.tobytes(), off_matrix + 4 * dim * start)


def _header(dim: int, rows: int, capacity: int, generation: str) -> bytes:
    return HEADER.pack(MAGIC, dim, rows, capacity, generation.encode()).ljust(HEADER_SIZE, b"\0")


def write(path: Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], rows: int, dim: int,
          generation: str) -> None:
    """Write a whole vectors file atomically from ``rows`` rows given as (ids, vectors) blocks in id order."""
    capacity = _capacity(rows)
    with atomic_path(path) as tmp, open(tmp, "r+b") as fh:
        fh.truncate(_offsets(capacity, dim)[3])  # sparse: the spare capacity costs no disk
        start = 0
        for ids, block in blocks:
            _write_rows(fh, capacity, dim, start, ids, block.reshape(-1, dim))
            start += len(ids)
        if start != rows:
            raise RuntimeError(f"{path}: {start} rows written, {rows} expected")
        os.pwrite(fh.fileno(), _header(dim, rows, capacity, generation), 0)


def append(path: Path, old_generation: str, ids: np.ndarray, matrix: np.ndarray, generation: str) -> bool:
    """Append rows in place when the file mirrors ``old_generation`` and has room; False otherwise
    (the caller rewrites it). Rows first, synced, then the header that makes them visible."""
    try:
        fh = open(path, "r+b")
    except OSError:
        return False
    with fh:
        header = _read_header(fh)
        if header is None:
            return False
        dim, rows, capacity, mirrored = header
        if mirrored != old_generation or dim != matrix.shape[1] or rows + len(ids) > capacity:
            return False
        _write_rows(fh, capacity, dim, rows, ids, matrix)
        os.fsync(fh.fileno())
        os.pwrite(fh.fileno(), _header(dim, rows + len(ids), capacity, generation), 0)
        os.fsync(fh.fileno())
    return True
