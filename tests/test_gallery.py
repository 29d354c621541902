"""The SQLite gallery: storage, model fingerprints, WAL and crash safety (no torch needed)."""

import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.metrics.distances import Scorer
from cnnkit.plugins.siamese.backends import ModelInfo, open_gallery
from cnnkit.plugins.siamese.gallery import Gallery
from tests.conftest import ROOT, one_clear_line, run_cli

INFO = ModelInfo("a" * 64, "siamese-small", "/runs/x/best.pt", "l2", 4)
OTHER = ModelInfo("b" * 64, "siamese-small", "/runs/y/best.pt", "l2", 4)


def _vectors(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    """A Milvus Lite server on 127.0.0.1 (a free port) for this module, stopped at its end."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                             str(tmp_path_factory.mktemp("milvus")), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("milvus-lite server did not start within 60 s")
            time.sleep(0.2)
    yield f"milvus://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(params=["sqlite", "milvus"])
def uri(request, tmp_path):
    """A fresh gallery location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "g.db")
    return f"{request.getfixturevalue('milvus_server')}/g{uuid.uuid4().hex}"


def test_enroll_list_remove_roundtrip(uri):
    with open_gallery(uri) as g:
        assert g.model is None and g.people() == []
        v = _vectors(3)
        assert g.enroll("ada", v[:2], ["a1.jpg", "a2.jpg"], INFO) == 2
        assert g.enroll("ada", v[2:], ["a3.jpg"], INFO) == 3
        g.enroll("bob", _vectors(1, 1), ["b.jpg"], INFO)
        assert [(p["name"], p["embeddings"]) for p in g.people()] == [("ada", 3), ("bob", 1)]
        names, matrix = g.embeddings()
        assert names == ["ada", "ada", "ada", "bob"] and matrix.dtype == np.float32
        assert np.array_equal(matrix[:3], v)  # float32 vectors come back bit for bit
        assert g.model == INFO
        assert g.remove("ada") == 3
        with pytest.raises(CnnkitError, match="not enrolled"):
            g.remove("ada")
        with pytest.raises(CnnkitError, match="not enrolled"):
            g.embeddings("ada")
        exported = g.export()
        assert exported["model"]["fingerprint"] == INFO.fingerprint
        assert [p["name"] for p in exported["identities"]] == ["bob"]


def test_embeddings_of_another_model_are_refused(uri):
    with open_gallery(uri) as g:
        g.enroll("ada", _vectors(1), ["a.jpg"], INFO)
        with pytest.raises(CnnkitError, match="another model"):
            g.enroll("bob", _vectors(1), ["b.jpg"], OTHER)
        with pytest.raises(CnnkitError, match="another model"):
            g.check(OTHER)
        assert [p["name"] for p in g.people()] == ["ada"]
        g.remove("ada")  # an empty gallery may move to a new model
        g.enroll("bob", _vectors(1), ["b.jpg"], OTHER)
        assert g.model == OTHER


def test_search_answers_as_a_brute_force_scan(uri):
    """1:N search (SQLite's mapped matrix, Milvus's FLAT index) finds what a scan of every stored
    embedding finds, through enrollments and removals."""
    rng = np.random.default_rng(0)
    with open_gallery(uri) as g:
        with pytest.raises(CnnkitError, match="empty"):
            g.nearest(_vectors(1)[0], Scorer("l2"))
        for i in range(20):
            g.enroll(f"p{i}", _vectors(2, seed=i), ["a", "b"], INFO)
        for name in ("p3", "p17"):
            g.remove(name)
        for q in _vectors(15, seed=1000) + 0.05 * rng.normal(size=(15, 4)).astype(np.float32):
            name, distance = g.nearest(q, Scorer("l2"))
            assert (name, pytest.approx(distance, abs=1e-5)) == _brute(g, q)


ENROLLER = textwrap.dedent("""
    import sys, numpy as np
    from cnnkit.plugins.siamese.backends import ModelInfo, open_gallery
    info = ModelInfo("a" * 64, "siamese-small", "x.pt", "l2", 4)
    worker = int(sys.argv[2])
    with open_gallery(sys.argv[1]) as g:
        for i in range(15):
            g.enroll(f"w{worker}-{i}", np.full((1, 4), worker * 100 + i, np.float32), ["x"], info)
""")


def test_four_processes_enrolling_at_once_lose_nothing(uri):
    procs = [subprocess.Popen([sys.executable, "-c", ENROLLER, uri, str(w)], cwd=ROOT, stderr=subprocess.PIPE,
                              text=True) for w in range(4)]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read()
    with open_gallery(uri, create=False) as g:
        assert g.count() == 60 and len(g.people()) == 60
        for w, i in ((0, 0), (1, 7), (2, 14), (3, 3)):
            assert g.nearest(np.full(4, w * 100 + i, np.float32), Scorer("l2")) == (f"w{w}-{i}", pytest.approx(0.0))


def test_wal_and_rollback_on_interrupt(tmp_path):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.enroll("ada", _vectors(2), ["a1", "a2"], INFO)
        assert g.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(KeyboardInterrupt):
            with g.transaction() as db:
                db.execute("INSERT INTO identities (name, created) VALUES ('bob', 0)")
                raise KeyboardInterrupt
        assert [p["name"] for p in g.people()] == ["ada"]


def test_a_killed_enroll_loses_nothing_already_stored(tmp_path):
    """A process dies mid-transaction (no cleanup at all): what was committed survives intact."""
    path = tmp_path / "g.db"
    script = textwrap.dedent(f"""
        import os, numpy as np
        from cnnkit.plugins.siamese.backends import ModelInfo, open_gallery
        from cnnkit.plugins.siamese.gallery import Gallery
        info = ModelInfo("a" * 64, "siamese-small", "x.pt", "l2", 4)
        g = Gallery({str(path)!r})
        g.enroll("ada", np.ones((2, 4), np.float32), ["a1", "a2"], info)
        with g.transaction() as db:
            db.execute("INSERT INTO identities (name, created) VALUES ('bob', 0)")
            db.execute("INSERT INTO embeddings (identity_id, fingerprint, dim, vector, created) "
                       "VALUES (last_insert_rowid(), ?, 4, ?, 0)", ("a" * 64, np.ones(4, np.float32).tobytes()))
            os._exit(1)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    with Gallery(path) as g:
        assert g.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [(p["name"], p["embeddings"]) for p in g.people()] == [("ada", 2)]


def test_missing_or_corrupt_gallery_is_a_clear_error(tmp_path):
    with pytest.raises(CnnkitError, match="no such gallery"):
        Gallery(tmp_path / "none.db", create=False)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CnnkitError, match="not a cnnkit gallery"):
        Gallery(bad)
    with pytest.raises(CnnkitError, match="empty"):
        Gallery(tmp_path / "g.db").enroll("  ", _vectors(1), ["x"], INFO)


def test_gallery_is_plain_sqlite(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ada", _vectors(1), ["a.jpg"], INFO)
    db = sqlite3.connect(tmp_path / "g.db")
    (blob, dim, fp), = db.execute("SELECT vector, dim, fingerprint FROM embeddings").fetchall()
    assert len(blob) == 4 * dim and fp == INFO.fingerprint


# ---------------------------------------------------------------- the search side at scale
def _brute(g, query):
    names, matrix = g.embeddings()
    d = np.linalg.norm(matrix - query, axis=1)
    return names[int(np.argmin(d))], float(d.min())


def test_search_side_follows_enroll_and_remove(tmp_path):
    """The mapped matrix follows enrollments (appended in place) and removals (rewritten) row for
    row, and mirrors the database's generation."""
    scorer = Scorer("l2")
    rng = np.random.default_rng(0)
    with Gallery(tmp_path / "g.db") as g:
        for i in range(40):
            g.enroll(f"p{i}", _vectors(2, seed=i), ["a", "b"], INFO)
        for name in ("p3", "p17", "p39"):
            g.remove(name)
        g.enroll("late", _vectors(1, seed=99), ["x"], INFO)
        index = g.vectors()
        assert index.rows == g.count() == 40 * 2 - 6 + 1 and index.generation == g._meta()["generation"]
        assert list(index.ids) == sorted(index.ids)
        for q in _vectors(30, seed=1000) + 0.05 * rng.normal(size=(30, 4)).astype(np.float32):
            name, distance = g.nearest(q, scorer)
            assert (name, pytest.approx(distance, abs=1e-5)) == _brute(g, q)
        assert g.nearest(_vectors(1, seed=99)[0], scorer) == ("late", pytest.approx(0.0, abs=1e-3))


def test_a_change_from_outside_makes_the_search_side_stale(tmp_path):
    """Rows written by any other program (plain sqlite3) change the generation through the
    triggers: the next search sees them."""
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ada", _vectors(1), ["a"], INFO)
        old = g.vectors().generation
    db = sqlite3.connect(tmp_path / "g.db")
    with db:
        db.execute("INSERT INTO identities (id, name, created) VALUES (7, 'eve', 0)")
        db.execute("INSERT INTO embeddings (identity_id, fingerprint, dim, vector, created) VALUES (7, ?, 4, ?, 0)",
                   (INFO.fingerprint, np.array([0, 0, 0, 1], np.float32).tobytes()))
    db.close()
    with Gallery(tmp_path / "g.db", create=False, readonly=True) as g:
        assert g.nearest(np.array([0, 0, 0, 1], np.float32), Scorer("l2"))[0] == "eve"
        assert g.vectors().generation != old


KILLER = textwrap.dedent("""
    import os, sys, numpy as np
    from cnnkit.plugins.siamese import gallery, vectors
    from cnnkit.plugins.siamese.backends import ModelInfo, open_gallery
    from cnnkit.plugins.siamese.gallery import Gallery
    info = ModelInfo("a" * 64, "siamese-small", "x.pt", "l2", 4)
    where = sys.argv[2]
    if where == "after-index":  # the search side is updated, the database never commits
        append = vectors.append
        vectors.append = lambda *a: append(*a) and os._exit(9)
    elif where == "mid-append":  # rows written, the header never
        vectors._header = lambda *a: os._exit(9)
    elif where == "mid-rewrite":
        vectors.os.replace = lambda *a: os._exit(9)
    g = Gallery(sys.argv[1])
    if where == "mid-rewrite":
        g.remove("p0")
    i = 0
    while True:  # "loop": enroll and remove until killed
        g.enroll(f"n{i}", np.eye(4, dtype=np.float32)[i % 4] * (1 + i), ["x"], info)
        if i % 3 == 2:
            g.remove(f"n{i - 1}")
        i += 1
""")


@pytest.mark.parametrize("where", ["after-index", "mid-append", "mid-rewrite", "loop"])
def test_a_kill_during_enroll_or_remove_never_leaves_a_disagreeing_search(tmp_path, where):
    """kill -9 at the worst moments (and at a random one in a loop of enrolls and removes): the next
    search answers exactly what the database holds."""
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        for i in range(3):
            g.enroll(f"p{i}", _vectors(1, seed=i), ["a"], INFO)
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(path), where], cwd=ROOT)
    if where == "loop":
        time.sleep(1.5)
        proc.kill()
    assert proc.wait(timeout=60) in (9, -9)
    with Gallery(path, create=False, readonly=True) as g:
        names, matrix = g.embeddings()
        index = g.vectors()
        assert index.rows == len(names) and index.generation == g._meta()["generation"]
        assert np.array_equal(index.matrix, matrix)
        for name, v in zip(names, matrix):
            assert g.nearest(v, Scorer("l2")) == (name, pytest.approx(0.0, abs=1e-3))
    if where != "loop":
        assert {p["name"] for p in Gallery(path).people()} == {"p0", "p1", "p2"}  # rolled back


MILVUS_KILLER = textwrap.dedent("""
    import os, signal, sys, numpy as np
    from cnnkit.plugins.siamese.backends import ModelInfo, open_gallery
    info = ModelInfo("a" * 64, "siamese-small", "/runs/x/best.pt", "l2", 4)
    with open_gallery(sys.argv[1]) as g:
        insert = g.client.insert
        def traced(collection, rows, **kw):  # tell the test when each enroll's rows go out and are stored
            print("sending", rows[0]["name"], flush=True)
            insert(collection, rows, **kw)
            if rows[0]["name"] == sys.argv[2]:  # Milvus stored the rows, the enroll has not returned
                os.kill(os.getpid(), signal.SIGKILL)
            print("stored", rows[0]["name"], flush=True)
        g.client.insert = traced
        for i in range(8):
            v = np.random.default_rng(1000 + i).normal(size=(50, 4)).astype(np.float32)
            g.enroll(f"n{i}", v, ["x"] * len(v), info)
""")


@pytest.mark.parametrize("killer, wait", [("test", 0.0), ("test", 0.005), ("self", None)])
def test_a_kill_during_a_milvus_enroll_leaves_whole_enrolls_only(milvus_server, killer, wait):
    """SIGKILL of a process enrolling into Milvus (8 enrolls of 50 rows): from this test `wait` s
    after the 4th enroll's rows went out, or by itself once Milvus acknowledged them. Every person
    holds all 50 rows or none, search answers as a scan of what is stored, and the next enroll works."""
    uri = f"{milvus_server}/g{uuid.uuid4().hex}"
    with open_gallery(uri) as g:
        g.enroll("p0", _vectors(3), ["a", "b", "c"], INFO)
    proc = subprocess.Popen([sys.executable, "-c", MILVUS_KILLER, uri, "n3" if killer == "self" else ""], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    guard = threading.Timer(120, proc.kill)  # bounded: never wait on a hung enroller
    guard.start()
    events = []
    for line in proc.stdout:
        events.append(line.split())
        if killer == "test" and events[-1] == ["sending", "n3"]:
            time.sleep(wait)
            proc.kill()
            break
    events += [line.split() for line in proc.stdout]
    guard.cancel()
    assert proc.wait(timeout=60) == -signal.SIGKILL, events
    stored = {name for what, name in events if what == "stored"}
    in_flight = events[-1][1] if events[-1][0] == "sending" else None
    with open_gallery(uri, create=False) as g:
        people = {p["name"]: p["embeddings"] for p in g.people()}
        assert people.pop("p0") == 3
        assert stored <= set(people) <= stored | {in_flight}, (events, people)
        assert set(people.values()) <= {50}, people  # whole enrolls only
        if killer == "self":
            assert people["n3"] == 50 and in_flight == "n3"
        names, matrix = g.embeddings()
        assert len(names) == g.count() == 3 + 50 * len(people)
        rng = np.random.default_rng(0)
        for q in matrix[rng.choice(len(matrix), 8, replace=False)] + 0.05 * rng.normal(size=(8, 4)).astype(np.float32):
            name, distance = g.nearest(q, Scorer("l2"))
            assert (name, pytest.approx(distance, abs=1e-5)) == _brute(g, q)
        assert g.enroll("after", _vectors(2, seed=7), ["a", "b"], INFO) == 2
        assert g.nearest(_vectors(2, seed=7)[1], Scorer("l2")) == ("after", pytest.approx(0.0, abs=1e-3))

def test_another_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "mlflow.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    before = path.read_bytes()
    for kwargs in ({}, {"create": False}, {"readonly": True, "create": False}):
        with pytest.raises(CnnkitError, match="not a cnnkit gallery.*left untouched"):
            Gallery(path, **kwargs)
    assert path.read_bytes() == before and not Path(f"{path}-vectors").exists()


@pytest.mark.parametrize("sql, params, needle", [
    ("UPDATE embeddings SET dim = 3, vector = ? WHERE id = 2", (np.ones(3, np.float32).tobytes(),), "3-d"),
    ("UPDATE embeddings SET vector = ? WHERE id = 2", (b"\0" * 7,), "7 bytes"),
    ("UPDATE embeddings SET dim = 'four' WHERE id = 2", (), "'four'-d"),
    ("UPDATE embeddings SET vector = ? WHERE id = 2", (np.array([1, np.nan, 0, 0], np.float32).tobytes(),),
     "not finite"),
    ("UPDATE meta SET value = '4.5' WHERE key = 'dim'", (), "dimension '4.5'"),
])
def test_corrupt_rows_are_one_clear_error(tmp_path, sql, params, needle):
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.enroll("ada", _vectors(2), ["a", "b"], INFO)
        g.enroll("bob", _vectors(1, 1), ["c"], INFO)
        g.vectors()
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, params)
    db.close()
    with Gallery(path, create=False, readonly=True) as g:
        with pytest.raises(CnnkitError, match=f"corrupt gallery: .*{needle}"):
            g.nearest(_vectors(1)[0], Scorer("l2"))
        with pytest.raises(CnnkitError, match="corrupt gallery"):
            g.export()


def test_corrupt_gallery_on_the_command_line(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ada", _vectors(1), ["a"], INFO)
    db = sqlite3.connect(tmp_path / "g.db")
    with db:
        db.execute("UPDATE embeddings SET vector = x'00'")
    db.close()
    one_clear_line(run_cli("gallery", "export", "--gallery", tmp_path / "g.db"), "corrupt gallery:", "1 bytes")
    one_clear_line(run_cli("verify", "x.jpg", "--threshold", "nan"), "--threshold nan is not a number")
    # enroll into another program's sqlite database: refused, the file untouched
    from cnnkit.core.data.images import write_image

    mlflow_db = tmp_path / "mlflow.db"
    with sqlite3.connect(mlflow_db) as db:
        db.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY)")
    before = mlflow_db.read_bytes()
    face = write_image(tmp_path / "face.png", np.zeros((32, 32, 3), np.uint8))
    one_clear_line(run_cli("enroll", "ada", face, "--no-detect", "--gallery", mlflow_db), "not a cnnkit gallery")
    assert mlflow_db.read_bytes() == before and not Path(f"{mlflow_db}-vectors").exists()


def test_nan_is_refused_at_enroll(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        bad = _vectors(2)
        bad[1, 2] = np.nan
        with pytest.raises(CnnkitError, match="not finite"):
            g.enroll("ada", bad, ["a", "b"], INFO)
        assert g.count() == 0


def test_hnsw_finds_what_exact_search_finds_and_follows_changes(tmp_path):
    """On 2,000 clustered rows the graph's answer is the exact one for every probe; after
    enrollments and removals made since it was built, it still never returns a removed person
    and finds the newly enrolled."""
    rng = np.random.default_rng(0)
    info = ModelInfo("a" * 64, "siamese-small", "x.pt", "l2", 32)
    centres = rng.normal(size=(200, 32)).astype(np.float32)
    with Gallery(tmp_path / "g.db") as g:
        with pytest.raises(CnnkitError, match="no HNSW index"):
            g.nearest(centres[0], Scorer("l2"), index="hnsw")
        for i, c in enumerate(centres):
            g.enroll(f"p{i}", c + 0.1 * rng.normal(size=(10, 32)).astype(np.float32), ["x"] * 10, info)
        g.build_hnsw()
        probes = centres + 0.1 * rng.normal(size=centres.shape).astype(np.float32)
        found = [(g.nearest(q, Scorer("l2"), index="hnsw"), g.nearest(q, Scorer("l2"))) for q in probes]
        assert all(approx[0] == exact[0] for approx, exact in found)  # the right person for every probe
        # the graph may miss the person's closest row among its 16 candidates: the distance is then a
        # sibling row's, never below the exact one
        assert all(approx[1] >= exact[1] - 1e-6 for approx, exact in found)
        assert sum(approx[1] == exact[1] for approx, exact in found) >= 0.95 * len(found)
        g.remove("p5")
        g.enroll("new", centres[7][None] + 0.01, ["x"], info)
        assert g.nearest(probes[5], Scorer("l2"), index="hnsw") == g.nearest(probes[5], Scorer("l2"))
        assert g.nearest(centres[7], Scorer("l2"), index="hnsw")[0] == "new"


def test_rows_the_graph_cannot_reach_are_found_all_the_same(tmp_path):
    """usearch's concurrent add strands rows no graph search reaches (unum-cloud/USearch#735: 2,000
    clustered rows added on 16 threads left some stranded in 40 of 40 datasets); the build lists
    exactly those, and every enrolled vector still finds itself at distance 0."""
    from cnnkit.plugins.siamese import hnsw

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 32)).astype(np.float32)
    info = ModelInfo("a" * 64, "siamese-small", "x.pt", "l2", 32)
    with Gallery(tmp_path / "g.db") as g:
        for i, c in enumerate(centres):
            g.enroll(f"p{i}", c + 0.1 * rng.normal(size=(10, 32)).astype(np.float32), ["x"] * 10, info)
        vectors = g.vectors()
        count = hnsw.build(g.path, vectors, threads=16)
        graph = hnsw.Graph.open(g.path)
        found = np.asarray(graph.index.search(vectors.matrix, hnsw.TOP).keys, np.int64)
        stranded = vectors.ids[~(found == vectors.ids[:, None]).any(axis=1)]
        assert count == len(graph.unreached) and graph.unreached.tolist() == stranded.tolist()
        assert all(g.nearest(row, Scorer("l2"), index="hnsw")[1] == 0.0 for row in vectors.matrix)
