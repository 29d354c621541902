"""The gallery's search side: one memory-mapped file beside the SQLite database (``<db>-vectors``).

Layout: a 64-byte header (magic, dim, rows, capacity, the database generation it mirrors), then
``capacity`` row ids (int64), squared norms (float32), the float32 matrix (capacity x dim), rows
sorted by id, and one xxh3 checksum (uint64) for each block of ``CHECK_ROWS`` rows (its ids, norms
and vectors). Opening maps the file (nothing is read until searched); an exact 1:N search is one
BLAS matrix-vector product over the mapped rows (``|g|^2 - 2 G q + |q|^2`` with the stored norms),
so memory stays the matrix plus a few vectors of N floats. An enrollment appends rows in place
(data and the checksums of the blocks it touched first, then the header); a file that is full, or
any removal, is rewritten whole (atomically). The header's generation is compared with the
database's: a mismatch means stale; a block whose checksum disagrees means the file was altered.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np
import xxhash

from cnnkit.api import Scorer, atomic_path

MAGIC = b"CNNKITV2"  # V1 files (no checksums) read as absent: rebuilt from the database
HEADER = struct.Struct("<8sQQQ32s")  # magic, dim, rows, capacity, generation (ascii, padded)
HEADER_SIZE = 64
CHUNK = 65_536  # rows per block for the similarity metric (bounded temporaries)
CHECK_ROWS = 4096  # rows a checksum covers (2 MiB of 128-d vectors: an append re-hashes at most that)


def _capacity(rows: int) -> int:
    """Room for a quarter more rows (at least 1024), a multiple of 16 so the matrix stays 64-byte aligned."""
    return -(-max(1024, rows + rows // 4) // 16) * 16


def _offsets(capacity: int, dim: int) -> tuple[int, int, int, int, int]:
    """Where the ids, norms, matrix and checksums start, and where the file ends."""
    ids = HEADER_SIZE
    norms = ids + 8 * capacity
    matrix = norms + 4 * capacity
    sums = matrix + 4 * capacity * dim
    return ids, norms, matrix, sums, sums + 8 * -(-capacity // CHECK_ROWS)


def _arrays(mm: mmap.mmap, capacity: int, dim: int, rows: int) -> tuple[np.ndarray, ...]:
    """The ids, norms, matrix and checksums of the first ``rows`` rows of a mapped file."""
    ids, norms, matrix, sums, _ = _offsets(capacity, dim)
    return (np.frombuffer(mm, np.int64, rows, ids), np.frombuffer(mm, np.float32, rows, norms),
            np.frombuffer(mm, np.float32, rows * dim, matrix).reshape(rows, dim),
            np.frombuffer(mm, np.uint64, -(-rows // CHECK_ROWS), sums))


def _block_sums(ids: np.ndarray, norms: np.ndarray, matrix: np.ndarray, first: int = 0) -> np.ndarray:
    """The xxh3 of each block's ids, norms and vectors, from block ``first`` on."""
    sums = []
    for start in range(first * CHECK_ROWS, len(ids), CHECK_ROWS):
        digest = xxhash.xxh3_64()
        for part in (ids, norms, matrix):
            digest.update(np.ascontiguousarray(part[start:start + CHECK_ROWS]))
        sums.append(digest.intdigest())
    return np.asarray(sums, np.uint64)


class VectorFile:
    """Rows to search: a read-only mapping of a vectors file (``None`` from :meth:`open` when absent or
    unreadable), or arrays in memory (:meth:`in_memory`, where the file cannot be written)."""

    def __init__(self, ids: np.ndarray, norms: np.ndarray, matrix: np.ndarray, generation: str,
                 sums: np.ndarray | None = None, stamp: tuple = ()) -> None:
        self.ids, self.norms, self.matrix, self.generation = ids, norms, matrix, generation
        self.rows, self.dim = matrix.shape
        self.sums = sums  # the stored checksums (None: in memory, nothing to check)
        self.stamp = stamp  # the file's identity, size, time and header when it was mapped

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
        dim, rows, capacity, generation, stamp = header
        ids, norms, matrix, sums = _arrays(mm, capacity, dim, rows)
        return cls(ids, norms, matrix, generation, sums, stamp)

    @classmethod
    def in_memory(cls, ids: np.ndarray, matrix: np.ndarray, generation: str) -> "VectorFile":
        """Rows held in memory (their norms computed here)."""
        return cls(ids, np.einsum("ij,ij->i", matrix, matrix), matrix, generation)

    def altered(self) -> str | None:
        """The first block of rows that disagrees with its checksum (``"rows A-B"``), or None."""
        if self.sums is None:
            return None
        bad = np.flatnonzero(_block_sums(self.ids, self.norms, self.matrix) != self.sums)
        if len(bad) == 0:
            return None
        return f"rows {bad[0] * CHECK_ROWS + 1}-{min((bad[0] + 1) * CHECK_ROWS, self.rows)}"

    def nearest(self, query: np.ndarray, scorer: Scorer) -> tuple[int, float]:
        """(row, distance) of the row closest to ``query``."""
        return nearest(self.matrix, query, scorer, self.norms)


def stamp(path: Path) -> tuple:
    """What tells a vectors file's state (device, inode, size, time, header); () when it is absent."""
    try:
        with open(path, "rb") as fh:
            return _stamp(fh)
    except OSError:
        return ()


def _stamp(fh) -> tuple:
    st = os.fstat(fh.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, os.pread(fh.fileno(), HEADER.size, 0)


def _read_header(fh) -> tuple[int, int, int, str, tuple] | None:
    """(dim, rows, capacity, generation, stamp) of an open vectors file; None when it is not one."""
    state = _stamp(fh)
    raw = state[-1]
    if len(raw) < HEADER.size:
        return None
    magic, dim, rows, capacity, generation = HEADER.unpack(raw)
    if magic != MAGIC or rows > capacity or _offsets(capacity, dim)[4] > state[2]:
        return None
    try:
        text = generation.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return None
    return int(dim), int(rows), int(capacity), text, state


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
    off_ids, off_norms, off_matrix, _, _ = _offsets(capacity, dim)
    matrix = np.ascontiguousarray(matrix, np.float32)
    os.pwrite(fh.fileno(), np.ascontiguousarray(ids, np.int64).tobytes(), off_ids + 8 * start)
    os.pwrite(fh.fileno(), np.einsum("ij,ij->i", matrix, matrix).astype(np.float32).tobytes(), off_norms + 4 * start)
    os.pwrite(fh.fileno(), matrix.tobytes(), off_matrix + 4 * dim * start)


def _write_sums(fh, capacity: int, dim: int, start: int, rows: int) -> None:
    """Checksum the blocks of an open file that hold rows ``start`` to ``rows`` (written already)."""
    first = start // CHECK_ROWS
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        sums = _block_sums(*_arrays(mm, capacity, dim, rows)[:3], first)
    os.pwrite(fh.fileno(), sums.tobytes(), _offsets(capacity, dim)[3] + 8 * first)


def _last_block_agrees(fh, capacity: int, dim: int, rows: int) -> bool:
    """Does the block that an append would extend still agree with its checksum?"""
    last = rows // CHECK_ROWS
    if rows % CHECK_ROWS == 0:
        return True
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        *arrays, sums = _arrays(mm, capacity, dim, rows)
        agrees = _block_sums(*arrays, last)[0] == sums[last]
        del arrays, sums
    return bool(agrees)


def _header(dim: int, rows: int, capacity: int, generation: str) -> bytes:
    return HEADER.pack(MAGIC, dim, rows, capacity, generation.encode()).ljust(HEADER_SIZE, b"\0")


def write(path: Path, blocks: Iterable[tuple[np.ndarray, np.ndarray]], rows: int, dim: int,
          generation: str) -> None:
    """Write a whole vectors file atomically from ``rows`` rows given as (ids, vectors) blocks in id order."""
    capacity = _capacity(rows)
    with atomic_path(path) as tmp, open(tmp, "r+b") as fh:
        fh.truncate(_offsets(capacity, dim)[4])  # sparse: the spare capacity costs no disk
        start = 0
        for ids, block in blocks:
            _write_rows(fh, capacity, dim, start, ids, block.reshape(-1, dim))
            start += len(ids)
        if start != rows:
            raise RuntimeError(f"{path}: {start} rows written, {rows} expected")
        _write_sums(fh, capacity, dim, 0, rows)
        os.pwrite(fh.fileno(), _header(dim, rows, capacity, generation), 0)


def append(path: Path, old_generation: str, ids: np.ndarray, matrix: np.ndarray, generation: str) -> bool:
    """Append rows in place when the file mirrors ``old_generation`` and has room; False otherwise
    (the caller rewrites it). Rows and the checksums of their blocks first, synced, then the header
    that makes them visible."""
    try:
        fh = open(path, "r+b")
    except OSError:
        return False
    with fh:
        header = _read_header(fh)
        if header is None:
            return False
        dim, rows, capacity, mirrored, _ = header
        if mirrored != old_generation or dim != matrix.shape[1] or rows + len(ids) > capacity:
            return False
        if not _last_block_agrees(fh, capacity, dim, rows):  # its checksum is about to be remade
            return False
        _write_rows(fh, capacity, dim, rows, ids, matrix)
        _write_sums(fh, capacity, dim, rows, rows + len(ids))
        os.fsync(fh.fileno())
        os.pwrite(fh.fileno(), _header(dim, rows + len(ids), capacity, generation), 0)
        os.fsync(fh.fileno())
    return True
