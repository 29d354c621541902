"""Issue 30, the gallery rows: hostile galleries, names and data for `verify`, `enroll`, `gallery`
and `eval` (rows 4, 7, 18-22, 25, 26). Each case: the exact line a user sees, the exit code, no
traceback, and nothing stored before it lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from cnnkit.plugins.siamese import vectors as vectors_file
from cnnkit.plugins.siamese.backends import ModelInfo
from cnnkit.plugins.siamese.gallery import Gallery
from tests.conftest import one_clear_line, run_cli
from tests.test_gallery import milvus_server  # noqa: F401  (the Milvus Lite server fixture)

INFO = ModelInfo("a" * 64, "siamese-small", "/runs/x/best.pt", "l2", 4)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A gallery of obama, kit_harington and biden (2 photos each, dlib's face ResNet, the default)
    and the photos; tests work on copies of its files."""
    from tests.conftest import SHARED_DATA

    root = SHARED_DATA / "faces"
    if not root.is_dir():
        pytest.skip("../shared/data is not present")
    db = tmp_path_factory.mktemp("faces") / "g.db"
    for person in ("obama", "kit_harington", "biden"):
        r = run_cli("enroll", person, root / "known" / person, "--gallery", db)
        assert r.code == 0, r.stderr
    return db, root


@pytest.fixture
def gallery(faces, tmp_path):
    """A copy of the face gallery in this test's folder (the database and its search side)."""
    db, _ = faces
    for suffix in ("", "-vectors"):
        shutil.copy(f"{db}{suffix}", tmp_path / f"g.db{suffix}")
    return tmp_path / "g.db"


def _people(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"{Path(db).absolute().as_uri()}?mode=ro&immutable=1", uri=True) as con:
        rows = con.execute("SELECT i.name, COUNT(e.id) FROM identities i JOIN embeddings e ON e.identity_id = i.id "
                           "GROUP BY i.id").fetchall()
    return dict(rows)


def _stored(db: Path) -> np.ndarray:
    with sqlite3.connect(f"{Path(db).absolute().as_uri()}?mode=ro&immutable=1", uri=True) as con:
        blobs = [b for (b,) in con.execute("SELECT vector FROM embeddings ORDER BY id")]
    return np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), -1)


def _alter(db: Path, how: str) -> None:
    """Change the search side's rows in place, keeping its header (and, "forged", its checksums)."""
    path = Path(f"{db}-vectors")
    _, dim, rows, capacity = struct.unpack("<8sQQQ", path.read_bytes()[:32])
    off_norms = 64 + 8 * capacity
    off_matrix = off_norms + 4 * capacity
    raw = path.read_bytes()
    norms = np.frombuffer(raw, np.float32, rows, off_norms).copy()
    matrix = np.frombuffer(raw, np.float32, rows * dim, off_matrix).reshape(rows, dim).copy()
    obama, kit = slice(0, 2), slice(2, 4)  # enrolled in this order
    if how in ("swap", "forged"):
        matrix[obama], matrix[kit] = matrix[kit].copy(), matrix[obama].copy()
        norms[obama], norms[kit] = norms[kit].copy(), norms[obama].copy()
    elif how == "zero":
        matrix[obama], norms[obama] = 0.0, 0.0
    elif how == "nan":
        matrix[obama] = np.nan
    elif how == "noise":
        matrix[obama] += np.random.default_rng(0).normal(0, 0.2, matrix[obama].shape).astype(np.float32)
    with open(path, "r+b") as fh:
        os.pwrite(fh.fileno(), norms.tobytes(), off_norms)
        os.pwrite(fh.fileno(), matrix.tobytes(), off_matrix)
        if how == "forged":  # checksums remade to match: only the database can tell
            vectors_file._write_sums(fh, capacity, dim, 0, rows)


def _verify(db: Path, photo: Path, *args: str):
    return run_cli("verify", photo, "--gallery", db, "--json", *args)


# ---------------------------------------------------------------- row 4 (and 19): the search side
@pytest.mark.parametrize("how", ["swap", "zero", "noise", "nan", "forged"])
def test_row4_altered_search_rows_are_rebuilt_from_the_database(gallery, faces, how):
    """`verify obama3.jpg` said "verified: kit" once obama's and kit's rows were swapped in
    `<db>-vectors` with the header kept. Every altered block is seen (its checksum; forged checksums:
    the answer's row against the database's), the file is rebuilt from the database, said on stderr."""
    probe = faces[1] / "probe" / "obama3.jpg"
    before = json.loads(_verify(gallery, probe).stdout)[0]
    _alter(gallery, how)
    r = _verify(gallery, probe)
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)[0]  # valid JSON: no NaN reached it
    assert (out["name"], out["distance"]) == ("obama", pytest.approx(before["distance"], abs=1e-5))
    if how == "forged":
        assert f"warning: {gallery}-vectors disagreed with the database (embedding 3 is not the database's); " \
            "rebuilt it from the database" in r.stderr, r.stderr
    else:
        assert f"warning: {gallery}-vectors disagreed with the database (rows 1-6); rebuilt it from the database" \
            in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    rebuilt = vectors_file.VectorFile.open(Path(f"{gallery}-vectors"))
    assert rebuilt.altered() is None and np.array_equal(rebuilt.matrix, _stored(gallery))
    assert _people(gallery) == {"obama": 2, "kit_harington": 2, "biden": 2}


def test_row4_gallery_index_rebuilds_from_the_database(gallery):
    """`gallery index`, the documented repair, kept an altered file; it now always rewrites it
    from the database."""
    _alter(gallery, "swap")
    r = run_cli("gallery", "index", "--gallery", gallery)
    assert r.code == 0 and f"indexed 6 embedding(s) of {gallery}" in r.stdout, r.stderr
    rebuilt = vectors_file.VectorFile.open(Path(f"{gallery}-vectors"))
    assert np.array_equal(rebuilt.matrix, _stored(gallery)) and rebuilt.altered() is None


def test_row19_nan_rows_never_reach_json(gallery, faces):
    """NaN rows in `<db>-vectors`: a traceback (`Out of range float values are not JSON compliant`);
    now rebuilt, and a 1:1 claim answers from the database."""
    _alter(gallery, "nan")
    probe = faces[1] / "probe" / "obama3.jpg"
    for args in ((), ("--claim", "obama"), ("--claim", "kit_harington")):
        r = _verify(gallery, probe, *args)
        assert r.code in (0, 1) and "Traceback" not in r.stderr, r.stderr
        assert all(np.isfinite(o["distance"]) for o in json.loads(r.stdout))


# ---------------------------------------------------------------- row 7: video verify exit code
def test_row7_a_video_where_no_frame_matches_exits_1(gallery, faces, tmp_path):
    import cv2

    frame = cv2.imread(str(faces[1] / "probe" / "obama_small.jpg"))  # 320 x 240
    clip = tmp_path / "clip.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (320, 240))
    for _ in range(2):
        out.write(frame)
    out.release()
    r = run_cli("verify", clip, "--claim", "kit_harington", "--gallery", gallery)
    assert r.code == 1, (r.stdout, r.stderr)
    assert [json.loads(line)["faces"][0]["match"] for line in r.stdout.splitlines()] == [False, False]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{clip}: not verified in any of 2 frame(s): not kit_harington (distance ")
    assert line.endswith("> threshold 0.6000 at best, 2 face(s))") and "Traceback" not in r.stderr
    assert run_cli("verify", clip, "--claim", "obama", "--gallery", gallery).code == 0
    r = run_cli("verify", clip, "--gallery", gallery, "--threshold", "0.01")
    assert r.code == 1 and "not verified in any of 2 frame(s): closest is obama" in r.stderr


# ---------------------------------------------------------------- row 18: a damaged HNSW graph
def _damage_graph(db: Path, how: str) -> Path:
    graph, info = Path(f"{db}-hnsw"), Path(f"{db}-hnsw.json")
    raw = graph.read_bytes()
    described = json.loads(info.read_text())
    damage = {
        "graph-truncated": (graph, raw[:len(raw) // 2]),
        "graph-zeroed": (graph, bytes(len(raw))),
        "graph-empty": (graph, b""),
        "graph-random": (graph, np.random.default_rng(0).bytes(len(raw))),
        "graph-body": (graph, raw[:len(raw) // 2] + np.random.default_rng(0).bytes(len(raw) // 4)
                       + raw[3 * len(raw) // 4:]),  # usearch's view crashed (SIGSEGV) on this one
        "json-garbage": (info, b"\x89PNG not json {"),
        "json-list": (info, json.dumps([described]).encode()),
        "json-types": (info, json.dumps({**described, "last_id": "7", "unreached": "none"}).encode()),
        "json-empty": (info, b""),
    }[how]
    damage[0].write_bytes(damage[1])
    return damage[0]


@pytest.mark.parametrize("how", ["graph-truncated", "graph-zeroed", "graph-empty", "graph-random", "graph-body",
                                 "json-garbage", "json-list", "json-types", "json-empty"])
def test_row18_a_damaged_hnsw_graph_is_one_line(gallery, faces, how):
    assert run_cli("gallery", "index", "--hnsw", "--gallery", gallery).code == 0
    damaged = _damage_graph(gallery, how)
    probe = faces[1] / "known" / "obama" / "1.jpg"
    r = run_cli("verify", probe, "--gallery", gallery, "--index", "hnsw", "--no-detect")
    line = one_clear_line(r, f"error: {damaged} ", ": rebuild it with `cnnkit gallery index --hnsw`")
    assert {"graph-truncated": "does not match its description", "json-list": "holds a list, not the description",
            "json-types": "lacks or mistypes last_id, unreached",
            "json-empty": "is not readable JSON"}.get(how, "") in line
    assert _people(gallery) == {"obama": 2, "kit_harington": 2, "biden": 2}
    assert run_cli("gallery", "index", "--hnsw", "--gallery", gallery).code == 0  # the repair it names works
    r = run_cli("verify", probe, "--gallery", gallery, "--index", "hnsw", "--no-detect", "--json")
    assert r.code == 1 and json.loads(r.stdout)[0]["closest"] == "obama"  # a whole photo: no face chip


# ---------------------------------------------------------------- row 20: read-only storage
@pytest.fixture
def read_only(tmp_path):
    """``seal(folder)``: the folder's read-only view (a read-only bind mount, else the folder made
    immutable with chattr +i; skipped where neither works). Root writes through permission bits."""
    sealed = []

    def seal(folder: Path) -> Path:
        view = tmp_path / "read-only"
        view.mkdir()
        if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode == 0:
            sealed.append(["umount", "-l", str(view)])
            if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode == 0:
                return view
        paths = [str(folder), *map(str, folder.iterdir())]
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", *paths], capture_output=True).returncode == 0:
            sealed.append(["chattr", "-i", *paths])
            return folder
        pytest.skip("no read-only storage here: neither a read-only bind mount nor chattr +i works")

    yield seal
    for undo in reversed(sealed):
        subprocess.run(undo, capture_output=True)


@pytest.mark.parametrize("search_side", ["current", "missing", "altered"])
def test_row20_a_gallery_on_read_only_storage_is_read(gallery, faces, read_only, search_side):
    """`verify` and `gallery list` said "not a cnnkit gallery (unable to open database file)": the
    database is opened read-only (immutable where not even its -shm can be made), and a search side
    that cannot be rebuilt is replaced by the database's rows in memory, said on stderr."""
    if search_side == "missing":
        Path(f"{gallery}-vectors").unlink()
    elif search_side == "altered":
        _alter(gallery, "swap")
    db = read_only(gallery.parent) / "g.db"
    r = run_cli("gallery", "list", "--gallery", db)
    assert r.code == 0 and "kit_harington" in r.stdout and "Traceback" not in r.stderr, r.stderr
    r = _verify(db, faces[1] / "probe" / "obama3.jpg")
    assert r.code == 0 and json.loads(r.stdout)[0]["name"] == "obama", r.stderr
    note = {"current": None,
            "missing": f"warning: {db}-vectors is missing or out of date and cannot be rebuilt here",
            "altered": f"warning: {db}-vectors disagrees with the database (rows 1-6) and cannot be rebuilt here"}
    if note[search_side] is None:
        assert r.stderr == ""
    else:
        assert r.stderr.startswith(note[search_side]) and ": searching the database's 6 embedding(s) in memory; " \
            "`cnnkit gallery index` where the gallery is writable rebuilds it" in r.stderr, r.stderr
    for args in (("gallery", "remove", "obama"), ("gallery", "index"),
                 ("enroll", "rose", faces[1] / "known" / "rose_leslie" / "1.jpg", "--no-detect")):
        one_clear_line(run_cli(*args, "--gallery", db), f"error: {db}: the gallery cannot be written here (",
                       ": read-only storage or no permission)")
    assert _people(db) == {"obama": 2, "kit_harington": 2, "biden": 2}


# ---------------------------------------------------------------- rows 21-22: names
MARKUP = ["[/]", "[bold red]base[/bold red]", "base"]


def test_row21_names_are_printed_as_text_not_markup(tmp_path):
    with Gallery(tmp_path / "g.db") as g:
        for i, name in enumerate(MARKUP):
            g.enroll(name, np.eye(4, dtype=np.float32)[i:i + 1], ["x"], INFO)
    r = run_cli("gallery", "list", "--gallery", tmp_path / "g.db")
    assert r.code == 0, r.stderr
    names = [line.split("│")[1].strip() for line in r.stdout.splitlines() if line.count("│") == 4]
    assert names == sorted(MARKUP)


def test_row21_control_characters_are_refused_at_enroll_and_shown_escaped(tmp_path, faces):
    db = tmp_path / "g.db"
    photo = faces[1] / "known" / "obama" / "1.jpg"
    for name, shown in (("evil\x1b[2J", "evil\\x1b[2J"), ("two\nlines", "two\\nlines"),
                        ("rtl\u202eevil", "rtl\\u202eevil")):
        one_clear_line(run_cli("enroll", name, photo, "--gallery", db, "--no-detect"),
                       f"error: the name '{shown}' holds a control character (")
    assert not db.exists()  # refused before anything was made
    with Gallery(db) as g:  # a name stored before this rule (or by another program)
        g.enroll("ada", np.ones((1, 4), np.float32), ["x"], INFO)
        g.db.execute("UPDATE identities SET name = ? WHERE name = 'ada'", ("ada\x1b[31mred",))
    r = run_cli("gallery", "list", "--gallery", db)
    assert r.code == 0 and "\x1b" not in r.stdout and "ada\\x1b[31mred" in r.stdout
    r = run_cli("gallery", "remove", "ada\x1b[31mred", "--gallery", db)
    assert r.code == 0 and r.stdout == f"removed ada\\x1b[31mred (1 embedding(s)) from {db}\n"


@pytest.mark.parametrize("backend", ["sqlite", "milvus"])
def test_row22_names_have_the_same_limits_on_both_backends(backend, tmp_path, faces, request):
    """A newline in a name made a Milvus enroll store the row and then fail (never removable); a
    600-character name: a traceback. Both backends refuse both before anything is written."""
    uri = str(tmp_path / "g.db") if backend == "sqlite" else \
        f"{request.getfixturevalue('milvus_server')}/g{uuid.uuid4().hex}"
    photo = faces[1] / "known" / "obama" / "1.jpg"
    assert run_cli("enroll", "ada", photo, "--gallery", uri, "--no-detect").code == 0
    one_clear_line(run_cli("enroll", "x\ny", photo, "--gallery", uri, "--no-detect"),
                   "error: the name 'x\\ny' holds a control character (\\n): "
                   "use letters, digits, spaces and punctuation")
    one_clear_line(run_cli("enroll", "x" * 600, photo, "--gallery", uri, "--no-detect"),
                   f"error: the name to enroll is 600 characters long ('{'x' * 24}...'); at most 128")
    assert run_cli("enroll", "é" * 128, photo, "--gallery", uri, "--no-detect").code == 0  # 256 bytes of UTF-8
    people = json.loads(run_cli("gallery", "list", "--json", "--gallery", uri).stdout)["people"]
    assert sorted(p["name"] for p in people) == ["ada", "é" * 128]


def test_row22_milvus_names_and_urls(milvus_server, faces):  # noqa: F811
    from pymilvus import MilvusClient

    photo = faces[1] / "known" / "obama" / "1.jpg"
    uri = f"{milvus_server}/g{uuid.uuid4().hex}"
    assert run_cli("enroll", "ada", photo, "--gallery", uri, "--no-detect").code == 0
    client = MilvusClient(uri=milvus_server.replace("milvus://", "http://"))
    collection = uri.rsplit("/", 1)[1]
    (row,) = client.query(collection, filter='name == "ada"', output_fields=["fingerprint", "vector"])
    client.insert(collection, [{"name": "two\nlines", "fingerprint": row["fingerprint"], "source": "x",
                                "created": 0.0, "vector": row["vector"]}])  # stored by the old enroll
    r = run_cli("verify", photo, "--claim", "two\nlines", "--gallery", uri, "--no-detect")
    assert r.code == 0 and "verified: two\\nlines (distance" in r.stdout, r.stderr
    r = run_cli("gallery", "remove", "two\nlines", "--gallery", uri)
    assert r.code == 0 and "removed two\\nlines (1 embedding(s))" in r.stdout, r.stderr
    one_clear_line(run_cli("gallery", "remove", 'zed" or name != "', "--gallery", uri), "is not enrolled in")
    for bad, needle in ((f"{milvus_server}/{'c' * 250}", "at most 249 characters (this one: 250)"),
                        (f"{milvus_server}/{'c' * 300}", "(this one: 300)"),
                        ("milvus://127.0.0.1:99999/faces", "a port from 1 to 65535"),
                        ("milvus://127.0.0.1/faces", "a port from 1 to 65535"),
                        (f"{milvus_server}/9lives", "not first a digit")):
        one_clear_line(run_cli("enroll", "bob", photo, "--gallery", bad, "--no-detect"), needle)
    assert not [c for c in client.list_collections() if c.startswith("ccc")]  # no orphan collection
    assert [p["name"] for p in json.loads(run_cli("gallery", "list", "--json", "--gallery", uri).stdout)["people"]] \
        == ["ada"]


# ---------------------------------------------------------------- rows 25-26: eval data
@pytest.fixture
def identities(faces, tmp_path):
    """An identity root of the known faces (each photo twice) plus an unreadable image per person."""
    root = tmp_path / "ids"
    for person in sorted((faces[1] / "known").iterdir()):
        (root / person.name).mkdir(parents=True)
        for photo in person.iterdir():
            for copy in ("a", "b"):
                shutil.copy(photo, root / person.name / f"{copy}{photo.name}")
        (root / person.name / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_row25_eval_says_how_many_images_it_skipped(identities):
    r = run_cli("eval", "face-resnet", "--data", identities, "--json")
    assert r.code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("data warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"data warning: identities {identities} val: 2 image(s) "
                                                         "skipped: broken.jpg: "), r.stderr
    assert "auc" in json.loads(r.stdout)


def test_row26_empty_person_folders_are_named(tmp_path, identities):
    empty = tmp_path / "emptydirs"
    for name in ("ada", "bob", "cy"):
        (empty / name).mkdir(parents=True)
    one_clear_line(run_cli("eval", "face-resnet", "--data", empty),
                   f"error: {empty}: 3 of its 3 folders hold no images (ada/, bob/, cy/); an identity root (one "
                   "folder a person) or a folder of classes needs images directly in each folder")
    (identities / "zoe").mkdir()
    one_clear_line(run_cli("eval", "face-resnet", "--data", identities), "1 of its 6 folders hold no images (zoe/)")
