"""Hostile galleries, names, URLs and data, run through the real `cnnkit` command (issue 30's gallery rows).

    python bench/hostile_gallery.py [--faces ../shared/data/faces] [--keep DIR]

Re-runs the kinds of cases of rows 4, 7, 18-22, 25 and 26 with other variants (other corruptions,
names, URLs, data) as subprocesses of the installed entry point, against a SQLite gallery of three
people enrolled here and a Milvus Lite server this script starts and stops. Prints one row a case:
row, case, exit code, the first stderr line, whether a traceback appeared; then the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CNNKIT = str(Path(sys.executable).with_name("cnnkit"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CNNKIT_WEIGHTS_MIRROR": "http://127.0.0.1:9"}
RESULTS: list[tuple[str, str, int, str, bool]] = []


def cnnkit(row: str, case: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run `cnnkit ARGS`, record its outcome."""
    r = subprocess.run([CNNKIT, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    first = next((line for line in r.stderr.splitlines() if line.strip()), "")
    RESULTS.append((row, case, r.returncode, first, "Traceback" in r.stderr))
    return r


def start_milvus(data: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data), "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"milvus://127.0.0.1:{port}"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit("milvus-lite server did not start")
            time.sleep(0.2)


def copy_gallery(base: Path, to: Path) -> Path:
    to.mkdir(parents=True)
    for suffix in ("", "-vectors"):
        shutil.copy(f"{base}{suffix}", to / f"g.db{suffix}")
    return to / "g.db"


def alter_rows(db: Path, how: str) -> None:
    """Change the first two rows of ``<db>-vectors`` in place, the header kept ("forged": checksums remade)."""
    path = Path(f"{db}-vectors")
    raw = path.read_bytes()
    _, dim, rows, capacity = struct.unpack("<8sQQQ", raw[:32])
    off_norms = 64 + 8 * capacity
    off_matrix = off_norms + 4 * capacity
    matrix = np.frombuffer(raw, np.float32, rows * dim, off_matrix).reshape(rows, dim).copy()
    norms = np.frombuffer(raw, np.float32, rows, off_norms).copy()
    if how in ("swap", "forged"):
        matrix[[0, 1, 2, 3]], norms[[0, 1, 2, 3]] = matrix[[2, 3, 0, 1]], norms[[2, 3, 0, 1]]
    elif how == "zero":
        matrix[:2], norms[:2] = 0, 0
    elif how in ("nan", "inf"):
        matrix[:2] = np.nan if how == "nan" else np.inf
    elif how == "noise":
        matrix[:2] += np.random.default_rng(0).normal(0, 0.2, (2, dim)).astype(np.float32)
    elif how == "ids":
        ids = np.frombuffer(raw, np.int64, rows, 64).copy()
        ids[[0, 2]] = ids[[2, 0]]
        with open(path, "r+b") as fh:
            os.pwrite(fh.fileno(), ids.tobytes(), 64)
        return
    with open(path, "r+b") as fh:
        os.pwrite(fh.fileno(), norms.tobytes(), off_norms)
        os.pwrite(fh.fileno(), matrix.tobytes(), off_matrix)
        if how == "forged":
            from cnnkit.plugins.siamese import vectors

            vectors._write_sums(fh, capacity, dim, 0, rows)


def damage_graph(db: Path, how: str) -> None:
    """Damage a built HNSW graph (``<db>-hnsw``) or its description (``<db>-hnsw.json``)."""
    graph, info = Path(f"{db}-hnsw"), Path(f"{db}-hnsw.json")
    raw, described = graph.read_bytes(), json.loads(info.read_text())
    noise = np.random.default_rng(0).bytes
    writes = {"graph truncated": (graph, raw[:len(raw) // 3]), "graph zeroed": (graph, bytes(len(raw))),
              "graph empty": (graph, b""), "graph random": (graph, noise(len(raw))),
              "graph body random": (graph, raw[:len(raw) // 2] + noise(len(raw) // 4) + raw[3 * len(raw) // 4:]),
              "json garbage": (info, b"\x00\xffgarbage{"), "json list": (info, b"[1, 2, 3]"),
              "json wrong types": (info, json.dumps({**described, "rows": "many", "xxh3": 7}).encode()),
              "json empty": (info, b""), "json 64-d": (info, json.dumps({**described, "dim": 64}).encode())}
    if how in writes:
        writes[how][0].write_bytes(writes[how][1])
    else:  # "graph missing", "json missing"
        (graph if how == "graph missing" else info).unlink()


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path


def read_only_view(folder: Path, view: Path, undo: list[list[str]]) -> Path | None:
    """``folder`` seen through a read-only bind mount (None where mounting is not allowed)."""
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True).returncode:
        return None
    undo.append(["umount", "-l", str(view)])
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True).returncode:
        return None
    return view


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", default=str(ROOT.parent / "shared" / "data" / "faces"))
    p.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = p.parse_args()
    faces = Path(args.faces)
    if not faces.is_dir():
        raise SystemExit(f"{faces}: the face photos are missing")
    work = Path(args.keep or tempfile.mkdtemp(prefix="hostile-gallery-"))
    work.mkdir(parents=True, exist_ok=True)
    server, milvus = start_milvus(work / "milvus")
    undo: list[list[str]] = []
    try:
        run_cases(work, faces, milvus, undo)
    finally:
        for command in reversed(undo):
            subprocess.run(command, capture_output=True)
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report()


def run_cases(work: Path, faces: Path, milvus: str, undo: list[list[str]]) -> None:
    base = work / "base" / "g.db"
    base.parent.mkdir()
    for person in ("obama", "kit_harington", "biden"):
        r = subprocess.run([CNNKIT, "enroll", person, faces / "known" / person, "--gallery", base], env=ENV,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
    probe, photo = faces / "probe" / "obama3.jpg", faces / "known" / "obama" / "1.jpg"
    n = iter(range(10_000))

    def fresh() -> Path:
        return copy_gallery(base, work / f"case{next(n)}")

    # row 4 (and 19): rows of the search side altered, the header kept
    for how in ("swap", "zero", "noise", "forged", "ids"):
        db = fresh()
        alter_rows(db, how)
        cnnkit("4", f"verify after rows {how}", "verify", probe, "--gallery", db, cwd=db.parent)
    db = fresh()
    alter_rows(db, "swap")
    cnnkit("4", "gallery index on swapped rows", "gallery", "index", "--gallery", db, cwd=db.parent)
    cnnkit("4", "verify after gallery index", "verify", probe, "--gallery", db, cwd=db.parent)
    for how in ("nan", "inf"):
        for extra in ((), ("--claim", "obama")):
            db = fresh()
            alter_rows(db, how)
            cnnkit("19", f"verify --json, {how} rows {' '.join(extra)}", "verify", probe, "--json", *extra,
                   "--gallery", db, cwd=db.parent)

    # row 7: a video where no frame matches
    import cv2

    small = cv2.imread(str(faces / "probe" / "obama_small.jpg"))
    clip = write_video(work / "clip.avi", [small] * 3)
    blank = write_video(work / "blank.avi", [np.full_like(small, 90)] * 3)
    db = fresh()
    cnnkit("7", "video --claim kit_harington", "verify", clip, "--claim", "kit_harington", "--gallery", db, cwd=work)
    cnnkit("7", "video 1:N --threshold 0.01", "verify", clip, "--threshold", "0.01", "--gallery", db, cwd=work)
    cnnkit("7", "video without faces --claim obama", "verify", blank, "--claim", "obama", "--gallery", db, cwd=work)
    cnnkit("7", "video --claim obama (matches)", "verify", clip, "--claim", "obama", "--gallery", db, cwd=work)

    # row 18: a damaged HNSW graph or description
    for how in ("graph truncated", "graph zeroed", "graph empty", "graph random", "graph body random",
                "graph missing", "json garbage", "json list", "json wrong types", "json empty", "json missing",
                "json 64-d"):
        db = fresh()
        subprocess.run([CNNKIT, "gallery", "index", "--hnsw", "--gallery", db], env=ENV, capture_output=True)
        damage_graph(db, how)
        cnnkit("18", how, "verify", photo, "--no-detect", "--index", "hnsw", "--gallery", db, cwd=db.parent)

    # row 20: a valid gallery on read-only storage
    for state in ("current", "vectors missing", "rows altered"):
        db = fresh()
        if state == "vectors missing":
            Path(f"{db}-vectors").unlink()
        elif state == "rows altered":
            alter_rows(db, "swap")
        else:
            subprocess.run([CNNKIT, "gallery", "index", "--hnsw", "--gallery", db], env=ENV, capture_output=True)
        view = read_only_view(db.parent, work / f"ro{next(n)}", undo)
        if view is None:
            RESULTS.append(("20", f"read-only ({state})", -1, "skipped: mount --bind -o ro is not allowed here", False))
            continue
        ro = view / "g.db"
        cnnkit("20", f"gallery list ({state})", "gallery", "list", "--gallery", ro, cwd=work)
        cnnkit("20", f"verify ({state})", "verify", probe, "--gallery", ro, cwd=work)
        if state == "current":
            cnnkit("20", "gallery export", "gallery", "export", "--gallery", ro, cwd=work)
            cnnkit("20", "verify --index hnsw", "verify", probe, "--index", "hnsw", "--gallery", ro, cwd=work)
            cnnkit("20", "enroll", "enroll", "rose", faces / "known" / "rose_leslie", "--gallery", ro, cwd=work)
            cnnkit("20", "gallery remove", "gallery", "remove", "obama", "--gallery", ro, cwd=work)
            cnnkit("20", "gallery index", "gallery", "index", "--gallery", ro, cwd=work)

    # row 21: names as markup and escape sequences
    from cnnkit.plugins.siamese.gallery import Gallery

    db = fresh()
    with Gallery(db) as g:
        info = g.model
        vector = np.frombuffer(g.db.execute("SELECT vector FROM embeddings LIMIT 1").fetchone()[0], np.float32)
        for name in ("[/]", "[bold red]base[/bold red]", "[link=http://x]y[/link]"):
            g.enroll(name, vector[None], ["x"], info)
    with sqlite3.connect(db) as con:  # stored before names were checked
        con.execute("UPDATE identities SET name = ? WHERE name = 'biden'", ("biden\x1b[2J\x1b[31m",))
    cnnkit("21", "gallery list with markup and escapes", "gallery", "list", "--gallery", db, cwd=work)
    for name in ("evil\x1b[2J", "bell\x07", "rtl\u202eevil", "two\nlines", "tab\there"):
        cnnkit("21", f"enroll {name!r}", "enroll", name, photo, "--no-detect", "--gallery", db, cwd=work)
    cnnkit("21", "remove the escaped legacy name", "gallery", "remove", "biden\x1b[2J\x1b[31m", "--gallery", db,
           cwd=work)
    cnnkit("21", "verify --claim [/]", "verify", photo, "--no-detect", "--claim", "[/]", "--gallery", db, cwd=work)

    # row 22: names and URLs on Milvus (and the same limits on SQLite)
    from pymilvus import MilvusClient

    coll = f"g{uuid.uuid4().hex}"
    uri = f"{milvus}/{coll}"
    cnnkit("22", "milvus enroll ada", "enroll", "ada", photo, "--no-detect", "--gallery", uri, cwd=work)
    for name in ("x\ny", "cr\rx", "x" * 600, "é" * 129, "  "):
        cnnkit("22", f"milvus enroll {name[:12]!r}{'...' if len(name) > 12 else ''}", "enroll", name, photo,
               "--no-detect", "--gallery", uri, cwd=work)
        cnnkit("22", f"sqlite enroll {name[:12]!r}{'...' if len(name) > 12 else ''}", "enroll", name, photo,
               "--no-detect", "--gallery", db, cwd=work)
    client = MilvusClient(uri=milvus.replace("milvus://", "http://"))
    (row,) = client.query(coll, filter='name == "ada"', output_fields=["fingerprint", "vector"])
    client.insert(coll, [{"name": "old\nline", "fingerprint": row["fingerprint"], "source": "x", "created": 0.0,
                          "vector": row["vector"]}])
    cnnkit("22", "milvus verify --claim 'old\\nline'", "verify", photo, "--no-detect", "--claim", "old\nline",
           "--gallery", uri, cwd=work)
    cnnkit("22", "milvus remove 'old\\nline'", "gallery", "remove", "old\nline", "--gallery", uri, cwd=work)
    cnnkit("22", "milvus remove injection", "gallery", "remove", 'x" or name != "', "--gallery", uri, cwd=work)
    for bad in (f"{milvus}/{'c' * 250}", f"{milvus}/{'c' * 300}", "milvus://127.0.0.1:99999/faces",
                "milvus://127.0.0.1:0/faces", "milvus://127.0.0.1/faces", "milvus://:19530/faces",
                f"{milvus}/9lives", f"{milvus}/gällery", f"{milvus}/a-b", f"{milvus}/"):
        cnnkit("22", f"enroll into {bad[:40]}{'...' if len(bad) > 40 else ''}", "enroll", "bob", photo, "--no-detect",
               "--gallery", bad, cwd=work)
    orphans = [c for c in client.list_collections() if c.startswith(("ccc", "gällery", "9lives"))]
    RESULTS.append(("22", "orphan collections left on the server", len(orphans), ", ".join(orphans) or "none", False))
    cnnkit("22", "milvus gallery list", "gallery", "list", "--gallery", uri, cwd=work)

    # rows 25-26: eval data
    first_ids = None
    for kind, payload in (("broken jpeg", b"\xff\xd8 not a jpeg"), ("zero bytes", b""),
                          ("truncated png", (faces / "probe" / "32bit.png").read_bytes()[:300])):
        ids = work / f"ids{next(n)}"
        for person in sorted((faces / "known").iterdir()):
            (ids / person.name).mkdir(parents=True)
            for photo_file in person.iterdir():
                for copy in "ab":
                    shutil.copy(photo_file, ids / person.name / f"{copy}{photo_file.name}")
            (ids / person.name / ("bad.png" if "png" in kind else "bad.jpg")).write_bytes(payload)
        cnnkit("25", f"eval with a {kind} per person", "eval", "face-resnet", "--data", ids, cwd=work)
        first_ids = first_ids or ids
    for kind, folders in (("all empty", ("ada", "bob")), ("one empty", ("zoe",)), ("hidden empty", (".thumbs",))):
        data = work / f"ids{next(n)}"
        if kind != "all empty":
            shutil.copytree(first_ids, data)
        for folder in folders:
            (data / folder).mkdir(parents=True)
        cnnkit("26", f"eval, {kind} folder(s)", "eval", "face-resnet", "--data", data, cwd=work)


def report() -> None:
    width = max(len(case) for _, case, *_ in RESULTS)
    print(f"{'row':>3}  {'case':<{width}}  exit  traceback  first stderr line")
    for row, case, code, first, traceback in RESULTS:
        print(f"{row:>3}  {case:<{width}}  {code:>4}  {'YES' if traceback else 'no':<9}  {first[:150]!r}")
    print(f"cases: {len(RESULTS)}, tracebacks: {sum(t for *_, t in RESULTS)}")


if __name__ == "__main__":
    main()
