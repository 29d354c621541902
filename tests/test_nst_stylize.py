"""Gatys style transfer on the real images: shortened versions of the issue's quality bars
(the full 128 px / 100-iteration measurements are in bench/nst.py --quality)."""

import json

import numpy as np
import pytest
import torch

from cnnkit.core.data.images import read_image, write_image
from cnnkit.plugins.nst.stylize import STYLE_LAYERS, StyleConfig, rgb_to_yiq, style_transfer
from cnnkit.plugins.nst.vgg import VGGFeatures


@pytest.fixture(scope="module")
def vgg():
    return VGGFeatures(["conv4_2", *STYLE_LAYERS], "random")


@pytest.fixture
def images(shared_data):
    return read_image(shared_data / "nst" / "tubingen.jpg"), read_image(shared_data / "nst" / "starry_night.jpg")


def _fold(result):
    return result.history[0]["style"] / result.losses["style"]


def test_texture_synthesis_style_loss_falls(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(size=48, steps=20, content_weight=0, init="noise"), vgg)
    assert _fold(r) >= 300, _fold(r)
    assert r.image.shape == (36, 48, 3) and r.image.dtype == np.uint8


def test_stylizing_carries_the_style_and_keeps_the_photo(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(size=48, steps=20, style_weight=1e7), vgg)
    assert r.history[0]["content"] == 0  # started from the content image
    assert _fold(r) >= 10, _fold(r)
    assert r.losses["content"] < r.style_image_content_loss / 3, (r.losses, r.style_image_content_loss)


def test_adam_style_loss_falls(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(size=48, steps=20, style_weight=1e7, optimizer="adam"), vgg)
    assert len(r.history) == 20
    assert _fold(r) >= 5, _fold(r)


def test_init_style_starts_at_the_style_images_content_loss(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(size=32, steps=1, init="style"), vgg)
    assert r.history[0]["content"] == pytest.approx(r.style_image_content_loss, rel=1e-4)
    noise = style_transfer(content, [style], StyleConfig(size=32, steps=1, init="noise", seed=1), vgg)
    assert noise.history[0]["content"] > 0 and noise.history[0]["style"] != r.history[0]["style"]


def test_blend_weights_pick_the_styles(images, vgg, shared_data):
    content, style = images
    scream = read_image(shared_data / "nst" / "the_scream.jpg")
    cfg = dict(size=32, steps=3)
    alone = style_transfer(content, [style], StyleConfig(**cfg), vgg)
    blended = style_transfer(content, [style, scream], StyleConfig(**cfg, style_blend=(1.0, 0.0)), vgg)
    mixed = style_transfer(content, [style, scream], StyleConfig(**cfg, style_blend=(0.5, 0.5)), vgg)
    assert np.array_equal(alone.image, blended.image)
    assert not np.array_equal(alone.image, mixed.image)


def test_preserve_colors_keeps_the_content_chroma(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(size=48, steps=10, style_weight=1e8, preserve_colors=True), vgg)
    small = torch.nn.functional.interpolate(torch.from_numpy(content).permute(2, 0, 1)[None].float() / 255,
                                            size=r.image.shape[:2], mode="bilinear", antialias=True)
    out = torch.from_numpy(r.image).permute(2, 0, 1)[None].float() / 255
    yiq_out, yiq_in = rgb_to_yiq(out), rgb_to_yiq(small)
    chroma_error = (yiq_out[:, 1:] - yiq_in[:, 1:]).abs().mean().item()
    luma_change = (yiq_out[:, :1] - yiq_in[:, :1]).abs().mean().item()
    assert chroma_error < 0.02 and luma_change > 2 * chroma_error, (chroma_error, luma_change)
    plain = style_transfer(content, [style], StyleConfig(size=48, steps=10, style_weight=1e8), vgg)
    plain_chroma = (rgb_to_yiq(torch.from_numpy(plain.image).permute(2, 0, 1)[None].float() / 255)[:, 1:]
                    - yiq_in[:, 1:]).abs().mean().item()
    assert plain_chroma > 2 * chroma_error  # without the flag the colours do move


def test_coarse_to_fine_scales(images, vgg):
    content, style = images
    r = style_transfer(content, [style], StyleConfig(scales=(32, 48), steps=4, style_weight=1e8,
                                                     style_scale=1.5), vgg)
    assert r.image.shape == (36, 48, 3)
    steps = [h["step"] for h in r.history]
    assert steps == sorted(steps) and len(steps) == 2 * 5
    assert r.history[5]["content"] > 0  # the fine stage starts from the coarse result, not the photo


# ------------------------------------------------------------------------------------ the command
def _small(shared_data, tmp_path):
    """Real images made small (quick command tests), written with write_image."""
    paths = []
    for name in ("tubingen", "starry_night", "the_scream"):
        image = read_image(shared_data / "nst" / f"{name}.jpg")[::8, ::8]
        paths.append(write_image(tmp_path / f"{name}.png", image))
    return paths


def test_stylize_command_json_tracking_and_intermediates(cli, shared_data, tmp_path):
    content, style, _ = _small(shared_data, tmp_path / "in")
    r = cli("stylize", content, style, "--size", "32", "--steps", "4", "--weights", "random",
            "--style-weight", "1e8", "--save-every", "2", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["output"] == "tubingen_stylized.png" and (tmp_path / "tubingen_stylized.png").is_file()
    assert read_image(tmp_path / "tubingen_stylized.png").shape == (24, 32, 3)
    assert info["losses"]["style"] < info["initial_losses"]["style"]
    assert sorted(p.name for p in (tmp_path / "tubingen_stylized_steps").iterdir()) == \
        ["step_00002.png", "step_00004.png"]

    from mlflow import MlflowClient

    client = MlflowClient()
    run = client.get_run(info["mlflow_run"])
    assert run.info.status == "FINISHED" and run.data.params["style_weight"] == "100000000.0"
    curve = client.get_metric_history(run.info.run_id, "style_loss")
    assert [m.step for m in curve] == [0, 1, 2, 3, 4]
    assert curve[-1].value < curve[0].value
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"tubingen_stylized.png", "intermediate", "loss_curves.png"} <= names
    steps = {a.path for a in client.list_artifacts(run.info.run_id, "intermediate")}
    assert steps == {"intermediate/step_00002.png", "intermediate/step_00004.png"}


def test_stylize_command_options_and_output(cli, shared_data, tmp_path):
    content, style, scream = _small(shared_data, tmp_path / "in")
    r = cli("stylize", content, style, scream, "-o", "out/mix.jpg", "--size", "24", "--steps", "2",
            "--weights", "random", "--style-blend", "2,1", "--optimizer", "adam", "--init", "noise",
            "--preserve-colors", "--tv-weight", "1", "--style-layers", "conv1_1,conv2_1",
            "--style-layer-weights", "0.3,0.7", "--content-layers", "conv2_2", "--scales", "16,24",
            "--amp", "--no-track", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["output"] == "out/mix.jpg" and info["mlflow_run"] is None and info["losses"]["tv"] > 0
    assert read_image(tmp_path / "out" / "mix.jpg").shape == (18, 24, 3)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("args, message", [
    (["{content}"], "STYLE"),
    (["{content}", "{style}", "--optimizer", "sgd"], "lbfgs or adam"),
    (["{content}", "{style}", "--init", "zeros"], "content, noise, style"),
    (["{content}", "{style}", "--pooling", "min"], "--pooling 'min' (avg, max)"),
    (["{content}", "{style}", "--style-layers", "conv1_1,conv6_1"], "conv6_1"),
    (["{content}", "{style}", "--style-blend", "1,2"], "--style-blend"),
    (["{content}", "{style}", "--style-layer-weights", "1"], "--style-layer-weights"),
    (["{content}", "{style}", "--scales", "a,b"], "--scales"),
    (["{content}", "missing.jpg"], "missing.jpg"),
    (["{content}", "{style}", "-o", "out.txt"], "out.txt"),
    (["{content}", "{style}", "--weights", "nothing.pth"], "nothing.pth"),
    (["{content}", "{style}", "--model", "fast.pt"], "--model"),
    (["{content}", "{style}", "--style-scale", "0.2", "--size", "32"], "--style-scale"),
])
def test_stylize_command_refuses_bad_input(cli, shared_data, tmp_path, args, message):
    content, style, _ = _small(shared_data, tmp_path)
    args = [a.format(content=content, style=style) for a in args]
    r = cli("stylize", *args, *(() if "--size" in args else ("--size", "16")), "--steps", "1", "--no-track",
            *(() if "--weights" in args else ("--weights", "random")))
    assert r.code == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_stylize_command_without_weights_explains(cli, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    content, style, _ = _small(shared_data, tmp_path)
    r = cli("stylize", content, style, "--size", "16", "--steps", "1", "--no-track")
    assert r.code == 2 and "--weights" in r.stderr and "random" in r.stderr


@pytest.mark.slow
def test_512_px_run_stays_under_4_gib(shared_data, tmp_path):
    """The issue's memory bar, in a child process that reports its own peak RSS: VmHWM of its
    address space (getrusage would also count earlier subprocesses, or the forking pytest process,
    whose high-water mark Linux carries across exec)."""
    import subprocess
    import sys

    args = ["stylize", str(shared_data / "nst" / "tubingen.jpg"), str(shared_data / "nst" / "starry_night.jpg"),
            "--size", "512", "--steps", "1", "--weights", "random", "--no-track", "--device", "cpu",
            "-o", str(tmp_path / "big.png")]
    probe = ("import sys\n"
             "from cnnkit.commands import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
             "print(int(hwm.split()[1]))\n")
    out = subprocess.run([sys.executable, "-c", probe, *args], check=True, capture_output=True, text=True,
                         timeout=600)
    assert read_image(tmp_path / "big.png").shape == (384, 512, 3)
    peak_gib = int(out.stdout.strip().splitlines()[-1]) / 2**20
    assert peak_gib < 4, peak_gib
