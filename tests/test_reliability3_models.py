"""Issue 30, the model rows: exported classifiers' probabilities (1), weights of another model (2),
non-finite weights (3), signals during export (12), a model given to the wrong command (13),
export's output place, size, opset and suffix (14-17), and click's own option checks (29).
Each refusal: exit 2, one `error:` line, no traceback, nothing already written lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from tests.conftest import one_clear_line, run_cli
from tests.test_export import photos, untrained
from tests.test_published import _darknet_file
from tests.test_reliability import _cnnkit, _start

CLASSES = ["circle", "square", "triangle"]


def _edit_checkpoint(path: Path, edit) -> Path:
    ck = torch.load(path, weights_only=True)
    edit(ck["model_state"])
    torch.save(ck, path)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """One tiny model of each task, its checkpoint and exports (made once for the module): a
    classifier whose probabilities are far from uniform, so a second softmax shows."""
    from cnnkit.model import export

    folder = tmp_path_factory.mktemp("models")
    cls = _edit_checkpoint(untrained("resnet18", folder / "cls.pt", 32, CLASSES),
                           lambda s: s["fc.weight"].mul_(40))
    found = {"cls.pt": cls, "emb.pt": untrained("siamese-small", folder / "emb.pt", 32),
             "sty.pt": untrained("fast-style", folder / "sty.pt", 32),
             "yolo.pt": untrained("yolov3-tiny", folder / "yolo.pt", 64, CLASSES)}
    for name in ("cls", "emb", "sty"):
        found[f"{name}.onnx"] = Path(export(found[f"{name}.pt"]).output)
    found["cls.torchscript"] = Path(export(cls, "torchscript").output)
    return found


def _top(*args: object) -> list[dict]:
    r = run_cli("classify", *args, "--json", "--top", "3")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))


# ---------------------------------------------------------------- 1. exported classifiers' probabilities
@pytest.mark.parametrize("exported", ["cls.onnx", "cls.torchscript"])
def test_an_exported_classifier_prints_the_checkpoints_probabilities(made, tmp_path, exported):
    """`classify` on the ONNX/TorchScript file prints the checkpoint's classes and probabilities,
    number by number, for photos of several sizes (a second softmax flattened them)."""
    images = [*photos(tmp_path, 2), *photos(tmp_path / "wide", 1, (30, 200)), *photos(tmp_path / "big", 1, (300, 260))]
    ours, theirs = _top(made["cls.pt"], *images), _top(made[exported], *images)
    assert max(t["prob"] for r in ours for t in r["top"]) > 0.9  # far from uniform: a second softmax would show
    for a, b in zip(ours, theirs, strict=True):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert np.allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-5), (a, b)


# ---------------------------------------------------------------- 2. weights of another model
@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory) -> Path:
    """torchvision's resnet34 key layout (ImageNet head): every resnet18 tensor is in it, with 96 more."""
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models

    load_plugins()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet34.pth"
    torch.save(models.get("resnet34").create(num_classes=1000).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def yolo_plus_file(tmp_path_factory) -> Path:
    """yolov3-tiny's tensors and two of a head it does not have."""
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models

    load_plugins()
    state = models.get("yolov3-tiny").create(num_classes=80).state_dict()
    state.update({"head2.weight": torch.zeros(3, 3), "head2.bias": torch.zeros(3)})
    path = tmp_path_factory.mktemp("weights") / "tiny_plus.pth"
    torch.save(state, path)
    return path


RESNET34_INTO_18 = ["resnet34.pth: weights do not fit resnet18: the file has 96 tensor(s) resnet18 has no place for "
                    "(another model's file?): layer1.2.conv1.weight, layer1.2.bn1.weight, layer1.2.bn1.bias and 93 "
                    "more (--allow-partial ignores them)"]


@pytest.mark.parametrize("command,weights,needles", [
    (["classify", "resnet18", "photo.png"], "resnet34_file", RESNET34_INTO_18),
    (["eval", "resnet18", "--data", "synthetic:textures?n=4&size=32"], "resnet34_file", RESNET34_INTO_18),
    (["train", "resnet18", "--data", "synthetic:textures?n=4&size=32", "--img-size", "32", "--epochs", "1",
      "--no-track", "--out", "run"], "resnet34_file", RESNET34_INTO_18),
    (["detect", "yolov3-tiny", "photo.png", "--img-size", "64"], "yolo_plus_file",
     ["tiny_plus.pth: weights do not fit yolov3-tiny: the file has 2 tensor(s) yolov3-tiny has no place for "
      "(another model's file?): head2.weight, head2.bias (--allow-partial ignores them)"]),
])
def test_weights_of_another_model_are_refused_naming_their_extra_tensors(request, tmp_path, command, weights, needles):
    photos(tmp_path, 1)[0].rename(tmp_path / "photo.png")
    r = run_cli(*command, "--weights", request.getfixturevalue(weights))
    one_clear_line(r, *needles)
    assert r.stdout == "" and not (tmp_path / "run").exists()  # refused at set-up: no epoch, no checkpoint


def test_allow_partial_loads_what_fits_and_says_what_it_left(resnet34_file, tmp_path):
    photo = photos(tmp_path, 1)[0]
    r = run_cli("classify", "resnet18", photo, "--weights", resnet34_file, "--allow-partial", "--json")
    assert r.code == 0, r.stderr
    assert "weights: 122/122 tensors from" in r.stderr and "and 93 more not used" in r.stderr
    one_clear_line(run_cli("classify", "--allow-partial", "cls.pt", photo), "as does --allow-partial")  # a checkpoint


# ---------------------------------------------------------------- 3. non-finite weights
def _nan_darknet(tmp_path: Path) -> list[object]:
    import shutil

    from tests.test_published import CFG_DIR

    cfg = shutil.copy(CFG_DIR / "yolov3-tiny.cfg", tmp_path / "tiny.cfg")
    path = _darknet_file(tmp_path / "tiny.weights", "yolov3-tiny")
    data = bytearray(path.read_bytes())
    data[20:20 + 4 * 16] = np.full(16, np.nan, np.float32).tobytes()  # the first conv's batch-norm biases
    path.write_bytes(bytes(data))
    return ["detect", cfg, "--weights", path, "--img-size", "160"]


def _nan_state_file(tmp_path: Path) -> list[object]:
    from cnnkit.core.base.registry import models

    state = models.get("resnet18").create(num_classes=1000).state_dict()
    state["layer2.0.bn1.running_var"][3] = float("inf")
    torch.save(state, tmp_path / "inf18.pth")
    return ["classify", "resnet18", "--weights", tmp_path / "inf18.pth"]


def _nan_checkpoint(made, tmp_path: Path) -> list[object]:
    import shutil

    ck = _edit_checkpoint(shutil.copy(made["cls.pt"], tmp_path / "nan.pt"),
                          lambda s: s["layer1.0.conv1.weight"].fill_(float("nan")))
    return ["classify", ck]


def _nan_onnx(made, tmp_path: Path) -> list[object]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(made["cls.onnx"]))
    init = next(t for t in graph.graph.initializer if len(t.dims) == 4)
    init.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(init), np.nan), init.name))
    onnx.save(graph, str(tmp_path / "nan.onnx"))
    return ["classify", tmp_path / "nan.onnx"]


def _inf_torchscript(made, tmp_path: Path) -> list[object]:
    files = {"cnnkit.json": ""}
    with warnings.catch_warnings():  # torch.jit's deprecation notices
        warnings.simplefilter("ignore", FutureWarning)
        script = torch.jit.load(str(made["cls.torchscript"]), _extra_files=files)
        with torch.no_grad():
            next(iter(script.parameters())).fill_(float("inf"))
        torch.jit.save(script, str(tmp_path / "inf.torchscript"), _extra_files=files)
    return ["classify", tmp_path / "inf.torchscript"]


@pytest.mark.parametrize("case,needles", [
    ("checkpoint", ["nan.pt: tensor layer1.0.conv1.weight holds NaN or inf (36864 of 36864 values)"]),
    ("state_file", ["inf18.pth: tensor layer2.0.bn1.running_var holds NaN or inf (1 of 128 values)"]),
    ("darknet", ["tiny.weights: tensor", "holds NaN or inf (16 of 16 values)"]),
    ("onnx", ["nan.onnx: tensor", "holds NaN or inf"]),
    ("torchscript", ["inf.torchscript: tensor", "holds NaN or inf"]),
])
def test_non_finite_weights_are_refused_naming_the_tensor(made, tmp_path, case, needles):
    from cnnkit.core.base.plugins import load_plugins

    load_plugins()
    command = {"checkpoint": lambda: _nan_checkpoint(made, tmp_path), "state_file": lambda: _nan_state_file(tmp_path),
               "darknet": lambda: _nan_darknet(tmp_path), "onnx": lambda: _nan_onnx(made, tmp_path),
               "torchscript": lambda: _inf_torchscript(made, tmp_path)}[case]()
    photo = photos(tmp_path, 1)[0]
    line = one_clear_line(run_cli(*command, photo, "--json"), *needles)
    assert line.endswith("refusing weights that cannot give finite outputs")


def test_json_output_has_no_bare_nan_even_when_finite_weights_overflow(made, tmp_path):
    """Finite weights whose logits overflow to inf: the probabilities are NaN, printed as null."""
    import shutil

    ck = _edit_checkpoint(shutil.copy(made["cls.pt"], tmp_path / "huge.pt"),
                          lambda s: s["fc.weight"].fill_(3e38))
    found = _top(ck, photos(tmp_path, 1)[0])  # fails on a bare NaN
    assert [t["prob"] for t in found[0]["top"]] == [None, None, None]


# ---------------------------------------------------------------- 12. signals during export
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_export_leaves_no_temporary_file_and_keeps_the_old_export(made, tmp_path, sig):
    import shutil

    ck = shutil.copy(made["cls.pt"], tmp_path / "cls.pt")
    (tmp_path / "cls.onnx").write_bytes(b"the previous export")
    proc = _start(tmp_path, "export", "cls.pt", "--img-size", "512", "--dynamic-batch")
    end = time.monotonic() + 240
    while not list(tmp_path.glob(".cls.onnx.*.tmp")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "no temporary file within 240 s"
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert Path(ck).is_file() and (tmp_path / "cls.onnx").read_bytes() == b"the previous export"
    assert not list(tmp_path.glob(".cls.onnx.*")), list(tmp_path.iterdir())
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and err.strip().splitlines()[-1] == (
            "stopped: export stopped by SIGTERM; cls.onnx was not written"), err
    else:
        assert proc.returncode == 130, err


# ---------------------------------------------------------------- 13. a model given to the wrong command
@pytest.mark.parametrize("source,needles", [
    ("cls.pt", ["resnet18 is a classifier (classify task), not a detector", "`cnnkit classify", "cls.pt IMAGE...`"]),
    ("cls.onnx", ["resnet18 is a classifier (classify task), not a detector", "`cnnkit classify"]),
    ("cls.torchscript", ["resnet18 is a classifier (classify task), not a detector", "`cnnkit classify"]),
    ("emb.pt", ["siamese-small is an embedder (embed task), not a detector", "`cnnkit enroll NAME IMAGE... --weights",
                "`cnnkit verify IMAGE... --weights"]),
    ("emb.onnx", ["siamese-small is an embedder (embed task), not a detector", "`cnnkit verify"]),
    ("sty.pt", ["fast-style is a stylizer (stylize task), not a detector", "`cnnkit stylize IMAGE --model"]),
    ("sty.onnx", ["fast-style is a stylizer (stylize task), not a detector", "`cnnkit stylize IMAGE --model"]),
])
@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_detect_names_the_task_of_a_model_that_is_no_detector_and_its_command(made, tmp_path, source, needles,
                                                                              as_json):
    r = run_cli("detect", made[source], *photos(tmp_path, 1), "--save-dir", "out", *as_json)
    one_clear_line(r, f"{made[source]}: ", *needles)
    assert r.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("source,needles", [
    ("yolo.pt", ["yolov3-tiny is a detector (detect task), not a classifier", "`cnnkit detect"]),
    ("yolov3-tiny", ["yolov3-tiny is a detector (detect task), not a classifier", "`cnnkit detect yolov3-tiny"]),
    ("sty.onnx", ["fast-style is a stylizer (stylize task), not a classifier", "`cnnkit stylize"]),
])
def test_classify_names_the_task_of_a_model_that_is_no_classifier(made, tmp_path, source, needles):
    """A registered model name is refused before its weights are fetched (offline here)."""
    r = run_cli("classify", made.get(source, source), *photos(tmp_path, 1))
    line = one_clear_line(r, *needles)
    assert "download" not in r.stderr and line


# ---------------------------------------------------------------- 14. export's output place
@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only even for root: a read-only bind mount of itself, else the immutable
    attribute (``chattr +i``), else skip; an unprivileged user gets the permission bits."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    def run(*args: str) -> bool:
        return subprocess.run(args, capture_output=True, timeout=30).returncode == 0

    if run("mount", "--bind", str(folder), str(folder)):
        try:
            if run("mount", "-o", "remount,bind,ro", str(folder), str(folder)):
                yield
                return
        finally:
            run("umount", str(folder))
    if run("chattr", "+i", str(folder)):
        try:
            yield
        finally:
            run("chattr", "-i", str(folder))
        return
    pytest.skip("root writes through permission bits, and neither a read-only bind mount nor chattr +i "
                "is possible here")


def _place(made, tmp_path: Path, case: str) -> tuple[list[object], list[str], contextlib.AbstractContextManager]:
    import shutil

    ckpt = shutil.copy(made["cls.pt"], tmp_path / "cls.pt")
    if case == "read-only folder":
        (tmp_path / "ro").mkdir()
        return [ckpt, "-o", "ro/cls.onnx"], ["-o ro/cls.onnx: cannot write in", "/ro ("], read_only(tmp_path / "ro")
    if case == "beside a read-only checkpoint":
        (tmp_path / "store").mkdir()
        ckpt = shutil.move(ckpt, tmp_path / "store" / "cls.pt")
        return [ckpt, "--json"], [f"output file {tmp_path}/store/cls.onnx: cannot write in",
                                  "; choose another place with -o"], \
            read_only(tmp_path / "store")
    if case == "parent is a file":
        (tmp_path / "notes.txt").write_text("kept")
        return [ckpt, "-o", "notes.txt/cls.onnx"], ["-o notes.txt/cls.onnx:", "notes.txt is a file, not a folder"], \
            contextlib.nullcontext()
    (tmp_path / "out.onnx").mkdir()
    (tmp_path / "out.onnx" / "keep").write_text("kept")
    return [ckpt, "-o", "out.onnx"], ["-o out.onnx: is a folder, not a file"], contextlib.nullcontext()


@pytest.mark.parametrize("case", ["read-only folder", "beside a read-only checkpoint", "parent is a file",
                                  "onto an existing folder"])
def test_export_checks_its_output_place_before_any_work(made, tmp_path, case):
    args, needles, guard = _place(made, tmp_path, case)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with guard:
        started = time.monotonic()
        one_clear_line(run_cli("export", *args), *needles)
        assert time.monotonic() - started < 30  # no export first
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, nothing lost


# ---------------------------------------------------------------- 15-17. export's size, opset, suffix
@pytest.mark.parametrize("size,needles", [
    ("13", ["--img-size 13: yolov3-tiny cannot take 13 x 13 inputs (", "Output size is too small"]),
    ("8", ["--img-size 8: yolov3-tiny cannot take 8 x 8 inputs ("]),
    ("1000000", ["img_size: 1000000 (from --img-size) must be at least 8 and at most 4096"]),
    ("7", ["img_size: 7 (from --img-size) must be at least 8 and at most 4096"]),
])
def test_export_refuses_a_size_the_network_cannot_take_or_over_the_limit(made, tmp_path, size, needles):
    one_clear_line(run_cli("export", made["yolo.pt"], "--img-size", size, "-o", "y.onnx"), *needles)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("opset", ["999", "24", "1"])
def test_export_checks_the_opset_first_and_prints_nothing_on_stdout(made, tmp_path, opset):
    """In a process of its own: torch's exporter prints its graph on file descriptor 1 from C++."""
    import shutil

    shutil.copy(made["cls.pt"], tmp_path / "cls.pt")
    r = _cnnkit(tmp_path, "export", "cls.pt", "--opset", opset)
    one_clear_line(r, f"--opset {opset}: this torch and onnx write opsets 7 to ")
    assert r.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["cls.pt"]


def test_an_export_through_the_fallback_exporter_prints_only_its_report(tmp_path):
    """yolov1-tiny's [connected] layer fails a TorchScript exporter pass (which printed the whole
    graph on stdout) before the torch.export-based exporter writes it: --json stays JSON."""
    untrained("yolov1-tiny", tmp_path / "y1.pt", 64, CLASSES)
    r = _cnnkit(tmp_path, "export", "y1.pt", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["output"] == "y1.onnx"


@pytest.mark.parametrize("args,needles", [
    (["-o", "x.torchscript"], ["-o x.torchscript: --format onnx writes *.onnx files", "use -o x.onnx"]),
    (["-o", "cls.txt"], ["-o cls.txt: --format onnx writes *.onnx files", "use -o cls.onnx"]),
    (["--format", "torchscript", "-o", "x.onnx"], ["-o x.onnx: --format torchscript writes *.torchscript files",
                                                   "use -o x.torchscript"]),
    (["-o", "model"], ["-o model: --format onnx writes *.onnx files", "use -o model.onnx"]),
])
def test_export_refuses_an_output_name_its_format_does_not_take(made, tmp_path, args, needles):
    (tmp_path / "cls.txt").write_text("notes")
    one_clear_line(run_cli("export", made["cls.pt"], *args), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.txt"] and (tmp_path / "cls.txt").read_text() == "notes"


# ---------------------------------------------------------------- 29. click's own option checks
@pytest.mark.parametrize("args,needles", [
    (["classify", "resnet18", "a.png", "--top", "0"], ["invalid value for '--top':", "(see `cnnkit classify --help`)"]),
    (["anchors", "-k", "abc"], ["invalid value for '-k' / '--k':", "(see `cnnkit anchors --help`)"]),
    (["detect", "yolov3-tiny", "v.mp4", "--every", "0"], ["invalid value for '--every':"]),
    (["verify", "a.png", "--every", "0"], ["invalid value for '--every':", "`cnnkit verify --help`"]),
    (["stylize", "a.png", "--steps", "0"], ["invalid value for '--steps':"]),
    (["classify", "resnet18"], ["missing argument 'images' (see `cnnkit classify --help`)"]),
    (["export"], ["missing argument 'checkpoint'"]),
    (["detect", "x.pt", "a.png", "--bogus"], ["no such option: --bogus"]),
    (["train"], ["missing argument 'model'"]),
    (["nosuch"], ["no such command 'nosuch' (see `cnnkit --help`)"]),
    (["weights", "pull"], ["missing argument"]),
])
def test_click_option_errors_are_one_line_like_every_other_error(args, needles):
    r = run_cli(*args)
    line = one_clear_line(r, *needles)
    assert r.stderr.strip() == line and r.stdout == ""  # no usage block, no box


def test_help_version_and_no_arguments_still_work():
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.startswith("cnnkit ") and r.stderr == ""
    r = run_cli("export", "--help")
    assert r.code == 0 and "--opset" in r.stdout and "4096" in r.stdout and "error" not in r.stderr


def test_cnnkit_alone_shows_the_help(tmp_path):
    r = _cnnkit(tmp_path)
    assert r.code == 2 and "Usage: cnnkit" in r.stdout and "Commands" in r.stdout and "Traceback" not in r.stderr


LOOP = """
import sys
from cnnkit.core.base.atomic import Terminated, atomic_path, sigterm_unwinds
print("ready", flush=True)
try:
    with sigterm_unwinds():
        while True:
            with atomic_path(sys.argv[1]) as tmp:
                tmp.write_bytes(b"x")
except Terminated:
    sys.exit(143)
"""


def test_sigterm_at_any_point_of_an_atomic_write_leaves_no_temporary_file(tmp_path):
    """Writes in a loop, SIGTERM at 30 moments: the temporary file is removed whenever the signal
    lands (mkstemp made the file before its name was known: a signal in between left it behind)."""
    import random
    import sys

    from tests.test_reliability import _env

    rng = random.Random(0)
    for trial in range(30):
        proc = subprocess.Popen([sys.executable, "-c", LOOP, str(tmp_path / "out.bin")], env=_env(tmp_path),
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143, trial
        assert not list(tmp_path.glob(".out.bin.*")), (trial, list(tmp_path.iterdir()))
