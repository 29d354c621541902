"""Issue 30, reliability round three: joint-training splits, WordTree files, MLflow servers that
refuse or never answer, registry names, signals during video, stream URLs, and two wrong messages.
Each case: its exit code, one line without a traceback, and nothing already written lost. Signals
and servers run for real: `cnnkit` as a subprocess, sockets and MLflow's own server on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnkit.core.data.detection import write_yolo
from cnnkit.plugins.yolo.synthetic import TREE, Figures
from cnnkit.plugins.yolo.wordtree import WordTree
from tests.conftest import Result, one_clear_line, run_cli, write_image_folder
from tests.faults import FileServer, MlflowServer, Silent
from tests.test_export import SHAPES, untrained
from tests.test_reliability import TRAIN, _env
from tests.test_video import decoded_frames, make_video

SMALL = [*TRAIN, "--workers", "0"]


def _popen(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen, Path, Path]:
    """`cnnkit ARGS` in ``tmp_path`` with stdout and stderr going to files (read while it runs)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:  # the child has its own copies
        proc = subprocess.Popen([sys.executable, "-m", "cnnkit", *args], cwd=tmp_path, env=_env(tmp_path, **env),
                                stdout=stdout, stderr=stderr)
    return proc, out, err


def _until(condition, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} first"
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.1)


def _exit(proc: subprocess.Popen, err: Path, since: float, timeout: float, what: str) -> tuple[Result, float]:
    """The exit code, stderr and the seconds from ``since`` to the exit (killed past ``timeout``)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {timeout} s after {what}: {err.read_text()}")
    return Result(proc.returncode, "", err.read_text()), time.monotonic() - since


def _stopped(proc: subprocess.Popen, err: Path, signum: int, timeout: float = 30) -> tuple[Result, float]:
    """Send ``signum``; how the process ended and the seconds it took."""
    proc.send_signal(signum)
    return _exit(proc, err, time.monotonic(), timeout, signal.Signals(signum).name)


def _ended(proc: subprocess.Popen, err: Path, marker: str, timeout: float = 120) -> tuple[Result, float]:
    """How the process ended and the seconds from ``marker`` on stderr (set-up done) to the exit:
    process start-up is left out, which a loaded machine stretches."""
    _until(lambda: marker in err.read_text(), proc)
    return _exit(proc, err, time.monotonic(), timeout, repr(marker))


# ---------------------------------------------------------------- 5. --cls-data kept the overlap refusal off
@pytest.fixture
def joint_data(tmp_path) -> tuple[Path, Path, Path]:
    """A YOLO set (8 images, one coarse class), a classification folder of tree nodes, the tree."""
    data = write_yolo({"train": Figures("train", n=8, size=64, labels="coarse")}, tmp_path / "det")
    cls = write_image_folder(tmp_path / "cls", ("ring", "cross"), per_class=2, size=32, splits=("train",))
    (tmp_path / "T").write_text(TREE)
    return data, cls, tmp_path / "T"


def _joint(data: Path, cls: Path, tree: Path, *extra: str) -> Result:
    return run_cli("train", "yolov2-tiny", "--data", data, "--tree", tree, "--cls-data", cls, "--img-size", "64",
                   "--epochs", "1", "--batch-size", "4", "--no-track", "--out", "joint", *extra)


def test_joint_training_refuses_validation_on_its_training_images(tmp_path, joint_data):
    """val: the detection training images (as in the report), or files that are the classification images."""
    data, cls, tree = joint_data
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "val": cfg["train"]}))
    one_clear_line(_joint(data, cls, tree), "8 of the 8 validation images are training images")
    data.write_text(yaml.safe_dump(cfg))  # no val split of its own: a YOLO set whose images are the crops
    for i, crop in enumerate(sorted((cls / "train" / "ring").glob("*.png"))):
        (tmp_path / "valset" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "valset" / "labels").mkdir(parents=True, exist_ok=True)
        (tmp_path / "valset" / "images" / f"{i}.png").symlink_to(crop)
        (tmp_path / "valset" / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "valset" / "data.yaml").write_text("path: .\ntrain: images\nnames: [shape]\n")
    one_clear_line(_joint(data, cls, tree, "--val", tmp_path / "valset" / "data.yaml"),
                   "2 of the 2 validation images are training images")
    assert not (tmp_path / "joint" / "weights").exists()


def test_joint_training_on_separate_splits_names_both_sources(tmp_path, joint_data):
    data, cls, tree = joint_data
    r = _joint(data, cls, tree, "--val-fraction", "0.25")
    assert r.code == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("data: "))
    assert f"train 10 images (YOLO {data} train: images/train minus the --val-fraction 0.25, seed 0 plus " \
           f"--cls-data ImageFolder {cls / 'train'})" in line


# ---------------------------------------------------------------- 6. WordTree names used twice
@pytest.mark.parametrize("text, line, first, name", [  # trees the data's class 'shape' fits: they trained before
    ("shape -1\nring 0\ncross 0\nring 0\n", 4, 2, "ring"),  # siblings
    ("shape -1\nthing -1\nshape 1\n", 3, 1, "shape"),  # a root and a child
    ("shape -1\n\nring 0\n\ncross 0\nring 0\n", 6, 3, "ring"),  # the file's line numbers, blank lines counted
])
def test_a_tree_naming_a_node_twice_is_refused_with_both_lines(tmp_path, text, line, first, name):
    (tmp_path / "T").write_text(text)
    r = run_cli("train", "yolov2-tiny", "--tree", tmp_path / "T", "--data",
                "synthetic:figures?n=4&size=64&labels=coarse", "--img-size", "64", "--epochs", "1", "--no-track",
                "--out", "run")
    one_clear_line(r, f"T:{line}: node '{name}' is already named on line {first}")
    assert not (tmp_path / "run" / "weights").exists()


def test_a_display_name_shared_by_two_nodes_is_refused_where_a_class_uses_it(tmp_path):
    """WordNet's names repeat ('crane' the bird and the machine): the tree reads, a class naming it is refused."""
    (tmp_path / "T").write_text("n1 -1\nn2 -1\nn3 0\nn4 1\n")
    (tmp_path / "T.names").write_text("bird\nmachine\ncrane\ncrane\n")
    tree = WordTree.read(tmp_path / "T")
    assert tree.index("n4") == 3 and tree.index("bird") == 0
    from cnnkit.core.base.errors import CnnkitError

    with pytest.raises(CnnkitError, match=r"class 'crane' is the display name of several nodes \(n3, n4\)"):
        tree.index("crane")


# ---------------------------------------------------------------- 8, 9. tracking servers that never answer or refuse
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_run_whose_tracking_server_never_answers(tmp_path, signum, code):
    with Silent() as server:
        proc, _, err = _popen(tmp_path, *SMALL, "--epochs", "1", "--tracking-uri", server.url, "--out", "r")
        _until(lambda: server.held, proc)  # connected: the first MLflow call is in flight
        time.sleep(1)
        r, seconds = _stopped(proc, err, signum)
    line = one_clear_line(r, signal.Signals(signum).name, f"MLflow at {server.url} had not answered",
                          code=code, prefix="stopped: ")
    assert seconds < 30, (seconds, line)


def test_a_silent_tracking_server_fails_the_run_after_the_users_timeout(tmp_path):
    """MLFLOW_HTTP_REQUEST_TIMEOUT set by the user wins over cnnkit's default (10 s)."""
    with Silent() as server:
        proc, _, err = _popen(tmp_path, *SMALL, "--epochs", "1", "--tracking-uri", server.url, "--out", "r",
                              MLFLOW_HTTP_REQUEST_TIMEOUT="2")
        r, seconds = _ended(proc, err, "data: train")
    one_clear_line(r, f"MLflow tracking at {server.url} failed: no answer in 2 s", "--no-track")
    assert seconds < 60, seconds  # 3 tries of 2 s and their backoff (MLflow's own: 8 tries of 120 s)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_tracking_server_that_goes_silent_mid_run_keeps_last_pt(tmp_path, signum, code):
    """MLflow's own server, then silence: the epoch's metrics never get an answer. The signal ends the run
    within seconds with last.pt saved at the step the signal found, ready for --resume."""
    with MlflowServer(tmp_path / "server") as server:
        proc, _, err = _popen(tmp_path, *SMALL, "--epochs", "500", "--tracking-uri", server.url, "--out", "r")
        _until(lambda: (tmp_path / "r/weights/best.pt").exists(), proc)  # epoch 1 logged and saved
        server.cut()
        _until(lambda: server.unanswered > 0, proc, timeout=60)
        r, seconds = _stopped(proc, err, signum)
    name = signal.Signals(signum).name
    line = one_clear_line(r, name, "saved r/weights/last.pt", "--resume r/weights/last.pt", code=code,
                          prefix="stopped: ")
    assert seconds < 30, (seconds, line)
    ck = torch.load(tmp_path / "r/weights/last.pt", weights_only=True)
    assert ck["interrupted"]["signal"] == name and ck["epoch"] >= 0


@pytest.mark.parametrize("uri", ["http://127.0.0.1:1", "https://127.0.0.1:1"])
def test_a_tracking_server_nobody_listens_at_fails_within_seconds(tmp_path, uri):
    proc, _, err = _popen(tmp_path, *SMALL, "--epochs", "1", "--tracking-uri", uri, "--out", "r")
    r, seconds = _ended(proc, err, "data: train")
    one_clear_line(r, f"MLflow tracking at {uri} failed: Connection refused (use --no-track")
    assert seconds < 30, seconds  # MLflow's own retries took 254 s


# ---------------------------------------------------------------- 10. registry names checked before training
@pytest.mark.parametrize("name, reason", [("a/b", "cannot contain '/' or ':'"), ("models:/x", "cannot contain"),
                                          ("..", "would resolve to"), (" ", "Missing value")])
def test_a_registry_name_mlflow_refuses_fails_before_training(tmp_path, name, reason):
    r = run_cli(*SMALL, "--epochs", "1", "--register", name, "--out", "r")
    one_clear_line(r, f"register: {name!r} (from the command line) is not a name MLflow's model registry takes",
                   reason)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"register": name}))
    one_clear_line(run_cli(*SMALL, "--epochs", "1", "--config", tmp_path / "c.yaml", "--out", "r"),
                   f"register: {name!r} (from config file {tmp_path / 'c.yaml'})")
    assert not (tmp_path / "r").exists() and not (tmp_path / "mlflow.db").exists()  # no training, no run


# ---------------------------------------------------------------- 11. signals during a video close the output
@pytest.fixture
def clip(tmp_path) -> Path:
    return make_video(tmp_path / "clip.avi", frames=1500, size=(48, 64))


@pytest.mark.parametrize("command", ["detect", "stylize"])
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_a_video_closes_the_output_with_its_frames(tmp_path, clip, command, signum, code):
    if command == "detect":
        args, output = ["detect", untrained("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES), clip, "--conf", "0.5",
                        "--save-dir", "out"], tmp_path / "out" / "clip.mp4"
    else:
        args, output = ["stylize", clip, "--model", untrained("fast-style", tmp_path / "f.pt", 32), "-o",
                        "styled.mp4"], tmp_path / "styled.mp4"
    proc, out, err = _popen(tmp_path, *map(str, args))
    _until(lambda: out.read_text().count("\n") >= 5, proc)
    r, seconds = _stopped(proc, err, signum)
    line = one_clear_line(r, signal.Signals(signum).name, "clip.avi; ",
                          f"frame(s) kept in {output.relative_to(tmp_path)}", code=code, prefix="stopped: ")
    printed = [json.loads(x) for x in out.read_text().splitlines()]
    assert seconds < 30 and 5 <= len(printed) < 1500, (seconds, line)
    assert len(decoded_frames(output)) == len(printed) == int(line.split("; ")[1].split()[0])


# ---------------------------------------------------------------- 23, 24. a traceback and a wrong flag
@pytest.mark.parametrize("data", ["synthetic:shapes?n=4&size=64", "yolo"])
def test_anchors_with_an_unknown_split_is_one_line(tmp_path, data):
    if data == "yolo":
        data = str(write_yolo({"train": Figures("train", n=4, size=64)}, tmp_path / "det"))
    one_clear_line(run_cli("anchors", "--data", data, "--split", "foo"), "--split foo: choose train, val or test")


def test_fast_style_offline_names_its_own_weights_option(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache; the mirror is a closed port
    r = run_cli("train", "fast-style", "--epochs", "1", "--img-size", "32", "--no-track", "--out", "fs")
    line = one_clear_line(r, "cannot download", "or pass --vgg-weights PATH", "or --vgg-weights random")
    assert "--weights PATH" not in line.replace("--vgg-weights", "")


# ---------------------------------------------------------------- 27, 28. stream URLs
@pytest.mark.parametrize("query", ["", "?session=1"])
def test_stylize_reads_a_stream_url_as_given(tmp_path, query):
    (tmp_path / "served").mkdir()
    make_video(tmp_path / "served" / "clip.avi", frames=6)
    model = untrained("fast-style", tmp_path / "f.pt", 32)
    with FileServer(tmp_path / "served") as server:
        r = run_cli("stylize", f"{server.url}/clip.avi{query}", "--model", model, "-o", tmp_path / "styled.mp4")
        assert r.code == 0, r.stderr
        assert [json.loads(x)["frame"] for x in r.stdout.splitlines() if x.startswith("{")] == list(range(6))
        r = run_cli("stylize", f"{server.url}/clip.avi{query}", "--model", model)  # the default output: the URL's stem
        assert r.code == 0, r.stderr
    assert len(decoded_frames(tmp_path / "styled.mp4")) == len(decoded_frames(tmp_path / "clip_stylized.mp4")) == 6


@pytest.mark.parametrize("scheme, command", [("http", "detect"), ("rtsp", "detect"), ("http", "stylize")])
def test_a_stream_that_never_answers_fails_within_the_open_timeout(tmp_path, scheme, command):
    model = untrained(*(("yolov3-tiny", tmp_path / "y.pt", 64, SHAPES) if command == "detect"
                        else ("fast-style", tmp_path / "f.pt", 32)))
    with Silent(scheme) as server:
        url = f"{server.url}/live"
        args = [model, url, "--save-dir", "out"] if command == "detect" else [url, "--model", model, "-o", "o.mp4"]
        started = time.monotonic()
        r = run_cli(command, *args)
        seconds = time.monotonic() - started
    one_clear_line(r, f"{url}: the stream did not answer in 10 s")
    assert seconds < 60, seconds  # bounded (the message says by what: FFmpeg's own open timeout is 30 s)
