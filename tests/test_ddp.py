"""DistributedDataParallel: a 2-process CPU ``torchrun`` training runs to completion."""

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from cnnkit.core.weights.checkpoint import load_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", "2", "-m", "cnnkit", "train", "resnet18",
           "--data", "synthetic:textures?n=32&size=32", "--img-size", "32", "--batch-size", "8",
           "--epochs", "2", "--device", "cpu", "--out", "ddp", "--experiment", "ddp"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best: ddp/weights/best.pt") == 1  # rank 0 alone reports and saves
    ckpt = load_checkpoint(tmp_path / "ddp" / "weights" / "last.pt")
    assert ckpt["epoch"] == 1 and "module." not in next(iter(ckpt["model_state"]))
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
