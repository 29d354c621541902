"""The fast feed-forward stylizer (Johnson et al.): network, photo-folder data, training, stylize --model."""

import json
from pathlib import Path

import numpy as np
import torch

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.data import find_dataset
from cnnkit.core.data.images import read_image, write_image
from cnnkit.core.weights.checkpoint import load_checkpoint
from cnnkit.plugins.nst.data import is_photo_folder
from cnnkit.plugins.nst.models import TransformerNet
from tests.conftest import optimise


def test_transformer_net_shapes_and_instance_norm():
    net = TransformerNet().eval()
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()) == 3 + 2 * 5 + 2
    x = torch.rand(2, 3, 36, 50)  # not multiples of 4: the size is kept anyway
    assert net(x).shape == x.shape
    assert net.down(torch.rand(1, 3, 64, 64)).shape == (1, 128, 16, 16)


def _photos(folder: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image(folder / f"photo{i}.jpg", rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8))
    return folder


def test_photo_folder_layout(tmp_path):
    load_plugins()
    photos = _photos(tmp_path / "photos")
    assert is_photo_folder(photos)
    assert not is_photo_folder(tmp_path / "missing") and not is_photo_folder(tmp_path)
    (tmp_path / "classes" / "train" / "a").mkdir(parents=True)
    _photos(tmp_path / "classes" / "train" / "a", 1)
    assert not is_photo_folder(tmp_path / "classes")
    spec, _, _ = find_dataset(str(photos))
    assert spec.name == "photos"
    from cnnkit.plugins.nst.data import photo_folder

    assert len(photo_folder(photos, "train")) == 2 and len(photo_folder(photos, "val")) == 1
    single = _photos(tmp_path / "one", 1)
    assert len(photo_folder(single, "train")) == len(photo_folder(single, "val")) == 1


def test_perceptual_loss_falls_while_training(shared_data):
    load_plugins()
    from cnnkit.core.tasks.base import make_task

    spec = models.get("fast-style")
    config = TrainConfig(model="fast-style", img_size=32, data="synthetic:textures?n=4&size=32",
                         options={"style": str(shared_data / "nst" / "starry_night.jpg"),
                                  "vgg_weights": "random", "style_weight": "1e6"})
    task = make_task(spec, config)
    torch.manual_seed(0)
    model = task.build_model()
    vgg = task.criterion(model).vgg  # the loss records the style settings in the task state
    assert task.state["style_weight"] == 1e6 and task.state["style"].endswith("starry_night.jpg")
    assert task.state["vgg"] == "vgg16" and vgg.arch == "vgg16" and len(vgg.body) == 23  # Johnson: up to relu4_3
    batch = torch.stack([task.dataset("train")[i] for i in range(2)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, _ = optimise(task, model, batch, opt, steps=20)
    assert losses[-1] < losses[0] / 2.5, losses


def test_train_fast_style_then_stylize_in_one_pass(cli, shared_data, tmp_path):
    photos = _photos(tmp_path / "photos")
    style = shared_data / "nst" / "the_scream.jpg"
    r = cli("train", "fast-style", "--data", photos, "--style", style, "--vgg-weights", "random",
            "--img-size", "32", "--epochs", "1", "--batch-size", "2", "--out", "fast")
    assert r.code == 0, r.stderr
    ck = load_checkpoint(tmp_path / "fast" / "weights" / "best.pt")
    assert ck["model"] == "fast-style" and ck["task"] == "stylize"
    assert ck["task_state"]["style"] == str(style) and ck["task_state"]["style_size"] == 32
    assert "val_style" in ck["metrics"]

    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("cnnkit").experiment_id])[0]
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert samples == {"samples/stylized.png"}
    content = write_image(tmp_path / "content.png", read_image(shared_data / "nst" / "tubingen.jpg")[::16, ::16])
    r = cli("stylize", content, "--model", tmp_path / "fast" / "weights" / "best.pt", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    out = read_image(tmp_path / "content_stylized.png")
    assert info["output"] == "content_stylized.png" and out.shape == read_image(content).shape
    assert info["style"] == str(style)
    r = cli("stylize", content, "--model", tmp_path / "fast" / "weights" / "best.pt", "--size", "20", "-o", "s.png")
    assert r.code == 0 and read_image(tmp_path / "s.png").shape[1] == 20


def test_fast_style_bad_input(cli, tmp_path):
    r = cli("train", "fast-style", "--style", "nope.jpg", "--vgg-weights", "random", "--no-track")
    assert r.code == 2 and "nope.jpg" in r.stderr
    r = cli("train", "fast-style", "--style-layers", "conv1_1,pool9", "--vgg-weights", "random", "--no-track")
    assert r.code == 2 and "pool9" in r.stderr
    r = cli("train", "fast-style", "--styel", "x.jpg", "--no-track")
    assert r.code == 2 and "--styel" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("train", "fast-style", "--data", tmp_path / "empty", "--vgg-weights", "random", "--no-track")
    assert r.code == 2 and "empty" in r.stderr
    torch.save({"model": "resnet18", "task": "classify", "model_state": {}, "config": {}}, tmp_path / "cls.pt")
    content = write_image(tmp_path / "c.png", np.zeros((8, 8, 3), np.uint8))
    r = cli("stylize", content, "--model", tmp_path / "cls.pt")
    assert r.code == 2 and "is a classifier (classify task), not a stylizer" in r.stderr
    assert f"run it with `cnnkit classify {tmp_path / 'cls.pt'} IMAGE...`" in r.stderr
