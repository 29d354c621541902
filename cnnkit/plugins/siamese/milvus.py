"""A gallery shared by several machines: a Milvus collection, ``--gallery milvus://host:port/collection``.

Milvus runs as a cluster (or standalone); Milvus Lite (``milvus-lite server``) speaks the same
protocol on one machine and is what the tests start. One collection holds the embeddings (auto
id, name, fingerprint, source, created, the vector; exact ``FLAT`` L2 index), a second one
(``<collection>__meta``) the model binding, so the fingerprint check holds as with SQLite. Every
read is ``Strong``: an enrollment on one machine is seen by the next search on any other.
Distances are recomputed from the returned vector (Milvus's L2 is squared). The URL and the names
are checked before anything is written (names by the same :func:`checked_name` as SQLite's), and
Milvus's own refusals are one line naming the gallery.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import numpy as np

from cnnkit.api import CnnkitError, Scorer
from cnnkit.plugins.siamese.backends import GalleryBase, ModelInfo, checked_name, checked_vectors, shown

SCHEME = "milvus://"
STRONG = {"consistency_level": "Strong"}
PAGE = 16_384  # Milvus's largest query page
FIELDS = ("fingerprint", "model", "checkpoint", "metric", "dim")
META_SUFFIX = "__meta"
COLLECTION_MAX = 255 - len(META_SUFFIX)  # Milvus names are at most 255 characters, the binding's included
FORM = "milvus://HOST:PORT/COLLECTION"


def _quote(text: str) -> str:
    """A Milvus filter-expression string literal (Milvus's parser knows these escapes, not \\u or \\x)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _address(uri: str) -> tuple[str, int, str]:
    """Host, port and collection of a ``milvus://`` URL, refused in one line when malformed."""
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or not port:
        raise CnnkitError(f"{uri}: give a Milvus gallery as {FORM} (a host, and a port from 1 to 65535)")
    collection = parsed.path.strip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", collection) or len(collection) > COLLECTION_MAX:
        raise CnnkitError(f"{shown(uri[:80])}{'...' if len(uri) > 80 else ''}: give a Milvus gallery as {FORM}; "
                          f"COLLECTION is letters, digits and _ (not first a digit), at most {COLLECTION_MAX} "
                          f"characters (this one: {len(collection)})")
    return parsed.hostname, port, collection


def _refusals(method: Callable) -> Callable:
    """Milvus's own errors (a refused request, a server gone) as one line naming the gallery."""
    @functools.wraps(method)
    def wrapper(self: "MilvusGallery", *args: Any, **kwargs: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return method(self, *args, **kwargs)
        except MilvusException as exc:
            raise CnnkitError(f"{self.path}: Milvus refused the request ({exc.message})") from None
    return wrapper


class MilvusGallery(GalleryBase):
    """The gallery API of ``gallery.Gallery`` over a Milvus collection."""

    def __init__(self, uri: str, create: bool = True, readonly: bool = False, timeout: float = 10.0) -> None:
        try:
            from pymilvus import MilvusClient
            from pymilvus.exceptions import MilvusException
        except ImportError:
            raise CnnkitError(f"{uri}: Milvus galleries need pymilvus (pip install 'cnnkit[milvus]')") from None
        host, port, self.collection = _address(uri)
        self.path = uri
        self.meta = f"{self.collection}{META_SUFFIX}"
        # its errors come back as one line, not a log + traceback
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        try:
            self.client = MilvusClient(uri=f"http://{host}:{port}", timeout=timeout)
            exists = self.client.has_collection(self.collection)
        except MilvusException as exc:
            raise CnnkitError(f"{uri}: cannot reach Milvus ({exc.message})") from None
        if not exists and not create:
            raise CnnkitError(f"{uri}: no such gallery (enroll someone first: `cnnkit enroll NAME IMAGE...`)")
        for name in (self.collection, self.meta) if exists else ():
            if self.client.has_collection(name):  # a restarted server holds collections released
                self.client.load_collection(name)

    def close(self) -> None:
        self.client.close()

    # ---------------------------------------------------------------- model binding
    def _meta(self) -> dict[str, str]:
        if not self.client.has_collection(self.meta):
            return {}
        rows = self.client.query(self.meta, filter='key != ""', output_fields=["key", "value"], **STRONG)
        return {r["key"]: r["value"] for r in rows}

    def _exists(self) -> bool:
        return self.client.has_collection(self.collection)

    @property
    @_refusals
    def model(self) -> ModelInfo | None:
        if not self._exists() or not self.client.query(self.collection, filter="", limit=1, output_fields=["id"],
                                                         **STRONG):
            return None
        meta = self._meta()
        return ModelInfo(*(meta[k] for k in FIELDS[:-1]), int(meta["dim"])) if "fingerprint" in meta else None

    def _create(self, dim: int) -> None:
        """Both collections (concurrent creators: the first one wins, the others go on)."""
        from pymilvus import DataType, MilvusClient
        from pymilvus.exceptions import MilvusException

        for name, fields, vector_dim in ((self.collection, [("name", 512), ("fingerprint", 64), ("source", 2048)], dim),
                                         (self.meta, [("value", 2048)], 2)):
            if self.client.has_collection(name):
                continue
            schema = MilvusClient.create_schema(auto_id=name == self.collection)
            if name == self.collection:
                schema.add_field("id", DataType.INT64, is_primary=True)
            else:
                schema.add_field("key", DataType.VARCHAR, max_length=64, is_primary=True)
            for field, length in fields:
                schema.add_field(field, DataType.VARCHAR, max_length=length)
            if name == self.collection:
                schema.add_field("created", DataType.DOUBLE)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vector_dim)
            index = self.client.prepare_index_params()
            index.add_index("vector", index_type="FLAT", metric_type="L2")
            try:
                self.client.create_collection(name, schema=schema, index_params=index, **STRONG)
            except MilvusException:  # another process is creating it: wait until it is there
                deadline = time.monotonic() + 10
                while not self.client.has_collection(name):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    # ---------------------------------------------------------------- writing
    @_refusals
    def enroll(self, name: str, vectors: np.ndarray, sources: list[str], info: ModelInfo) -> int:
        name = checked_name(name)
        vectors = checked_vectors(name, vectors, len(sources), info)
        self._create(info.dim)
        self.check(info)
        meta = self._meta()
        if meta.get("fingerprint") != info.fingerprint:
            self.client.upsert(self.meta, [{"key": k, "value": str(getattr(info, k)), "vector": [0.0, 0.0]}
                                           for k in FIELDS])
        elif int(meta["dim"]) != info.dim:
            raise CnnkitError(f"embeddings are {info.dim}-d but {self.path} is {meta['dim']}-d")
        now = time.time()
        self.client.insert(self.collection, [{"name": name, "fingerprint": info.fingerprint, "source": src,
                                              "created": now, "vector": v.tolist()}
                                             for v, src in zip(vectors, sources)])
        return self._count(f"name == {_quote(name)}")

    @_refusals
    def remove(self, name: str) -> int:
        count = self._count(f"name == {_quote(name)}") if self._exists() else 0
        if count == 0:
            raise CnnkitError(f"'{shown(name)}' is not enrolled in {self.path}")
        self.client.delete(self.collection, filter=f"name == {_quote(name)}")
        return count

    # ---------------------------------------------------------------- reading
    def _count(self, where: str = "") -> int:
        rows = self.client.query(self.collection, filter=where, output_fields=["count(*)"], **STRONG)
        return int(rows[0]["count(*)"])

    @_refusals
    def count(self) -> int:
        return self._count() if self._exists() else 0

    def _rows(self, fields: list[str], where: str = "") -> Iterator[dict[str, Any]]:
        if not self._exists():
            return
        iterator = self.client.query_iterator(self.collection, batch_size=PAGE, filter=where,
                                              output_fields=fields, **STRONG)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    @_refusals
    def people(self) -> list[dict[str, Any]]:
        people: dict[str, dict[str, Any]] = {}
        for row in self._rows(["name", "created"]):
            p = people.setdefault(row["name"], {"name": row["name"], "embeddings": 0, "created": row["created"]})
            p["embeddings"] += 1
            p["created"] = min(p["created"], row["created"])
        return [people[n] for n in sorted(people)]

    @_refusals
    def embeddings(self, name: str | None = None) -> tuple[list[str], np.ndarray]:
        rows = sorted(self._rows(["id", "name", "vector"], f"name == {_quote(name)}" if name is not None else ""),
                      key=lambda r: r["id"])
        if name is not None and not rows:
            raise CnnkitError(f"'{shown(name)}' is not enrolled in {self.path} (see `cnnkit gallery list`)")
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r["name"] for r in rows], np.asarray([r["vector"] for r in rows], np.float32)

    @_refusals
    def nearest(self, query: np.ndarray, scorer: Scorer, index: str = "exact") -> tuple[str, float]:
        if scorer.metric != "l2":
            raise CnnkitError(f"{self.path}: a Milvus gallery searches l2 embeddings; this model scores with a "
                              "learned similarity (use a SQLite gallery)")
        if index not in ("exact", "hnsw"):
            raise CnnkitError(f"unknown --index '{index}' (exact, hnsw)")
        query = np.asarray(query, np.float32)
        (hits,) = self.client.search(self.collection, [query.tolist()], limit=1, output_fields=["name", "vector"],
                                     **STRONG) if self._exists() else [[]]
        if not hits:
            raise CnnkitError(f"{self.path}: the gallery is empty "
                              "(enroll someone first: `cnnkit enroll NAME IMAGE...`)")
        best = hits[0]["entity"]
        return best["name"], float(scorer.pairs(query[None], np.asarray([best["vector"]], np.float32))[0])

