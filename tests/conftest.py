"""Shared fixtures: a temp working directory with its own MLflow sqlite store, an in-process CLI
runner that goes through ``cnnkit.commands.main`` (exit codes and stderr as a user sees them), and
the real images in ../shared/data (tests that need them skip when it is absent)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _tmp_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder with its own MLflow database and cache; weights "downloads"
go to a closed local port unless a test serves a mirror."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / ".cache"))  # `cnnkit models --count` caches there
    monkeypatch.delenv("CNNKIT_PLUGINS", raising=False)
    monkeypatch.delenv("CNNKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.setenv("CNNKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # weights downloads never leave the machine
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the suite's models are tiny, and two threads spin-wait and run several
    times slower whenever the 2-core machine has anything else to do."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Result:
    """Run ``cnnkit ARGS`` in this process; returns the exit code and captured output."""
    from cnnkit.commands import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


def one_clear_line(r: Result, *needles: str, code: int = 2, prefix: str = "error: ") -> str:
    """Exit ``code``; the error is one line (the last on stderr, after any progress output), no traceback."""
    assert r.code == code, (r.code, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def write_image_folder(root: Path, classes: tuple[str, ...], per_class: int, size: int,
                       splits: tuple[str, ...] = ("train", "val")) -> Path:
    """Random-pixel PNGs laid out as ``root/<split>/<class>/<i>.png`` (an ImageFolder root)."""
    import numpy as np

    from cnnkit.core.data.images import write_image

    rng = np.random.default_rng(0)
    for split in splits:
        for cls in classes:
            for i in range(per_class):
                write_image(root / split / cls / f"{i}.png", rng.integers(0, 255, (size, size, 3), np.uint8))
    return root


def optimise(task, model, batch, optimizer, steps: int) -> tuple[list[float], dict]:
    """``steps`` optimizer steps on one batch through ``task.loss``: the losses and the last parts."""
    losses = []
    for step in range(steps):
        parts = task.loss(model, batch, step)
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        losses.append(float(parts["loss"].detach()))
    return losses, parts


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def assert_detect_maps_back(detections: list[dict], checkpoint: str, image: np.ndarray, conf: float,
                            iou: float = 0.45) -> None:
    """`cnnkit detect`'s ``detections`` of ``image`` are the model's own on the letterboxed image
    (same scores, classes) with boxes mapped back by the scale and centred padding worked out here
    (a missing pad or scale, or a wrong clip, moves them by pixels)."""
    import torch

    from cnnkit.core.data.pixels import letterbox, to_tensor
    from cnnkit.core.load.source import load_for_eval

    task, model, _ = load_for_eval(checkpoint)
    size, (h, w) = task.config.img_size, image.shape[:2]
    scale = size / max(h, w)
    left, top = (size - round(w * scale)) // 2, (size - round(h * scale)) // 2
    boxed, _ = letterbox(image, size)
    with torch.no_grad():
        x = to_tensor(boxed, task.input_norm())[None]  # the checkpoint's own input transform (a pretrained trunk's)
        boxes, scores, labels = task.predict_batch(model.eval(), x, conf, iou)[0]
    pad = torch.tensor([left, top, left, top], dtype=torch.float32)
    mapped = ((boxes.float() - pad) / scale).clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float32))
    expected = sorted(zip([round(float(s), 4) for s in scores], labels.tolist(), mapped.tolist()), key=lambda r: -r[0])
    assert len(detections) == len(expected) > 0
    assert [(d["score"], d["label"]) for d in detections] == [(s, c) for s, c, _ in expected]
    assert torch.allclose(torch.tensor([d["box"] for d in detections]), torch.tensor([b for _, _, b in expected]),
                          atol=0.01)
