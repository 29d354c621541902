"""One small model of each classic family trains for an epoch through `cnnkit train` (tiny synthetic
textures at the smallest size each architecture allows), and the family options and size limits
are enforced with clear errors."""

import json
from pathlib import Path

import pytest

# family: (model, --img-size, extra flags). VGG/AlexNet keep their 4096-wide FC layers at any size.
FAMILIES = {
    "alexnet": ("alexnet-lrn", 67, []),
    "vgg": ("vgg-a", 32, []),
    "inception": ("googlenet", 79, []),
    "resnet": ("resnet18", 32, ["--shortcut", "A"]),
    "resnext": ("resnext50-32x4d", 32, []),
    "densenet": ("densenet121", 32, []),
}




def train(cli, model, size, *extra):
    return cli("train", model, "--data", f"synthetic:textures?n=16&size={size}", "--epochs", "1",
               "--img-size", size, "--batch-size", 16, "--no-track", "--out", "run", *extra)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_epoch_per_family(cli, family):
    model, size, extra = FAMILIES[family]
    r = train(cli, model, size, *extra)
    assert r.code == 0, r.stderr
    assert Path("run/weights/best.pt").is_file() and "metrics:" in r.stdout
    top1 = float(r.stdout.split("top1 ")[1].split()[0])
    if family == "resnet":  # the shortcut option travels in the checkpoint: eval rebuilds option A
        r = cli("eval", "run/weights/best.pt", "--json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["top1"] == pytest.approx(top1)


@pytest.mark.parametrize("model", ["resnet18", "resnext50-32x4d", "densenet121"])
def test_classifier_fits_one_batch_above_chance(model):
    """12 Adam steps on one batch of 8 textures (8 classes): an untrained or broken network stays at
    chance (1/8); measured top-1 on the batch, batch-norm in training mode, 1.0 for all three
    (losses 2.6 -> 0.001, 2.6 -> 0.003, 2.1 -> 0.005). AlexNet, VGG and GoogLeNet (dropout, no
    batch norm) need more steps: the test below."""
    import torch

    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task
    from tests.conftest import optimise

    load_plugins()
    torch.manual_seed(0)
    task = make_task(models.get(model), TrainConfig(model=model, data="synthetic:textures?n=16&size=32", img_size=32))
    ds = task.dataset("train")
    images, labels = torch.utils.data.default_collate([ds[i] for i in range(8)])
    net = task.build_model()
    with torch.no_grad():
        untrained = float((net(images).argmax(1) == labels).float().mean())
    optimise(task, net, (images, labels), torch.optim.Adam(net.parameters(), lr=1e-3), steps=12)
    with torch.no_grad():
        fitted = float((net(images).argmax(1) == labels).float().mean())
    assert untrained <= 0.375 and fitted >= 0.875, (untrained, fitted)


# Fitting one batch of 8 textures (8 classes, chance 1/8) with fused Adam, in training mode (dropout,
# GoogLeNet's two auxiliary classifiers in the loss), judged in eval mode. Measured: alexnet-lrn top-1
# 0.125 untrained -> 0.5 after 30 steps at 3e-4, 0.625 after 40; vgg-a 0.125 -> 0.875 after 20 steps at
# 1e-4; googlenet (no batch norm over 22 layers: it learns slowly) top-1 0.125 -> 0.25 after 40 steps at
# 1e-3, so its floor is on the training loss: main + 0.3 x each auxiliary cross-entropy 3.33 (1.6 ln 8,
# chance) -> 2.55, the auxiliary heads' own 4.17 (2 ln 8) -> 3.03.
NO_BN = [("alexnet-lrn", 67, 40, 3e-4, {"top1": 0.5}), ("vgg-a", 32, 20, 1e-4, {"top1": 0.5}),
         ("googlenet", 79, 40, 1e-3, {"loss": 2.9, "aux": 3.6})]


@pytest.mark.slow
@pytest.mark.parametrize("model,size,steps,lr,floor", NO_BN)
def test_classifiers_without_batch_norm_fit_a_batch_above_the_untrained_figure(model, size, steps, lr, floor):
    import torch

    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task

    load_plugins()
    torch.manual_seed(0)
    task = make_task(models.get(model), TrainConfig(model=model, data=f"synthetic:textures?n=16&size={size}",
                                                    img_size=size))
    ds = task.dataset("train")
    images, labels = torch.utils.data.default_collate([ds[i] for i in range(8)])
    net = task.build_model()

    def figures() -> dict[str, float]:
        with torch.no_grad():
            top1 = float((net.eval()(images).argmax(1) == labels).float().mean())
            parts = task.loss(net.train(), (images, labels), 0)  # the training loss: aux heads included
        return {"top1": top1, "loss": float(parts["loss"]), "aux": float(parts.get("aux", 0.0))}

    untrained = figures()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    for step in range(steps):
        parts = task.loss(net.train(), (images, labels), step)
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
    fitted = figures()
    assert untrained["top1"] <= 0.25, untrained
    for key, bound in floor.items():  # a top-1 above, or a loss below, what the untrained network gives
        beaten = fitted[key] >= bound > untrained[key] if key == "top1" else fitted[key] <= bound < untrained[key]
        assert beaten, (key, untrained, fitted)


def test_train_refuses_sizes_below_the_architecture_minimum(cli):
    r = train(cli, "googlenet", 64)
    assert r.code == 2 and "googlenet needs --img-size >= 79" in r.stderr
    r = train(cli, "inception-v3", 128)
    assert r.code == 2 and "needs --img-size >= 299" in r.stderr


def test_family_options_are_checked(cli):
    r = train(cli, "resnet18", 32, "--shortcut", "D")
    assert r.code == 2 and "--shortcut must be A, B or C" in r.stderr and "Traceback" not in r.stderr
    r = train(cli, "inception-resnet-v1", 75, "--residual-scale", 3)
    assert r.code == 2 and "--residual-scale must be in (0, 1]" in r.stderr
    r = train(cli, "vgg-a", 32, "--shortcut", "A")
    assert r.code == 2 and "unknown option" in r.stderr


def test_inception_v3_recipe_is_the_papers():
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.plugins.classify import CLASSIFY_RECIPE

    load_plugins()
    v3 = models.get("inception-v3").recipe
    assert (v3["optimizer"], v3["lr"], v3["label_smoothing"], v3["grad_clip"], v3["img_size"]) == \
        ("rmsprop-tf", 0.045, 0.1, 2.0, 299)
    assert {k: v for k, v in models.get("resnet18").recipe.items() if k != "about"} == CLASSIFY_RECIPE


def test_predict_uses_the_checkpoints_own_input_transform():
    """What MLflow serving runs (``task.predict``) sees the inputs as the model was trained and
    validated: a checkpoint's mean/std (from the weights it started from), not ImageNet's."""
    import numpy as np
    import torch

    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.data.pixels import to_tensor
    from cnnkit.core.data.transforms import classification_pipeline
    from cnnkit.core.tasks.base import make_task

    load_plugins()
    config = TrainConfig(model="resnet18", img_size=32, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    task = make_task(models.get("resnet18"), config, classes=["a", "b", "c"])
    torch.manual_seed(0)
    model = task.build_model().eval()
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    got = torch.tensor(task.predict(model, [image], torch.device("cpu")))
    x = to_tensor(classification_pipeline(32, False)(image=image)["image"], ((0.5,) * 3, (0.5,) * 3))
    with torch.no_grad():
        expected = model(x[None]).softmax(1)
    assert torch.allclose(got, expected, atol=1e-6)
    val_image, _ = task.sample_transform(train=False)((image, 0))
    assert torch.equal(val_image, x)  # validation and eval see the same tensor
