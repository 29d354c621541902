"""The training engine end to end on a tiny classifier: checkpoints, eval, resume, MLflow."""

import json
import os

import pytest
import torch
from mlflow import MlflowClient

from cnnkit.core.weights.checkpoint import load_checkpoint
from tests.conftest import write_image_folder

TINY = ["--data", "synthetic:textures?n=48&size=32", "--img-size", "32", "--batch-size", "16"]


def _train(cli, *args):
    r = cli("train", "resnet18", *TINY, *args)
    assert r.code == 0, r.stderr
    return r


def test_train_writes_checkpoints_tracks_and_eval_reproduces(cli, tmp_path):
    r = _train(cli, "--epochs", "2", "--out", "run", "--experiment", "tiny")
    assert "run/weights/best.pt" in r.stdout and "run/weights/last.pt" in r.stdout
    best = load_checkpoint("run/weights/best.pt")
    assert best["model"] == "resnet18" and best["task"] == "classify"
    assert best["classes"][0] == "stripes-horizontal" and best["config"]["epochs"] == 2
    assert set(best["metrics"]) == {"val_top1", "val_top5", "val_loss"}

    r = cli("eval", "run/weights/best.pt", "--json")
    assert r.code == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert set(metrics) >= {"top1", "top5"}
    assert metrics["top1"] == pytest.approx(best["metrics"]["val_top1"], abs=1e-6)

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "resnet18" and run.data.params["epochs"] == "2"
    assert run.data.tags["cnnkit.plugin"] == "classify" and run.data.tags["cnnkit.version"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"weights", "loss_curve.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "weights")} == {"weights/best.pt", "weights/last.pt"}

    r = cli("runs", "--json")
    rows = json.loads(r.stdout)
    assert rows[0]["model"] == "resnet18" and rows[0]["metric"] == "val_top1"
    assert rows[0]["value"] == pytest.approx(best["metrics"]["val_top1"])
    assert client.get_run(run.info.run_id).data.metrics["best_val_top1"] == pytest.approx(best["metrics"]["val_top1"])


def test_resume_continues_exactly(cli):
    """Resuming from the epoch-1 checkpoint of a 2-epoch run ends with the same weights."""
    _train(cli, "--epochs", "2", "--out", "straight", "--no-track", "--seed", "7", "--save-period", "1")
    r = cli("train", "resnet18", "--resume", "straight/weights/epoch1.pt", "--out", "resumed")
    assert r.code == 0, r.stderr
    a = load_checkpoint("straight/weights/last.pt")
    b = load_checkpoint("resumed/weights/last.pt")
    assert b["epoch"] == 1 and b["config"]["track"] is False
    for key, tensor in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][key], tensor, msg=key)
    for index, state in a["optimizer_state"]["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(b["optimizer_state"]["state"][index][key], value)
    assert a["scheduler_state"] == b["scheduler_state"]


def test_config_file_is_overridden_by_flags(cli, tmp_path):
    """The values take effect: one epoch was trained (the flag), by Adam (its moment estimates in the
    optimizer's state) from lr 0.05, decayed x 0.1 after that epoch by the step schedule."""
    (tmp_path / "cfg.yaml").write_text("epochs: 3\nlr: 0.05\noptimizer: adam\nscheduler: step\n")
    _train(cli, "--config", "cfg.yaml", "--epochs", "1", "--out", "c", "--no-track")
    ck = load_checkpoint("c/weights/last.pt")
    assert ck["config"]["epochs"] == 1 and len(ck["history"]) == 1
    group, state = ck["optimizer_state"]["param_groups"][0], ck["optimizer_state"]["state"]
    assert {"exp_avg", "exp_avg_sq"} <= set(state[0]) and group["initial_lr"] == 0.05
    assert ck["history"][0]["lr"] == pytest.approx(0.005) and group["lr"] == pytest.approx(0.005)


@pytest.mark.parametrize("optimizer,scheduler,kept,schedule", [
    ("sgd", "plateau", "momentum_buffer", "num_bad_epochs"), ("rmsprop", "cosine", "square_avg", "T_max")])
def test_optimizers_and_schedules(cli, optimizer, scheduler, kept, schedule):
    """The optimizer that trained is the one asked for (its own state), and so is the schedule."""
    _train(cli, "--epochs", "1", "--optimizer", optimizer, "--scheduler", scheduler, "--no-track", "--out", "o")
    ck = load_checkpoint("o/weights/last.pt")
    assert kept in ck["optimizer_state"]["state"][0] and schedule in ck["scheduler_state"]
    if scheduler == "cosine":  # annealed to 0 at the end of its only epoch
        assert ck["history"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_rmsprop_tf_puts_epsilon_inside_the_square_root():
    """Inception-v3's RMSProp as TensorFlow runs it: v = 0.9 v + 0.1 g^2 from v = 1, step lr g / sqrt(v + 1);
    PyTorch's rmsprop (v from 0, lr g / (sqrt(v) + 1)) takes another step."""
    import torch

    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.train.optim import build_optimizer

    g = torch.tensor([0.5, -3.0])
    steps = {}
    for name in ("rmsprop-tf", "rmsprop"):
        p = torch.nn.Parameter(torch.zeros(2))
        opt = build_optimizer(torch.nn.ParameterList([p]), TrainConfig(optimizer=name, lr=0.1, momentum=0.0,
                                                                         weight_decay=0.0))
        p.grad = g.clone()
        opt.step()
        steps[name] = -p.detach()
    assert torch.allclose(steps["rmsprop-tf"], 0.1 * g / (0.9 + 0.1 * g * g + 1.0).sqrt())
    assert torch.allclose(steps["rmsprop"], 0.1 * g / ((0.1 * g * g).sqrt() + 1.0))


def test_amp_and_channels_last_train_on_cpu(cli):
    """--channels-last trains (and saves) the weights channels-last; --amp trains under bf16 autocast:
    the same seeded run without it ends with other weights, while repeating that run gives the same."""
    for out, flags in (("amp", ["--amp"]), ("fp32", []), ("fp32-again", [])):
        _train(cli, "--epochs", "1", *flags, "--channels-last", "--no-track", "--out", out, "--seed", "3")
    states = {out: load_checkpoint(f"{out}/weights/last.pt")["model_state"] for out in ("amp", "fp32", "fp32-again")}
    conv = states["amp"]["layer1.0.conv1.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(torch.equal(states["fp32"][k], v) for k, v in states["fp32-again"].items())
    assert not torch.equal(states["amp"]["fc.weight"], states["fp32"]["fc.weight"])


def test_weights_from_another_head_fine_tune(cli, tmp_path):
    """--weights skips tensors that do not fit (a classifier head for other classes)."""
    _train(cli, "--epochs", "1", "--out", "base", "--no-track")
    write_image_folder(tmp_path / "two", ("a", "b"), per_class=4, size=32)
    r = cli("train", "resnet18", "--data", "two", "--weights", "base/weights/best.pt", "--img-size", "32",
            "--epochs", "1", "--no-track", "--out", "ft")
    assert r.code == 0, r.stderr
    assert "weights: 120/122 tensors from base/weights/best.pt" in r.stderr
    base, ft = load_checkpoint("base/weights/best.pt"), load_checkpoint("ft/weights/best.pt")
    assert ft["classes"] == ["a", "b"] and ft["model_state"]["fc.weight"].shape == (2, 512)
    assert base["model_state"]["fc.weight"].shape == (8, 512)


@pytest.mark.slow
def test_resnet18_default_recipe_reaches_90_percent(cli):
    """`cnnkit train resnet18` with no options (synthetic:textures) and `cnnkit eval` on best.pt."""
    r = cli("train", "resnet18", "--out", "demo")
    assert r.code == 0, r.stderr
    best = load_checkpoint("demo/weights/best.pt")
    assert best["metrics"]["val_top1"] >= 0.90
    r = cli("eval", "demo/weights/best.pt", "--json")
    assert json.loads(r.stdout)["top1"] == pytest.approx(best["metrics"]["val_top1"], abs=1e-6)


def test_non_finite_loss_stops_with_its_epoch_and_step(cli):
    """Losses are read back in bulk, yet the error names the first step whose loss was not finite."""
    r = cli("train", "resnet18", *TINY, "--epochs", "2", "--lr", "1e30", "--no-track", "--out", "nan",
            "--scheduler", "none", "--workers", "1")
    assert r.code == 2
    assert "the loss became nan at epoch 1 step 2; try a lower --lr" in r.stderr.strip().splitlines()[-1]
