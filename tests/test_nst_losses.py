"""Style-transfer costs and the VGG-19 feature extractor (no images needed)."""

import pytest
import torch

from cnnkit.core.base.errors import CnnkitError
from cnnkit.plugins.nst.losses import StyleTransferLoss, content_cost, gram, style_cost, tv_cost
from cnnkit.plugins.nst.vgg import ARCH_LAYERS, LAYERS, VGGFeatures


def test_costs_are_the_lecture_formulas():
    torch.manual_seed(0)
    a_s, a_g = torch.rand(1, 8, 5, 6), torch.rand(1, 8, 5, 6)
    n_c, n_h, n_w = 8, 5, 6

    def raw(a: torch.Tensor) -> torch.Tensor:  # G_kk' = sum_ij a_ijk a_ijk'
        return a[0].reshape(n_c, -1) @ a[0].reshape(n_c, -1).T

    expected = ((raw(a_s) - raw(a_g)) ** 2).sum() / (2 * n_h * n_w * n_c) ** 2
    assert torch.allclose(style_cost(gram(a_g), gram(a_s)), expected.reshape(1), rtol=1e-5)
    assert torch.allclose(content_cost(a_g, a_s), 0.5 * ((a_s - a_g) ** 2).sum().reshape(1))
    image = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert tv_cost(image).item() == pytest.approx(2.0)


def test_style_cost_compares_textures_of_different_sizes():
    torch.manual_seed(0)
    tile = torch.rand(1, 4, 6, 6)
    assert torch.allclose(gram(tile.repeat(1, 1, 2, 3)), gram(tile), atol=1e-6)
    assert style_cost(gram(tile.repeat(1, 1, 2, 3)), gram(tile)).item() < 1e-10


def test_weighted_total():
    """Numbers worked by hand. One channel, 1 x 2 positions; target activations (1, 0), the generated
    image's (2, 1) in the first of two images and (1, 0) in the second:
    content 1/2 ((2-1)^2 + (1-0)^2) = 1 and 0, mean 0.5;
    Gram G = sum a^2: target 1, generated 5 and 1; style (5-1)^2 / (2 n_H n_W n_C)^2 = 16 / 16 = 1 and 0,
    x layer weight 0.5, mean 0.25;
    TV of the 2 x 2 images [[0, 1], [1, 1]] and zeros: 1 + 1 = 2 and 0, mean 1;
    total 2 x 0.5 + 10 x 0.25 + 0.1 x 1 = 3.6."""
    target = torch.tensor([[[[1.0, 0.0]]]])
    feats = torch.tensor([[[[2.0, 1.0]]], [[[1.0, 0.0]]]])
    image = torch.stack([torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]), torch.zeros(1, 2, 2)])
    loss = StyleTransferLoss(content={"a": target}, grams={"a": gram(target)}, layer_weights={"a": 0.5},
                             content_weight=2.0, style_weight=10.0, tv_weight=0.1)
    parts = loss({"a": feats}, image)
    assert parts["content"].item() == pytest.approx(0.5)
    assert parts["style"].item() == pytest.approx(0.25)
    assert parts["tv"].item() == pytest.approx(1.0)
    assert parts["loss"].item() == pytest.approx(3.6)


def test_vgg_layers_and_truncation():
    assert (LAYERS["conv1_1"], LAYERS["conv4_2"], LAYERS["conv5_1"], LAYERS["conv5_4"]) == (1, 22, 29, 35)
    vgg = VGGFeatures(["conv1_1", "conv2_1"], "random")
    assert len(vgg.body) == LAYERS["conv2_1"] + 1  # nothing deeper is kept
    out = vgg(torch.rand(1, 3, 32, 32))
    assert out["conv1_1"].shape == (1, 64, 32, 32) and out["conv2_1"].shape == (1, 128, 16, 16)
    assert (out["conv2_1"] >= 0).all()  # ReLU outputs
    assert not any(p.requires_grad for p in vgg.parameters())
    with pytest.raises(CnnkitError, match="conv9_9"):
        VGGFeatures(["conv9_9"], "random")


def test_vgg16_layers_for_johnson_et_al():
    # torchvision's vgg16().features: 13 convolutions in blocks of 2, 2, 3, 3, 3, each + ReLU, then a pool
    v16 = ARCH_LAYERS["vgg16"]
    assert (v16["conv1_2"], v16["conv2_2"], v16["conv3_3"], v16["conv4_3"], v16["conv5_3"]) == (3, 8, 15, 22, 29)
    vgg = VGGFeatures(["conv2_2", "conv4_3"], "random", arch="vgg16")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.body) == 10 and len(vgg.body) == 23
    assert vgg(torch.rand(1, 3, 32, 32))["conv4_3"].shape == (1, 512, 4, 4)
    with pytest.raises(CnnkitError, match="VGG-16 layer"):
        VGGFeatures(["conv5_4"], "random", arch="vgg16")  # VGG-19 only
    with pytest.raises(CnnkitError, match="vgg11"):
        VGGFeatures(["conv1_1"], "random", arch="vgg11")


def test_average_pooling_shares_the_weights():
    vgg = VGGFeatures(["conv3_1"], "random")
    avg = vgg.with_pooling("avg")
    kinds = {type(m) for m in avg.body if not isinstance(m, (torch.nn.Conv2d, torch.nn.ReLU))}
    assert kinds == {torch.nn.AvgPool2d} and vgg.pooling == "max" and avg.pooling == "avg"
    assert all(a is b for a, b in zip(avg.body, vgg.body) if isinstance(a, torch.nn.Conv2d))
    x = torch.rand(1, 3, 16, 16)
    z = (x - vgg.mean) / vgg.std
    assert torch.allclose(avg.body[:5](z), torch.nn.functional.avg_pool2d(vgg.body[:4](z), 2))  # conv1_2 -> pool
    assert torch.equal(VGGFeatures(["conv3_1"], "random", pooling="avg")(x)["conv3_1"], avg(x)["conv3_1"])
    with pytest.raises(CnnkitError, match="--pooling"):
        vgg.with_pooling("min")


def test_weights_file_round_trip_and_bad_files(tmp_path):
    source = VGGFeatures(["conv2_1"], "random", seed=3)
    state = {f"features.{k}": v for k, v in source.body.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full VGG-19 file has more: ignored
    torch.save(state, tmp_path / "vgg.pth")
    loaded = VGGFeatures(["conv1_1", "conv2_1"], str(tmp_path / "vgg.pth"))
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded(x)["conv2_1"], source(x)["conv2_1"])
    assert not torch.equal(VGGFeatures(["conv2_1"], "random", seed=4)(x)["conv2_1"], source(x)["conv2_1"])
    with pytest.raises(CnnkitError, match="do not fit"):
        VGGFeatures(["conv3_1"], str(tmp_path / "vgg.pth"))  # too shallow for conv3_1
    (tmp_path / "junk.pth").write_text("not a tensor file")
    with pytest.raises(CnnkitError, match="junk.pth"):
        VGGFeatures(["conv1_1"], str(tmp_path / "junk.pth"))


def test_missing_imagenet_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CnnkitError) as err:
        VGGFeatures(["conv1_1"], "")
    assert "--weights" in str(err.value) and "vgg19-dcbb9e9d.pth" in str(err.value)
    from published_files import place

    source = VGGFeatures(["conv1_1"], "random", seed=1)  # in the cache under the registry's name and hash
    place(monkeypatch, tmp_path / "hub" / "checkpoints", "vgg19-nst",
          {f"features.{k}": v for k, v in source.body.state_dict().items()})
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(VGGFeatures(["conv1_1"], "")(x)["conv1_1"], source(x)["conv1_1"])
