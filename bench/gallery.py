"""Gallery scale: search ms, enroll ms and peak RSS at 10k / 100k / 1M embeddings, per backend.

    python bench/gallery.py --sizes 10000 100000 1000000 --backends sqlite hnsw milvus
    python bench/gallery.py --old /tmp/old_gallery.py ...   # the same on another gallery.py (e.g. main's)

Synthetic 128-d embeddings, 10 per person (people on the unit sphere, their images spread around
them as face embeddings are), filled through the gallery's own schema. Every figure comes from a
fresh process, as `cnnkit verify` / `cnnkit enroll` would run: ``search_ms`` = open the gallery and
answer one 1:N query (the probe's embedding and the libraries' imports excluded; it includes the first search's
checksum pass over the mapped file); ``enroll_ms`` = open it and enroll one embedding; ``rss_mb`` = the search
process's peak resident memory; ``matrix_mb`` = N x 128 x 4 bytes; ``check_ms`` and ``query_ms`` (in one process,
medians of 5): the checksum pass over every block of the mapped file and one exact query after it.
With hnsw: ``hnsw_build_s`` (the graph and its reachability check), ``hnsw_unreached`` (rows the
graph cannot reach, searched exactly) and ``recall_at_1`` against exact search over 1,000 probes.
One JSON line per (size, backend). Prints `uptime` first: the machine may be shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIM = 128
PER_PERSON = 10
SPREAD = 0.25  # each image's offset from its person (distance ~0.35 within, ~1.4 between people)
FINGERPRINT = "f" * 64


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(person of each row, (n, 128) unit float32 embeddings), 10 rows a person."""
    rng = np.random.default_rng(seed)
    people = n // PER_PERSON
    centres = rng.standard_normal((people, DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    person = np.repeat(np.arange(people), PER_PERSON)
    x = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        block = centres[person[s:s + 100_000]] + SPREAD / np.sqrt(DIM) * rng.standard_normal(
            (len(person[s:s + 100_000]), DIM), dtype=np.float32)
        x[s:s + 100_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return person, x


def probes(n: int, count: int, seed: int = 1) -> np.ndarray:
    """New images of enrolled people (``count`` of them), as a verify would bring."""
    person, x = synthetic(n)
    rng = np.random.default_rng(seed)
    rows = rng.choice(n, count, replace=False)
    q = x[rows] + SPREAD / np.sqrt(DIM) * rng.standard_normal((count, DIM), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def gallery_module(old: str | None):
    if old is None:
        from cnnkit.plugins.siamese import gallery
        return gallery
    spec = importlib.util.spec_from_file_location("old_gallery", old)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_gallery"] = module
    spec.loader.exec_module(module)
    return module


def fill(path: Path, n: int, old: str | None) -> float:
    """Create a gallery of n rows through the module's schema; seconds taken."""
    start = time.perf_counter()
    g = gallery_module(old)
    with g.Gallery(path) as gallery:
        gallery.db.execute("PRAGMA synchronous=OFF")
        _, x = synthetic(n)
        with gallery.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("schema", "1"), ("fingerprint", FINGERPRINT), ("model", "face-resnet"),
                ("checkpoint", "face-resnet"), ("metric", "l2"), ("dim", str(DIM))])
            db.executemany("INSERT INTO identities (id, name, created) VALUES (?, ?, 0)",
                           ((i + 1, f"person{i:07d}") for i in range(n // PER_PERSON)))
            db.executemany("INSERT INTO embeddings (identity_id, fingerprint, dim, vector, source, created) "
                           "VALUES (?, ?, ?, ?, '', 0)",
                           ((i // PER_PERSON + 1, FINGERPRINT, DIM, x[i].tobytes()) for i in range(n)))
    return time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints one JSON object."""
    base = peak_rss_mb()
    from cnnkit.core.metrics.distances import Scorer

    g = gallery_module(args.old)
    q = np.load(args.probes)[args.seed % 10]
    if args.backend == "hnsw":
        import usearch.index  # noqa: F401  (its import, ~50 ms idle, is start-up, not search)
    start = time.perf_counter()
    out: dict = {}
    if args.what == "search":
        if args.backend == "milvus":
            from cnnkit.plugins.siamese.milvus import MilvusGallery as open_gallery
            with open_gallery(args.db, create=False) as gallery:
                out["closest"], out["distance"] = gallery.nearest(q, Scorer("l2"))
        else:
            with g.Gallery(args.db, create=False, readonly=True) as gallery:
                if args.old:
                    names, matrix = gallery.embeddings()
                    d = Scorer("l2").search(q, matrix)
                    best = int(np.argmin(d))
                    out["closest"], out["distance"] = names[best], float(d[best])
                elif args.backend == "hnsw":
                    out["closest"], out["distance"] = gallery.nearest(q, Scorer("l2"), index="hnsw")
                else:
                    out["closest"], out["distance"] = gallery.nearest(q, Scorer("l2"))
    else:
        info = g.ModelInfo(FINGERPRINT, "face-resnet", "face-resnet", "l2", DIM)
        v = q[None]
        if args.backend == "milvus":
            from cnnkit.plugins.siamese.milvus import MilvusGallery as open_gallery
            start = time.perf_counter()
            with open_gallery(args.db) as gallery:
                gallery.enroll(f"new{args.seed}", v, ["new.jpg"], info)
        else:
            start = time.perf_counter()
            with g.Gallery(args.db) as gallery:
                gallery.enroll(f"new{args.seed}", v, ["new.jpg"], info)
    out["ms"] = (time.perf_counter() - start) * 1000
    out["rss_mb"] = peak_rss_mb()
    out["base_rss_mb"] = base
    print(json.dumps(out))


def run_child(what: str, db: str, n: int, backend: str, old: str | None, seed: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--db", db, "--n", str(n), "--backend", backend,
           "--seed", str(seed), "--probes", PROBES[0]] + (["--old", old] if old else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def milvus_copy(n: int, data_dir: Path) -> tuple[str, float]:
    """Start a Milvus Lite server (left running until this script ends) and load the n rows into it."""
    import shutil
    import socket

    from cnnkit.plugins.siamese.backends import ModelInfo
    from cnnkit.plugins.siamese.milvus import MilvusGallery

    shutil.rmtree(data_dir, ignore_errors=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    SERVERS.append(server)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    uri = f"milvus://127.0.0.1:{port}/bench{n}"
    start = time.perf_counter()
    _, x = synthetic(n)
    with MilvusGallery(uri) as gallery:
        gallery.enroll("person0000000", x[:1], ["x"], ModelInfo(FINGERPRINT, "face-resnet", "face-resnet", "l2", DIM))
        for s in range(1, n, 10_000):
            gallery.client.insert(gallery.collection, [
                {"name": f"person{i // PER_PERSON:07d}", "fingerprint": FINGERPRINT, "source": "", "created": 0.0,
                 "vector": x[i].tolist()} for i in range(s, min(n, s + 10_000))])
    return uri, time.perf_counter() - start


def recall(db: Path, n: int, count: int = 1000) -> dict:
    """recall@1 of the HNSW graph against exact search over ``count`` probes, and both query times (in process)."""
    from cnnkit.core.metrics.distances import Scorer
    from cnnkit.plugins.siamese.gallery import Gallery
    from cnnkit.plugins.siamese.hnsw import Graph

    q = probes(n, count, seed=7)
    with Gallery(db, create=False, readonly=True) as gallery:
        vectors, graph = gallery.vectors(), Graph.open(db)
        start = time.perf_counter()
        exact = [vectors.nearest(v, Scorer("l2")) for v in q]
        exact_ms = (time.perf_counter() - start) * 1000 / count
        start = time.perf_counter()
        approx = [graph.nearest(vectors, v, Scorer("l2")) for v in q]
        hnsw_ms = (time.perf_counter() - start) * 1000 / count
    same = np.mean([a[0] == e[0] or abs(a[1] - e[1]) < 1e-6 for a, e in zip(approx, exact)])
    return {"recall_at_1": round(float(same), 4), "exact_query_ms": round(exact_ms, 2),
            "hnsw_query_ms": round(hnsw_ms, 2)}


def check_cost(db: Path, n: int, repeat: int = 5) -> dict:
    """In one process: the checksum pass over the mapped search side, and one exact query, in ms (medians)."""
    from cnnkit.core.metrics.distances import Scorer
    from cnnkit.plugins.siamese.vectors import VectorFile

    q = probes(n, repeat, seed=11)
    checks, queries = [], []
    for v in q:
        mapped = VectorFile.open(Path(f"{db}-vectors"))
        start = time.perf_counter()
        assert mapped.altered() is None
        checks.append(time.perf_counter() - start)
        start = time.perf_counter()
        mapped.nearest(v, Scorer("l2"))
        queries.append(time.perf_counter() - start)
    return {"check_ms": round(1000 * float(np.median(checks)), 1),
            "query_ms": round(1000 * float(np.median(queries)), 1)}


def faiss_hnsw(db: Path, n: int, count: int = 1000) -> dict:
    """The same graph with FAISS (IndexHNSWFlat with hnsw.py's M, efConstruction and efSearch): build, load,
    query, recall."""
    import faiss

    from cnnkit.core.metrics.distances import Scorer
    from cnnkit.plugins.siamese import hnsw
    from cnnkit.plugins.siamese.gallery import Gallery

    q = probes(n, count, seed=7)
    with Gallery(db, create=False, readonly=True) as gallery:
        vectors = gallery.vectors()
        start = time.perf_counter()
        index = faiss.IndexHNSWFlat(DIM, hnsw.CONNECTIVITY)
        index.hnsw.efConstruction = hnsw.EXPANSION_ADD
        index.add(np.ascontiguousarray(vectors.matrix))
        build_s = time.perf_counter() - start
        path = f"{db}-faiss-hnsw"
        faiss.write_index(index, path)
        del index
        start = time.perf_counter()
        index = faiss.read_index(path)
        load_s = time.perf_counter() - start
        index.hnsw.efSearch = hnsw.EXPANSION_SEARCH
        exact = [vectors.nearest(v, Scorer("l2"))[0] for v in q]
        start = time.perf_counter()
        found = [int(index.search(v[None], 1)[1][0, 0]) for v in q]
        query_ms = (time.perf_counter() - start) * 1000 / count
    Path(path).unlink()
    return {"faiss_build_s": round(build_s, 1), "faiss_load_s": round(load_s, 2), "faiss_query_ms": round(query_ms, 2),
            "faiss_recall_at_1": round(float(np.mean(np.array(found) == np.array(exact))), 4)}


SERVERS: list[subprocess.Popen] = []
PROBES = [""]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--backends", nargs="+", default=["sqlite"])
    p.add_argument("--old", help="another gallery.py to measure (sqlite backend only)")
    p.add_argument("--dir", default=tempfile.gettempdir())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--faiss", action="store_true", help="with hnsw: also measure FAISS's HNSW (the comparison)")
    p.add_argument("--child"), p.add_argument("--db"), p.add_argument("--n", type=int)
    p.add_argument("--backend", default="sqlite"), p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes")
    args = p.parse_args()
    if args.child:
        args.what = args.child
        return child(args)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), file=sys.stderr)
    try:
        measure(args)
    finally:
        for server in SERVERS:
            server.terminate()
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), file=sys.stderr)


def measure(args: argparse.Namespace) -> None:
    for n in args.sizes:
        db = Path(args.dir) / f"bench-gallery-{n}{'-old' if args.old else ''}.db"
        for suffix in ("", "-wal", "-shm", "-vectors"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        filled = fill(db, n, args.old)
        np.save(f"{db}.probes.npy", probes(n, 10))
        PROBES[:] = [f"{db}.probes.npy"]
        for backend in args.backends:
            target, extra = str(db), {}
            prepare = 0.0
            if backend == "milvus":
                target, prepare = milvus_copy(n, Path(args.dir) / f"bench-milvus-{n}")
            elif backend == "hnsw" or not args.old:
                start = time.perf_counter()
                run_child("search", target, n, "sqlite", args.old)  # builds the search side once
                if backend == "hnsw":
                    from cnnkit.plugins.siamese.gallery import Gallery
                    with Gallery(db) as gallery:
                        built = time.perf_counter()
                        unreached = gallery.build_hnsw()
                    extra = {"hnsw_build_s": round(time.perf_counter() - built, 1), "hnsw_unreached": unreached,
                             **recall(db, n)}
                    if args.faiss:
                        extra.update(faiss_hnsw(db, n))
                prepare = time.perf_counter() - start
            if backend == "sqlite" and not args.old:
                extra.update(check_cost(db, n))
            searches = [run_child("search", target, n, backend, args.old, seed=i) for i in range(args.repeat)]
            enrolls = [run_child("enroll", target, n, backend, args.old, seed=100 + i) for i in range(args.repeat)]
            print(json.dumps({
                "code": "old" if args.old else "new", "backend": backend, "n": n, "fill_s": round(filled, 1),
                "prepare_s": round(prepare, 1),
                "search_ms": round(float(np.median([s["ms"] for s in searches])), 1),
                "enroll_ms": round(float(np.median([e["ms"] for e in enrolls])), 1),
                "rss_mb": round(max(s["rss_mb"] for s in searches)),
                "base_rss_mb": round(searches[0]["base_rss_mb"]),
                "matrix_mb": round(n * DIM * 4 / 2**20), "closest": searches[0]["closest"], **extra}), flush=True)


if __name__ == "__main__":
    main()
