"""The SQLite gallery: storage, model fingerprints, WAL and crash safety (no torch needed)."""

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnnkit.core.errors import CnnkitError
from cnnkit.plugins.siamese.gallery import Gallery, ModelInfo
from tests.conftest import ROOT

INFO = ModelInfo("a" * 64, "siamese-small", "/runs/x/best.pt", "l2", 4)
OTHER = ModelInfo("b" * 64, "siamese-small", "/runs/y/best.pt", "l2", 4)


def _vectors(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_enroll_list_remove_roundtrip(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        assert g.model is None and g.people() == []
        v = _vectors(3)
        assert g.enroll("ada", v[:2], ["a1.jpg", "a2.jpg"], INFO) == 2
        assert g.enroll("ada", v[2:], ["a3.jpg"], INFO) == 3
        g.enroll("bob", _vectors(1, 1), ["b.jpg"], INFO)
        assert [(p["name"], p["embeddings"]) for p in g.people()] == [("ada", 3), ("bob", 1)]
        names, matrix = g.embeddings()
        assert names == ["ada", "ada", "ada", "bob"] and matrix.dtype == np.float32
        assert np.array_equal(matrix[:3], v)  # float32 blobs come back bit for bit
        assert g.model == INFO
        assert g.remove("ada") == 3
        with pytest.raises(CnnkitError, match="not enrolled"):
            g.remove("ada")
        with pytest.raises(CnnkitError, match="not enrolled"):
            g.embeddings("ada")
        exported = g.export()
        assert exported["model"]["fingerprint"] == INFO.fingerprint
        assert [p["name"] for p in exported["identities"]] == ["bob"]


def test_embeddings_of_another_model_are_refused(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ada", _vectors(1), ["a.jpg"], INFO)
        with pytest.raises(CnnkitError, match="another model"):
            g.enroll("bob", _vectors(1), ["b.jpg"], OTHER)
        with pytest.raises(CnnkitError, match="another model"):
            g.check(OTHER)
        assert [p["name"] for p in g.people()] == ["ada"]
        g.remove("ada")  # an empty gallery may move to a new model
        g.enroll("bob", _vectors(1), ["b.jpg"], OTHER)
        assert g.model == OTHER


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
        from cnnkit.plugins.siamese.gallery import Gallery, ModelInfo
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
