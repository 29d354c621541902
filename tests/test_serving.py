"""`cnnkit train` logs an MLflow Model (pyfunc around cnnkit's prediction) and registers it with
--register; `mlflow models serve` answers what `cnnkit detect --json` prints."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cnnkit.core.data.images import write_image
from tests.conftest import one_clear_line, run_cli

CONF = "0.004"  # a one-epoch detector's scores stay near their prior


@pytest.fixture
def trained(tmp_path):
    """A yolov3-tiny run, tracked and registered as `shapes`, and an image to detect in."""
    r = run_cli("train", "yolov3-tiny", "--data", "synthetic:shapes?n=8&size=64", "--epochs", "1", "--batch-size", "8",
                "--img-size", "64", "--out", tmp_path / "run", "--workers", "0", "--register", "shapes")
    assert r.code == 0, r.stderr
    run_id = r.stdout.split("mlflow run: ")[1].split()[0]
    image = write_image(tmp_path / "photo.png", np.random.default_rng(2).integers(0, 255, (72, 96, 3), np.uint8))
    detect = run_cli("detect", tmp_path / "run" / "weights" / "best.pt", image, "--conf", CONF, "--json", "--no-save")
    assert detect.code == 0, detect.stderr
    detections = json.loads(detect.stdout)[0]["detections"]
    assert detections
    return run_id, image, detections


def test_logged_model_predicts_like_detect_and_is_registered(trained):
    import mlflow
    import pandas as pd

    run_id, image, detections = trained
    uri = os.environ["MLFLOW_TRACKING_URI"]  # this test's store (no set_tracking_uri: it would outlive the test)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    inputs = model.metadata.get_input_schema().input_names()
    assert inputs == ["image"] and model.metadata.get_params_schema() is not None
    frame = pd.DataFrame({"image": [base64.b64encode(Path(image).read_bytes()).decode()]})
    assert model.predict(frame, params={"conf": float(CONF)}) == [{"detections": detections}]
    versions = mlflow.MlflowClient(uri).search_model_versions("name='shapes'")
    assert [v.run_id for v in versions] == [run_id]
    assert mlflow.pyfunc.load_model("models:/shapes/1").predict(frame, params={"conf": float(CONF)})[0]["detections"] \
        == detections


def test_register_needs_tracking():
    one_clear_line(run_cli("train", "yolov3-tiny", "--no-track", "--register", "x"), "--register", "--no-track")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_serve_answers_like_detect(trained, tmp_path):
    """`mlflow models serve -m runs:/ID/model --env-manager local` on 127.0.0.1, stopped by the test."""
    run_id, image, detections = trained
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(tmp_path / "serve.log", "w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),  # this cnnkit, and the venv's uvicorn
           "PATH": str(mlflow_cli.parent) + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not come up in 120 s"
                time.sleep(1)
        body = {"dataframe_split": {"columns": ["image"],
                                    "data": [[base64.b64encode(Path(image).read_bytes()).decode()]]},
                "params": {"conf": float(CONF)}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer == {"predictions": [{"detections": detections}]}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
