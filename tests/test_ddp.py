"""DistributedDataParallel: a 2-process CPU ``torchrun`` training, each rank on its own half of the
data, ending with the same weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cnnkit.core.weights.checkpoint import load_checkpoint

PROBE = Path(__file__).with_name("ddp_probe.py")  # `cnnkit train` recording what each rank saw


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    paths = [str(PROBE.parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]  # the probe imports this cnnkit
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", "2", str(PROBE), "train", "resnet18",
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
    # each epoch the two ranks drew disjoint halves of the 32 images, reshuffled between epochs ...
    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in range(2):
        mine, theirs = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(mine) == len(theirs) == 16 and sorted(mine + theirs) == list(range(32)), epoch
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]
    # ... and ended with the same weights (gradients averaged every step), which rank 0 saved
    from ddp_probe import digest

    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert digest({k: ckpt["model_state"][k] for k in ranks[0]["keys"]}) == ranks[0]["weights"]
