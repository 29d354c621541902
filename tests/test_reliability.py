"""Issue 16: killed runs, unwritable outputs, hostile images, concurrent first use, bad configs.
Each case: its exit code, one line without a traceback, and nothing already written lost.
Signals and second processes run in subprocesses, each bounded in time."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path
from struct import pack

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, Result, one_clear_line, write_image_folder
from tests.test_plugins import _fake_dist

TRAIN = ["train", "resnet18", "--data", "synthetic:textures?n=8&size=32", "--img-size", "32", "--batch-size", "4"]
NO_TRACK = [*TRAIN, "--epochs", "1", "--no-track"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "OMP_NUM_THREADS": "1", **extra}


def _cnnkit(tmp_path: Path, *args: str, timeout: float = 300, **env: str) -> Result:
    p = subprocess.run([sys.executable, "-m", "cnnkit", *args], cwd=tmp_path, env=_env(tmp_path, **env),
                       capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnkit", *args], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} first: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


def _runs(tmp_path: Path) -> list[tuple[str, str]]:
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT run_uuid, status FROM runs").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return pack(">I", len(data)) + kind + data + pack(">I", zlib.crc32(kind + data))


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- 1. killed training
@pytest.mark.slow
def test_sigterm_saves_last_marks_killed_and_resume_continues_the_same_run(tmp_path):
    proc = _start(tmp_path, *TRAIN, "--epochs", "1", "--out", "r")
    _wait_for(lambda: any(s == "RUNNING" for _, s in _runs(tmp_path)), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    line = one_clear_line(Result(proc.returncode, "", err), "SIGTERM", "--resume r/weights/last.pt",
                          code=143, prefix="stopped: ")
    assert "saved r/weights/last.pt" in line
    [(run_id, status)] = _runs(tmp_path)
    assert status == "KILLED"
    ck = torch.load(tmp_path / "r/weights/last.pt", weights_only=True)
    assert ck["interrupted"]["signal"] == "SIGTERM" and ck["mlflow_run_id"] == run_id and ck["epoch"] == -1

    r = _cnnkit(tmp_path, *TRAIN, "--resume", "r/weights/last.pt")
    assert r.code == 0, r.stderr
    assert _runs(tmp_path) == [(run_id, "FINISHED")]  # one training, one run
    assert f"mlflow run: {run_id}" in r.stdout


@pytest.mark.slow
def test_sigkill_leaves_a_stale_run_that_runs_shows_and_resume_continues(tmp_path):
    proc = _start(tmp_path, *TRAIN, "--epochs", "2", "--out", "r")
    _wait_for(lambda: (tmp_path / "r/weights/best.pt").exists(), proc)  # copied after last.pt
    proc.kill()
    proc.wait(timeout=30)
    [(run_id, status)] = _runs(tmp_path)
    assert status == "RUNNING"
    rows = json.loads(_cnnkit(tmp_path, "runs", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in rows] == [(run_id, "STALE")]

    orphan = tmp_path / "r/weights/.last.pt.x1y2.tmp"  # a save cut short by the kill
    orphan.write_bytes(b"\0" * 1024)
    kept = (tmp_path / "r/weights/best.pt").read_bytes()
    r = _cnnkit(tmp_path, *TRAIN, "--resume", "r/weights/last.pt")
    assert r.code == 0, r.stderr
    assert "left RUNNING by a killed process" in r.stderr and "removed 1 unfinished checkpoint" in r.stderr
    assert not orphan.exists()
    assert _runs(tmp_path) == [(run_id, "FINISHED")]
    assert len(kept) > 0 and (tmp_path / "r/weights/best.pt").exists()


def test_resume_of_a_finished_training_is_an_error_not_a_success(cli, tmp_path):
    assert cli(*NO_TRACK, "--out", "r").code == 0
    before = (tmp_path / "r/weights/last.pt").read_bytes()
    one_clear_line(cli(*TRAIN, "--resume", "r/weights/last.pt", "--no-track"), "already trained 1 of 1", "--epochs")
    assert (tmp_path / "r/weights/last.pt").read_bytes() == before


# ---------------------------------------------------------------- 2. unwritable outputs
@pytest.mark.parametrize("args, flag", [
    (["train", "resnet18", "--out", "blocker/run"], "--out"),
    (["detect", "any.pt", "x.png", "--save-dir", "blocker/det"], "--save-dir"),
    (["stylize", "x.png", "y.png", "-o", "blocker/out.png"], "-o"),
    (["gallery", "export", "--gallery", "g.db", "--out", "blocker/g.json"], "--out"),
])
def test_unwritable_outputs_fail_before_any_work(cli, tmp_path, args, flag):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    started = time.monotonic()
    line = one_clear_line(cli(*args), flag, "blocker")
    assert "is a file, not a folder" in line
    assert time.monotonic() - started < 30  # no epoch, optimisation or model load first
    assert (tmp_path / "blocker").read_text() == "a file where a folder should be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_out_folder(cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_clear_line(cli(*NO_TRACK, "--out", "ro/run"), "--out ro/run", "cannot write")
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- 3. concurrent first use of a store
PROBE = """
import sys
from cnnkit.core.train.tracking import Tracker
t = Tracker(True, sys.argv[1], "cnnkit")
t.start("probe", {"i": sys.argv[2]}, {})
t.log_metrics({"loss": 1.0}, 0)
t.end()
print(t.uri)
"""


@pytest.mark.parametrize("trial", range(2))
def test_processes_starting_together_on_a_new_store_lose_no_run(tmp_path, trial):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", PROBE, uri, str(i)], env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in results]
    with sqlite3.connect(tmp_path / "new.db") as c:
        assert c.execute("SELECT COUNT(*) FROM runs WHERE status = 'FINISHED'").fetchone() == (4,)
        assert c.execute("SELECT COUNT(*) FROM experiments WHERE name = 'cnnkit'").fetchone() == (1,)


# ---------------------------------------------------------------- 4. configuration validated once
@pytest.mark.parametrize("yaml_text, needles", [
    ("epochs: 0\n", ("epochs: 0", "config file cfg.yaml", "at least 1")),
    ("batch_size: 0\n", ("batch_size: 0", "config file cfg.yaml")),
    ("img_size: 7\n", ("img_size: 7", "at least 8")),
    ("lr: -1\n", ("lr: -1", "0 or more")),
    ("epochs: ten\n", ("epochs: 'ten'", "not an int")),
])
def test_config_file_values_are_validated_naming_key_and_layer(cli, tmp_path, yaml_text, needles):
    (tmp_path / "cfg.yaml").write_text(yaml_text)
    one_clear_line(cli("train", "resnet18", "--config", "cfg.yaml", "--data", "no/such/data"), *needles)
    assert not (tmp_path / "runs").exists()  # nothing built, no run folder


def test_flag_values_are_validated_before_the_dataset(cli, tmp_path):
    # "no/such/data" would be the error if the dataset were built first
    one_clear_line(cli("train", "resnet18", "--lr", "-1", "--data", "no/such/data"),
                   "lr: -1.0", "from the command line")
    one_clear_line(cli("train", "resnet18", "--momentum", "1.5", "--data", "no/such/data"), "momentum")


# ---------------------------------------------------------------- 5. hostile images (decoding)
def test_decompression_bomb_is_one_line_in_every_command(cli, tmp_path):
    bomb = _png_header(tmp_path / "bomb.png", 100_000, 100_000)
    one_clear_line(cli("stylize", bomb, bomb, "--no-track"), "bomb.png", "100000x100000 pixels", "--max-image-pixels")
    from cnnkit.core.data.images import read_image

    with pytest.raises(Exception) as info:
        read_image(bomb)
    assert "bomb.png" in str(info.value) and info.type.__name__ == "CnnkitError"


def test_decompression_bomb_in_detect_and_train(cli, tmp_path):
    from cnnkit.core.data.images import write_image
    from tests.test_export import untrained

    detector = untrained("yolov3-tiny", tmp_path / "det.pt", 64, ["a", "b"])  # detect refuses a classifier
    bomb = _png_header(tmp_path / "bomb.png", 100_000, 100_000)
    one_clear_line(cli("detect", detector, bomb), "bomb.png", "above the limit")
    for split in ("train", "val"):
        for cls in ("a", "b"):
            write_image(tmp_path / "ds" / split / cls / "ok.png", np.zeros((32, 32, 3), np.uint8))
    _png_header(tmp_path / "ds" / "train" / "a" / "bomb.png", 100_000, 100_000)
    r = cli("train", "resnet18", "--data", "ds", "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--no-track")
    assert r.code == 0 and "1 image(s) skipped: bomb.png: image is 100000x100000 pixels, above the limit" in r.stderr


def test_pixel_limit_can_be_lowered_and_raised(cli, tmp_path):
    from cnnkit.core.data.images import write_image

    image = write_image(tmp_path / "small.png", np.zeros((20, 30, 3), np.uint8))
    one_clear_line(cli("--max-image-pixels", "100", "stylize", image, image, "--no-track"),
                   "small.png", "30x20 pixels", "limit of 100")
    big = _png_header(tmp_path / "big.png", 10_000, 10_000)  # 100 M pixels: refused by default
    one_clear_line(cli("stylize", big, big, "--no-track"), "big.png", "10000x10000")
    r = cli("--max-image-pixels", str(200_000_000), "stylize", big, big, "--no-track")
    one_clear_line(r, "big.png", "cannot read image")  # the header passes now; its short payload does not


# ---------------------------------------------------------------- 7. gallery commands on other files
def _sqlite_file(path: Path) -> bytes:
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE notes (text TEXT)")
        c.execute("INSERT INTO notes VALUES ('keep me')")
    return path.read_bytes()


@pytest.mark.parametrize("args", [["gallery", "list"], ["gallery", "remove", "ann"], ["gallery", "export"]])
def test_gallery_commands_refuse_a_database_that_is_not_a_gallery(cli, tmp_path, args):
    before = _sqlite_file(tmp_path / "notes.db")
    one_clear_line(cli(*args, "--gallery", "notes.db"), "notes.db", "not a cnnkit gallery")
    assert (tmp_path / "notes.db").read_bytes() == before
    with sqlite3.connect(tmp_path / "notes.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_gallery_list_opens_read_only(cli, tmp_path):
    from cnnkit.plugins.siamese.backends import ModelInfo
    from cnnkit.plugins.siamese.gallery import Gallery

    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ann", np.ones((1, 4)), ["a.png"], ModelInfo("f" * 64, "siamese-small", "x.pt", "l2", 4))
    r = cli("gallery", "list", "--gallery", "g.db", "--json")
    assert r.code == 0 and json.loads(r.stdout)["people"][0]["name"] == "ann"


# ---------------------------------------------------------------- 8. smaller ones
def test_gallery_lock_contention_retries_then_one_line(tmp_path):
    from cnnkit.plugins.siamese.backends import ModelInfo
    from cnnkit.plugins.siamese.gallery import Gallery

    with Gallery(tmp_path / "g.db") as g:
        g.enroll("ann", np.ones((1, 4)), ["a.png"], ModelInfo("f" * 64, "siamese-small", "x.pt", "l2", 4))
    holder = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process is mid-enrollment
    try:
        r = _cnnkit(tmp_path, "gallery", "remove", "ann", "--gallery", "g.db", timeout=120,
                    CNNKIT_GALLERY_TIMEOUT="0.3")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_clear_line(r, "g.db is locked by another cnnkit process", "gave up after 4 tries")
    assert r.stderr.count("is busy") == 3
    with Gallery(tmp_path / "g.db", create=False, readonly=True) as g:
        assert [p["name"] for p in g.people()] == ["ann"]


def test_checkpoint_errors_never_suggest_weights_only_false(cli, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    for args in (["eval", "evil.pt"], [*NO_TRACK, "--weights", "evil.pt"], [*NO_TRACK, "--resume", "evil.pt"]):
        r = cli(*args)
        line = one_clear_line(r, "evil.pt", "safe load refuses")
        assert "weights_only" not in r.stderr and "should-never-run" not in r.stdout + r.stderr, line


def test_models_lists_at_once_and_counts_on_request(cli, monkeypatch):
    from cnnkit.core.models import summary

    built = []
    monkeypatch.setattr(summary, "count_params", lambda spec, num_classes=None: built.append(spec.name) or 7)
    r = cli("models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert r.code == 0 and not built and rows["resnet18"]["params"] is None
    assert rows["resnet18"]["paper_params"]
    r = cli("models", "--task", "classify", "--count", "--json")
    assert r.code == 0 and "resnet18" in built
    counted = len(built)
    r = cli("models", "--json")  # the cache: no model built again
    assert len(built) == counted and {m["name"]: m for m in json.loads(r.stdout)}["resnet18"]["params"] == 7


# ================================================================ issue 22: reliability, round two
def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its loader workers)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- 22.1 a signal to the whole process group
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the worker processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_with_loader_workers_stops_like_one_to_the_main_process(tmp_path, sig):
    """What `timeout`, Slurm, systemd and Ctrl-C do: every process of the group gets the signal, the
    loader workers included; they leave it to the main process, which saves and ends the run KILLED."""
    args = ["train", "resnet18", "--data", "synthetic:textures?n=32&size=32", "--img-size", "32",
            "--batch-size", "4", "--epochs", "500", "--workers", "2", "--out", "r"]
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *args], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: any(s == "RUNNING" for _, s in _runs(tmp_path)) and len(_children(proc.pid)) >= 2, proc)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    line = one_clear_line(Result(proc.returncode, "", err), signal.Signals(sig).name, "--resume r/weights/last.pt",
                          code=128 + sig, prefix="stopped: ")
    assert "saved r/weights/last.pt" in line and "DataLoader" not in err
    [(run_id, status)] = _runs(tmp_path)
    assert status == "KILLED"
    ck = torch.load(tmp_path / "r/weights/last.pt", weights_only=True)
    assert ck["interrupted"]["signal"] == signal.Signals(sig).name and ck["mlflow_run_id"] == run_id


# ---------------------------------------------------------------- 22.2, 22.3 COCO json of the wrong shape
def _coco(tmp_path: Path, edit) -> Path:
    from cnnkit.core.data.images import write_image

    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "images" / name, np.zeros((32, 32, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 32},
                       {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]},
                            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [2, 2, 9, 9]}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    edit(data)
    (tmp_path / "train.json").write_text(json.dumps(data))
    return tmp_path / "train.json"


def _set(path: str, value):
    def edit(data):
        *keys, last = path.split(".")
        target = data
        for key in keys:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value
    return edit


@pytest.mark.parametrize("edit, needles", [
    (_set("categories.1.id", "2"), ("category 1: 'id' must be int, got '2'",)),
    (_set("categories.1.id", [2]), ("category 1: 'id' must be int, got [2]",)),
    (_set("categories.0.id", None), ("category 0: 'id' must be int, got None",)),
    (_set("annotations.1.category_id", "2"), ("annotation 1 (id 2): 'category_id' must be int",)),
    (_set("images.0.id", [1]), ("image 0: 'id' must be int or str, got [1]",)),
    (_set("annotations", 5), ("'annotations' must be a list, got int",)),
    (_set("categories", {"id": 1, "name": "cat"}), ("'categories' must be a list, got dict",)),
    (_set("categories.1", "dog"), ("category 1: not an object (str)",)),
    (_set("images.1.id", 1), ("image 1 has the id 1 of image 0",)),  # 22.3: b.jpg would get a.jpg's boxes
    (_set("categories.1.id", 1), ("category 1 has the id 1 of category 0",)),  # 22.3: a phantom class
])
def test_coco_json_of_the_wrong_types_or_with_duplicate_ids_is_one_line_naming_file_and_index(cli, tmp_path, edit,
                                                                                              needles):
    path = _coco(tmp_path, edit)
    one_clear_line(cli("data", "check", "--data", path), str(path), *needles)
    one_clear_line(cli("train", "yolov1-fast", "--data", path, "--no-track",
                       "--epochs", "1"), str(path), *needles)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("*.cache*"))


# ---------------------------------------------------------------- 22.4 names and files that are not UTF-8
def test_yolo_set_with_file_names_that_are_not_utf8_is_scanned_cached_and_read(cli, tmp_path):
    from cnnkit.core.data import open_dataset
    from cnnkit.core.data.images import write_image

    for split in ("train", "val"):
        for i, name in enumerate((b"ok", b"caf\xe9")):  # Latin-1 bytes, as an old camera or zip writes them
            folder = tmp_path / "ds" / "images" / split
            write_image(os.fsdecode(bytes(folder) + b"/" + name + b".png"), np.full((32, 32, 3), 40 * i, np.uint8))
            labels = tmp_path / "ds" / "labels" / split
            labels.mkdir(parents=True, exist_ok=True)
            Path(os.fsdecode(bytes(labels) + b"/" + name + b".txt")).write_text(f"{i} 0.5 0.5 0.25 0.5\n")
    (tmp_path / "ds" / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    for cache in ("written", "hit"):
        r = cli("data", "check", "--data", "ds/data.yaml")
        assert r.code == 0 and "train: 2 images, 2 boxes, 0 without objects" in r.stdout, r.stdout + r.stderr
        assert f"cache {cache}" in r.stdout
    ds = open_dataset("ds/data.yaml", "train")
    sample = ds[[Path(p).name for p in ds.paths()].index(os.fsdecode(b"caf\xe9.png"))]
    assert sample.image.mean() == 40 and sample.labels.tolist() == [1]


def test_voc_id_list_that_is_not_utf8_names_its_files(cli, tmp_path):
    root = tmp_path / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(b"00\xff01\n")
    one_clear_line(cli("data", "check", "--data", root), "VOC2007/Annotations/00", "01.xml", "no such annotation file")


def test_a_binary_config_file_is_one_line(cli, tmp_path):
    (tmp_path / "cfg.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    one_clear_line(cli("train", "resnet18", "--config", "cfg.yaml"), "cfg.yaml: unreadable config", "not UTF-8")


# ---------------------------------------------------------------- 22.5 truncated images and bombs in every layout
def _truncated_jpeg(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the header intact, half the scan gone
    return path


def test_a_truncated_jpeg_in_a_yolo_set_is_found_by_the_scan_and_skipped_by_name(cli, tmp_path):
    from cnnkit.core.data.images import write_image

    for split in ("train", "val"):
        for i in range(3):
            write_image(tmp_path / "ds" / "images" / split / f"{i}.png", np.zeros((32, 32, 3), np.uint8))
            (tmp_path / "ds" / "labels" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "ds" / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    _truncated_jpeg(tmp_path / "ds" / "images" / "train" / "cut.jpg")
    (tmp_path / "ds" / "labels" / "train" / "cut.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (tmp_path / "ds" / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a]\n")
    for cache in ("written", "hit"):
        r = cli("data", "check", "--data", "ds/data.yaml")
        assert r.code == 0 and "train: 3 images" in r.stdout and f"cache {cache}" in r.stdout, r.stdout + r.stderr
        assert "1 image(s) skipped: cut.jpg: not a readable image (OSError: image file is truncated" in r.stdout


@pytest.mark.parametrize("hostile", ["truncated", "bomb"])
def test_an_image_folder_is_scanned_its_unreadable_images_skipped_by_name_and_training_goes_on(cli, tmp_path,
                                                                                            hostile):
    write_image_folder(tmp_path / "ds", ("a", "b"), 2, 32)
    if hostile == "truncated":
        _truncated_jpeg(tmp_path / "ds" / "train" / "a" / "bad.jpg")
        reason = "bad.jpg: not a readable image (OSError: image file is truncated"
    else:
        _png_header(tmp_path / "ds" / "train" / "a" / "bad.png", 100_000, 100_000)
        reason = "bad.png: image is 100000x100000 pixels, above the limit"
    for cache in ("written", "hit"):
        r = cli("data", "check", "--data", "ds")
        assert r.code == 0 and "train: 4 images" in r.stdout and f"1 image(s) skipped: {reason}" in r.stdout, \
            r.stdout + r.stderr
        assert f"cache {cache}" in r.stdout and "boxes" not in r.stdout
    r = cli("train", "resnet18", "--data", "ds", "--img-size", "32", "--batch-size", "2", "--epochs", "1",
            "--no-track", "--workers", "0")
    assert r.code == 0 and "data: train 4 images" in r.stderr and reason in r.stderr, r.stdout + r.stderr


# ---------------------------------------------------------------- 22.6 16-bit PNGs
def _png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG (greyscale for (H, W), RGB for (H, W, 3)) written byte by byte, as a scanner or a
    raw converter writes it."""
    h, w = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\0" + rows[i * stride:(i + 1) * stride] for i in range(h))
    color = 2 if pixels.ndim == 3 else 0
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("shape", [(24, 40), (24, 40, 3)])
def test_16_bit_pngs_are_scaled_to_8_bits(tmp_path, shape):
    import cv2

    from cnnkit.core.data.images import read_image

    pixels = np.random.default_rng(1).integers(0, 65536, shape).astype(np.uint16)
    path = _png16(tmp_path / "deep.png", pixels)
    image = read_image(path)
    reference = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # a second PNG reader: the 16-bit values
    reference = reference[..., ::-1] if reference.ndim == 3 else np.repeat(reference[..., None], 3, axis=2)
    assert image.shape == (24, 40, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - reference.astype(float) / 257).max() <= 1  # not clipped to white
    assert abs(image.mean() - 127.5) < 3


# ---------------------------------------------------------------- 22.7 detect: images of one name
def test_detect_gives_images_of_one_name_their_own_output_keeping_the_folders(cli, tmp_path):
    from cnnkit.core.data.images import read_image, write_image

    assert cli("train", "yolov3-tiny", "--data", "synthetic:shapes?n=4&size=64", "--img-size", "64",
               "--batch-size", "2", "--epochs", "1", "--no-track", "--workers", "0", "--out", "r").code == 0
    sources = {"a/photo.jpg": 30, "a/photo.png": 120, "b/photo.jpg": 220}
    for name, grey in sources.items():
        write_image(tmp_path / name, np.full((48, 64, 3), grey, np.uint8))
    r = cli("detect", "r/weights/last.pt", *sources, "--conf", "1", "--save-dir", "d")  # no box drawn: the copies
    assert r.code == 0, r.stderr
    written = {"a/photo.jpg.jpg": 30, "a/photo.png.jpg": 120, "b/photo.jpg": 220}
    assert sorted(str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*.jpg")) == sorted(written)
    for name, grey in written.items():
        assert abs(read_image(tmp_path / "d" / name).mean() - grey) < 3, name


# ---------------------------------------------------------------- 22.8 the Haar detector on paintings
@pytest.mark.parametrize("painting", ["starry_night.jpg", "the_scream.jpg"])  # the cascade sees a face in both
def test_haar_detector_refuses_paintings_as_the_cnn_does(cli, shared_data, painting):
    image = shared_data / "nst" / painting
    one_clear_line(cli("enroll", "vincent", image, "--detector", "haar"), painting, "no face found")
    r = cli("verify", image, "--detector", "haar", "--gallery", "g.db", "--json")  # a gallery to verify against
    assert r.code == 2 and "g.db" in r.stderr  # no gallery yet: refused before any detection
    photo = shared_data / "faces" / "known" / "obama" / "1.jpg"
    assert cli("enroll", "obama", photo, "--detector", "haar", "--gallery", "g.db").code == 0  # faces still pass
    r = cli("verify", image, photo, "--detector", "haar", "--gallery", "g.db", "--json")
    assert r.code == 1, r.stderr
    painted, real = json.loads(r.stdout)
    assert painted["face"] is None and painted["match"] is False and real["name"] == "obama"


# ---------------------------------------------------------------- 22.13 names too long for the file system
LONG = "x" * 300


@pytest.mark.parametrize("args, flag", [
    (["train", "resnet18", "--out", LONG], "--out"),
    (["detect", "any.pt", "x.png", "--save-dir", f"d/{LONG}"], "--save-dir d/"),
    (["stylize", "x.png", "y.png", "-o", f"{LONG}.png"], "-o"),
])
def test_an_output_name_too_long_for_the_file_system_is_one_line(cli, tmp_path, args, flag):
    one_clear_line(cli(*args), flag, "bytes, over the file system's limit of")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 22.14 disk full while saving a checkpoint
@pytest.mark.slow
def test_a_checkpoint_the_disk_cannot_take_is_one_line_and_the_old_one_survives(tmp_path):
    import resource

    assert _cnnkit(tmp_path, *TRAIN, "--epochs", "1", "--no-track", "--out", "r").code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "r/weights").iterdir()}

    def small_files() -> None:  # what a full disk does to the next write (`ulimit -f 1024`)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    p = subprocess.run([sys.executable, "-m", "cnnkit", *TRAIN, "--epochs", "2", "--no-track", "--workers", "1",
                        "--resume", "r/weights/last.pt"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                       text=True, timeout=300, preexec_fn=small_files)
    one_clear_line(Result(p.returncode, p.stdout, p.stderr), "cannot write checkpoint r/weights/last.pt",
                   "disk full or over a file size limit")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r/weights").iterdir()} == before  # no .tmp left either


# ---------------------------------------------------------------- 22.15, 22.16 plugins that collide or exit
def _with_site(tmp_path: Path, site: Path, *args: str, **env: str) -> Result:
    return _cnnkit(tmp_path, *args, timeout=120, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), **env)


INTRUDER = """from cnnkit.api import ModelSpec, hookimpl
@hookimpl
def register_models(register):
    register(ModelSpec(name="resnet18", task="classify", build="x:y", description="mine"))
    register(ModelSpec(name="intruder-net", task="classify", build="x:y", description="its own"))
"""


@pytest.mark.parametrize("name", ["aa_intruder", "zz_intruder"])  # registered before and after the built-ins
def test_a_plugin_registering_a_builtin_model_name_is_refused_that_registration_alone(tmp_path, name):
    site = _fake_dist(tmp_path / "site", name, INTRUDER)
    r = _with_site(tmp_path, site, "models", "--task", "classify", "--json")
    assert r.code == 0, r.stderr
    rows = {m["name"]: m["plugin"] for m in json.loads(r.stdout)}
    assert rows["resnet18"] == "classify" and rows["intruder-net"] == name
    assert len([m for m, plugin in rows.items() if plugin == "classify"]) >= 15  # none of the built-ins vanish
    assert r.stderr.splitlines() == [
        f"warning: plugin '{name}' registers model 'resnet18', which plugin 'classify' provides; {name}'s is refused"]


EXITS = "import sys\nsys.exit('no licence server')\n"
TAKES_TRAIN = """from cnnkit.api import hookimpl
@hookimpl
def register_commands(app):
    @app.command("train")
    def train() -> None:
        print("hijacked")

    @app.command("extra")
    def extra() -> None:
        print("extra from a plugin")
"""


def test_a_plugin_calling_sys_exit_at_import_is_caught_like_any_failure(tmp_path):
    site = _fake_dist(tmp_path / "site", "exits_plugin", EXITS)
    r = _with_site(tmp_path, site, "plugins", "--json")
    assert r.code == 0 and "classify" in {p["name"] for p in json.loads(r.stdout)}
    assert r.stderr.splitlines() == [
        "warning: plugin 'exits_plugin' failed to load (SystemExit: no licence server); it is skipped"]
    r = _with_site(tmp_path, site, "plugins", CNNKIT_STRICT_PLUGINS="1")
    line = one_clear_line(r, "exits_plugin", "no licence server", "fatal: CNNKIT_STRICT_PLUGINS=1")
    assert "skipped" not in line  # nit: fatal is not skipped


def test_a_plugin_registering_a_core_command_is_refused_with_a_warning(tmp_path):
    site = _fake_dist(tmp_path / "site", "takes_train", TAKES_TRAIN)
    r = _with_site(tmp_path, site, "train", "resnet18", "--lr", "-1", "--data", "nowhere")
    one_clear_line(r, "lr: -1.0")  # core's train ran (its validation), not the plugin's
    assert "hijacked" not in r.stdout and r.stderr.splitlines()[0] == (
        "warning: plugin 'takes_train' registers the command 'train', which cnnkit provides; takes_train's is refused")
    r = _with_site(tmp_path, site, "extra")
    assert r.code == 0 and r.stdout == "extra from a plugin\n"  # its other commands stay


# ---------------------------------------------------------------- 22.17 caches stay inside the dataset
def test_a_data_yaml_pointing_outside_its_folder_gets_no_cache_written_there(cli, tmp_path):
    from cnnkit.core.data.images import write_image

    elsewhere = tmp_path / "elsewhere"  # a folder of images with no labels/ sibling: the anchor is its parent
    for split in ("train", "val"):
        write_image(elsewhere / split / "0.png", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "ds" / "cfg").mkdir(parents=True)
    (tmp_path / "ds" / "cfg" / "data.yaml").write_text(
        "path: ../../elsewhere/train\ntrain: .\nval: ../val\nnames: [a]\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = cli("data", "check", "--data", "ds/cfg/data.yaml")
    assert r.code == 0 and "cache not written (" in r.stdout and "is outside the dataset's folders" in r.stdout, \
        r.stdout + r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------- 22.19 `cnnkit runs` on stores it cannot read
@pytest.mark.parametrize("uri, needles", [
    ("sqlite:///notes.db", ("sqlite:///notes.db: not an MLflow database (its tables: notes); left untouched",)),
    ("sqlite:///text.db", ("sqlite:///text.db: not an MLflow database (file is not a database)",)),
    ("sqlite:///notes.db/x.db", ("notes.db is a file, not a folder",)),
    ("foo://bar", ("MLflow tracking at foo://bar failed", "unsupported URI")),
    ("http://127.0.0.1:1", ("MLflow tracking at http://127.0.0.1:1 failed: Connection refused",)),
])
def test_runs_on_a_store_it_cannot_read_is_one_line_and_touches_nothing(tmp_path, uri, needles):
    _sqlite_file(tmp_path / "notes.db")
    (tmp_path / "text.db").write_text("some text\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    r = _cnnkit(tmp_path, "runs", "--tracking-uri", uri, timeout=60)  # an unreachable server: seconds, not minutes
    line = one_clear_line(r, *needles)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    if "failed:" in line and len(line.split("failed: ", 1)[1]) > 200:  # a long reason is cut at a word, and says so
        assert line.endswith(" ..."), line


def test_training_refuses_a_store_that_is_another_database(tmp_path):
    before = _sqlite_file(tmp_path / "notes.db")
    r = _cnnkit(tmp_path, *NO_TRACK[:-1], "--tracking-uri", "sqlite:///notes.db", "--out", "r")
    one_clear_line(r, "not an MLflow database")
    assert (tmp_path / "notes.db").read_bytes() == before


@pytest.mark.slow
def test_runs_creates_no_store_and_mlflow_says_nothing_on_stderr(tmp_path):
    r = _cnnkit(tmp_path, "runs")
    assert r.code == 0 and "no runs yet" in r.stdout and r.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nit: no mlflow.db, no lock file
    r = _cnnkit(tmp_path, *TRAIN, "--epochs", "1", "--workers", "0", "--out", "r")
    assert r.code == 0 and "INFO" not in r.stderr, r.stderr  # "Creating initial ..."
    assert "mlflow" not in r.stderr.lower() and "warning" not in r.stderr.lower(), r.stderr  # "Add type hints ..."


def test_damaged_exif_gives_no_pillow_warning(tmp_path):
    from PIL import Image

    ifd = (b"II*\x00" + pack("<I", 8) + pack("<H", 2) + pack("<HHII", 0x0112, 3, 1, 6)
           + pack("<HHII", 0x010F, 2, 100, 1000) + pack("<I", 0))  # Make: 100 bytes at an offset past the end
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "cam.jpg", exif=b"Exif\x00\x00" + ifd)
    code = ("from cnnkit.core.data.images import image_size, read_image\n"
            "print(image_size('cam.jpg', decode=True), read_image('cam.jpg').shape)")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout == "(8, 12) (12, 8, 3)\n" and p.stderr == "", p.stderr  # rotated, quiet


# ---------------------------------------------------------------- 22.20 values out of range, named
TEXTURES = "synthetic:textures?n=8&size=32"


@pytest.mark.parametrize("args, needles", [
    ([*NO_TRACK, "--seed", str(10**23)], ("seed: 100000000000000000000000 (from the command line)", "in [0, 2**32)")),
    (["train", "resnet18", "--data", "synthetic:textures?n=abc", "--no-track"],
     ("n=abc", "a whole number, at least 1")),
    (["train", "resnet18", "--data", "synthetic:textures?n=-1", "--no-track"], ("n=-1", "at least 1")),
    (["train", "resnet18", "--data", "synthetic:textures?size=0", "--no-track"], ("size=0", "at least 8")),
    (["train", "resnet18", "--data", "synthetic:textures?seed=-1", "--no-track"], ("seed=-1", "at least 0")),
    (["train", "yolov1-fast", "--data", "synthetic:shapes?n=4&max_objects=0", "--no-track"],
     ("max_objects=0", "at least 1")),
    (["train", "siamese-small", "--data", "synthetic:glyphs?ids=1", "--no-track"], ("ids=1", "at least 2")),
    (["train", "resnet18", "--config", "options.yaml", "--data", TEXTURES, "--no-track"],
     ("options: 5 (from config file options.yaml)", "a mapping")),
    (["detect", "any.pt", "x.png", "--img-size", "-64"], ("img_size: -64 (from --img-size)", "at least 8")),
    (["stylize", "x.png", "y.png", "--lr", "-5"], ("lr: -5.0 (from --lr)", "0 or more")),
    (["summary", "resnet18", "--num-classes", "-1"], ("--num-classes -1", "at least 2")),
    (["summary", "resnet18", "--num-classes", "1"], ("--num-classes 1", "a classify model needs at least 2")),
])
def test_values_out_of_range_are_one_line_naming_the_value(cli, tmp_path, args, needles):
    (tmp_path / "options.yaml").write_text("options: 5\n")
    one_clear_line(cli(*args), *needles)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 22.21 --resume of a copied checkpoint
@pytest.mark.slow
def test_resume_of_a_copied_checkpoint_continues_beside_it_and_leaves_the_original_alone(tmp_path):
    import shutil

    assert _cnnkit(tmp_path, *NO_TRACK, "--workers", "0", "--out", "r").code == 0
    shutil.copytree(tmp_path / "r", tmp_path / "copy")
    original = {p.name: p.read_bytes() for p in (tmp_path / "r/weights").iterdir()}
    r = _cnnkit(tmp_path, *TRAIN, "--epochs", "2", "--no-track", "--workers", "0", "--resume", "copy/weights/last.pt")
    assert r.code == 0 and "last: copy/weights/last.pt" in r.stdout, r.stdout + r.stderr
    assert torch.load(tmp_path / "copy/weights/last.pt", weights_only=True)["epoch"] == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "r/weights").iterdir()} == original

    (tmp_path / "elsewhere").mkdir()  # the same run resumed from another working directory
    r = _cnnkit(tmp_path / "elsewhere", *TRAIN, "--epochs", "3", "--no-track", "--workers", "0",
                "--resume", "../copy/weights/last.pt")
    assert r.code == 0 and list((tmp_path / "elsewhere").iterdir()) == [], r.stderr
    assert torch.load(tmp_path / "copy/weights/last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_gallery_timeout_that_is_not_a_positive_number_is_one_line(tmp_path, value):
    r = _cnnkit(tmp_path, "gallery", "list", "--gallery", "g.db", timeout=60, CNNKIT_GALLERY_TIMEOUT=value)
    one_clear_line(r, f"CNNKIT_GALLERY_TIMEOUT={value}", "a positive number of seconds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", ["identities", "photos"])
def test_identity_and_photo_folders_skip_a_truncated_image_by_name(cli, tmp_path, layout):
    if layout == "identities":
        root = write_image_folder(tmp_path, ("ann", "bob", "cy", "dee", "eve"), 2, 32, splits=("people",)) / "people"
        bad = _truncated_jpeg(root / "ann" / "bad.jpg")
    else:
        root = write_image_folder(tmp_path, ("photos",), 12, 32, splits=("",)) / "photos"
        bad = _truncated_jpeg(root / "0bad.jpg")  # sorted first: a training photo
    r = cli("data", "check", "--data", root)
    assert r.code == 0 and f"1 image(s) skipped: {bad.name}: not a readable image (OSError: image file is truncated" \
        in r.stdout, r.stdout + r.stderr


def test_atomic_writes_leave_the_permissions_of_a_plain_write(tmp_path):
    """An exported model or checkpoint is readable by others under umask 022 (mkstemp's 0600 is not
    what a user expects), and a file that is replaced keeps its own mode."""
    from cnnkit.core.base.atomic import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"new")
        assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o644
        (tmp_path / "model.onnx").chmod(0o640)
        with atomic_path(tmp_path / "model.onnx") as tmp:
            tmp.write_bytes(b"newer")
        assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o640
        assert (tmp_path / "model.onnx").read_bytes() == b"newer"
    finally:
        os.umask(old)
