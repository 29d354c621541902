"""Image classification: the ImageNet case studies (hook implementations only, nothing heavy)."""

from __future__ import annotations

from typing import Any

from cnnkit.core.hookspecs import hookimpl
from cnnkit.core.registry import ModelSpec

PKG = "cnnkit.plugins.classify"
TASK = f"{PKG}.task:ClassifyTask"
RESNET_TASK = f"{PKG}.task:ResNetTask"
INCEPTION_RESNET_TASK = f"{PKG}.task:InceptionResNetTask"

# The training recipe every classifier starts from (flags and --config override it).
CLASSIFY_RECIPE: dict[str, Any] = {
    "epochs": 15, "img_size": 64, "batch_size": 32, "optimizer": "adam", "lr": 1e-3,
    "weight_decay": 1e-4, "scheduler": "cosine",
}
# Inception-v3 (Szegedy et al. 2016, sec. 8): RMSProp (decay 0.9, eps 1.0), lr 0.045 decayed by 0.94
# every two epochs, gradient clipping at 2.0, label smoothing 0.1. Inception-v4 keeps the optimiser.
RMSPROP_RECIPE: dict[str, Any] = {"optimizer": "rmsprop", "lr": 0.045, "scheduler": "step", "step_size": 2,
                                  "gamma": 0.94, "grad_clip": 2.0}
INCEPTION_V3_RECIPE: dict[str, Any] = {**RMSPROP_RECIPE, "label_smoothing": 0.1}

KRIZHEVSKY = "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with deep CNNs"
SIMONYAN = "Simonyan & Zisserman 2015, Very deep convolutional networks (Tables 1, 2)"
SZEGEDY15 = "Szegedy et al. 2015, Going deeper with convolutions (Table 1, sec. 5)"
SZEGEDY16 = "Szegedy et al. 2016, Rethinking the Inception architecture (Table 1, sec. 6-8)"
SZEGEDY17 = "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the impact of residual connections"
HE = "He et al. 2016, Deep residual learning (Table 1); params: torchvision / Xie et al. 2017 Tables 1, 5"
HE_V2 = "He et al. 2016, Identity mappings in deep residual networks (same layers as ResNet-N)"
XIE = "Xie et al. 2017, Aggregated residual transformations (Table 1)"
MAHAJAN = "Mahajan et al. 2018, Exploring the limits of weakly supervised pretraining (Table 1)"
HUANG = "Huang et al. 2017, Densely connected convolutional networks (Table 1); params: reference code"

# name, builder, kwargs, paper params, paper multiply-adds, native size, min size, description, source,
# aliases, task, recipe overrides. min size: the smallest --img-size the network (auxiliary heads
# included, as trained) does not shrink to nothing.
_M = f"{PKG}.models"
MODELS: list[tuple[Any, ...]] = [
    ("alexnet-lrn", f"{_M}:alexnet_lrn", {}, 62_300_000, None, 227, 67,
     "AlexNet from the paper: LRN, overlapping pooling, dropout, ungrouped", KRIZHEVSKY, (), TASK, {}),
    ("alexnet", f"{_M}:torchvision_model", {"arch": "alexnet"}, 61_100_840, 0.72e9, 224, 63,
     "AlexNet as torchvision builds it (no LRN, 64-192-384-256-256)", "Krizhevsky 2014, One weird trick", (),
     TASK, {}),
    *[(f"vgg-{c.lower()}", f"{_M}:vgg", {"config": c}, p, m, 224, 32, f"VGG configuration {c}{d}", SIMONYAN,
       a, TASK, {})
      for c, p, m, d, a in [("A", 133_000_000, 7.6e9, " (11 layers)", ("vgg11",)),
                            ("A-LRN", 133_000_000, None, " (A + LRN after conv1)", ()),
                            ("B", 133_000_000, None, " (13 layers)", ("vgg13",)),
                            ("C", 134_000_000, None, " (16 layers, 1x1 convs in stages 3-5)", ()),
                            ("D", 138_000_000, 15.5e9, " (16 layers)", ("vgg16",)),
                            ("E", 144_000_000, 19.6e9, " (19 layers)", ("vgg19",))]],
    ("googlenet", f"{PKG}.googlenet:googlenet", {}, 6_800_000, 1.5e9, 224, 79,
     "GoogLeNet / Inception-v1 with two auxiliary classifiers (training only)", SZEGEDY15, ("inception-v1",),
     TASK, {}),
    ("inception-v2", f"{_M}:inception_v2", {}, None, None, 299, 299,
     "Inception-v2: factorised/asymmetric convs, grid reduction, 7x7 stem, plain aux head", SZEGEDY16, (),
     TASK, {}),
    ("inception-v3", f"{_M}:inception_v3", {}, 25_000_000, 5.0e9, 299, 299,
     "Inception-v3: v2 + factorised 7x7, BN auxiliary head; RMSProp + label smoothing", SZEGEDY16, (),
     TASK, INCEPTION_V3_RECIPE),
    ("inception-v4", f"{_M}:timm_model", {"arch": "inception_v4", "drop_rate": 0.2}, None, None, 299, 75,
     "Inception-v4: pure Inception, 4/7/3 A/B/C modules", SZEGEDY17, (), TASK, RMSPROP_RECIPE),
    ("inception-resnet-v1", f"{PKG}.inception_resnet:inception_resnet_v1", {}, None, None, 299, 75,
     "Inception-ResNet-v1 from the paper (--residual-scale)", SZEGEDY17, (), INCEPTION_RESNET_TASK,
     RMSPROP_RECIPE),
    ("inception-resnet-v2", f"{_M}:inception_resnet_v2", {}, None, None, 299, 75,
     "Inception-ResNet-v2 (--residual-scale)", SZEGEDY17, (), INCEPTION_RESNET_TASK, RMSPROP_RECIPE),
    *[(f"resnet{d}", f"{_M}:resnet", {"arch": f"resnet{d}"}, p, m, 224, 1,
       f"ResNet-{d} ({'basic' if d < 50 else 'bottleneck'} blocks, --shortcut A|B|C)", HE, (), RESNET_TASK, {})
      for d, p, m in [(18, 11_700_000, 1.8e9), (34, 21_800_000, 3.6e9), (50, 25_500_000, 3.8e9),
                      (101, 44_500_000, 7.6e9), (152, 60_200_000, 11.3e9)]],
    *[(f"resnet{d}-v2", f"{_M}:timm_model", {"arch": f"resnetv2_{d}"}, p, None, 224, 1,
       f"Pre-activation ResNet-{d} (BN-ReLU-conv, identity paths)", HE_V2, (f"preact-resnet{d}",), TASK, {})
      for d, p in [(18, 11_700_000), (34, 21_800_000), (50, 25_500_000), (101, 44_500_000), (152, 60_200_000)]],
    ("resnext50-32x4d", f"{_M}:torchvision_model", {"arch": "resnext50_32x4d"}, 25_000_000, 4.2e9, 224, 1,
     "ResNeXt-50, cardinality 32, bottleneck width 4", XIE, (), TASK, {}),
    ("resnext101-32x8d", f"{_M}:torchvision_model", {"arch": "resnext101_32x8d"}, 88_800_000, 16.5e9, 224, 1,
     "ResNeXt-101, cardinality 32, bottleneck width 8", MAHAJAN, (), TASK, {}),
    *[(f"densenet{d}", f"{_M}:densenet", {"blocks": b}, p, m, 224, 29,
       f"DenseNet-BC-{d}, growth rate 32", HUANG, (), TASK, {})
      for d, b, p, m in [(121, (6, 12, 24, 16), 8_000_000, 2.9e9), (169, (6, 12, 32, 32), 14_100_000, None),
                         (201, (6, 12, 48, 32), 20_000_000, None), (264, (6, 12, 64, 48), 33_300_000, None)]],
]


def recipe(min_img_size: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """CLASSIFY_RECIPE with a family's overrides, at an image size the network accepts."""
    out = {**CLASSIFY_RECIPE, **overrides}
    out["img_size"] = max(int(out.get("img_size", min_img_size)), min_img_size)
    return out


@hookimpl
def register_models(register):
    for (name, build, kwargs, params, macs, size, min_size, description, paper, aliases, task,
         overrides) in MODELS:
        register(ModelSpec(name=name, task="classify", build=build, task_class=task, build_kwargs=kwargs,
                           paper_params=params, paper_macs=macs, img_size=size, min_img_size=min_size,
                           description=description, paper=paper, aliases=aliases,
                           default_data="synthetic:textures", defaults=recipe(min_size, overrides)))


@hookimpl
def register_losses(register):
    register("cross_entropy", "cnnkit.plugins.classify.losses:ClassificationLoss")
