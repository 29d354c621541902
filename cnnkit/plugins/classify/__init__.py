"""Image classification: the ImageNet case studies (hook implementations only, nothing heavy)."""

from __future__ import annotations

from typing import Any

from cnnkit.api import ModelSpec, hookimpl

PKG = "cnnkit.plugins.classify"

# The training recipe every classifier starts from (flags and --config override it).
CLASSIFY_RECIPE: dict[str, Any] = {
    "epochs": 15, "img_size": 64, "batch_size": 32, "optimizer": "adam", "lr": 1e-3,
    "weight_decay": 1e-4, "scheduler": "cosine",
}
# Inception-v3 (Szegedy et al. 2016, sec. 8): RMSProp (decay 0.9, eps 1.0) in TensorFlow's form (eps
# inside the square root), lr 0.045 decayed by 0.94 every two epochs, gradient clipping at 2.0, label
# smoothing 0.1. Inception-v4 keeps the optimiser.
RMSPROP_RECIPE: dict[str, Any] = {"optimizer": "rmsprop-tf", "lr": 0.045, "scheduler": "step", "step_size": 2,
                                  "gamma": 0.94, "grad_clip": 2.0}
INCEPTION_V3_RECIPE: dict[str, Any] = {**RMSPROP_RECIPE, "label_smoothing": 0.1}

# The papers' recipes (`cnnkit train MODEL --recipe paper`; `cnnkit models --recipe MODEL` shows them beside
# the default). Iteration counts are given in epochs of ImageNet's 1.28M training images.
SGD = {"optimizer": "sgd", "momentum": 0.9}
ALEXNET_PAPER: dict[str, Any] = {
    **SGD, "epochs": 90, "batch_size": 128, "img_size": 224, "lr": 0.01, "weight_decay": 5e-4, "scheduler": "plateau",
    "gamma": 0.1, "options": {"augment": "alexnet"},
    "about": "Krizhevsky et al. 2012 sec. 4.1, 5: SGD batch 128, momentum 0.9, weight decay 5e-4, lr 0.01 divided "
             "by 10 when the validation error stops improving (3 times in ~90 epochs); 256x256 images, random 224 "
             "crops, flips, PCA colour noise (std 0.1). alexnet-lrn: 227 px (the sizes of its layers) and "
             "N(0, 0.01) weights, biases 1 in conv2/4/5 and fc6/7 (--init paper)."}
VGG_PAPER: dict[str, Any] = {
    **SGD, "epochs": 74, "batch_size": 256, "img_size": 224, "lr": 0.01, "weight_decay": 5e-4, "scheduler": "plateau",
    "gamma": 0.1, "options": {"augment": "vgg", "init": "paper"},
    "about": "Simonyan & Zisserman 2015 sec. 3.1: SGD batch 256, momentum 0.9, weight decay 5e-4, lr 0.01 divided "
             "by 10 when the validation accuracy stops improving (3 times), 370K iterations (74 epochs); 224 crops "
             "of images rescaled to a random shorter side in [256, 512], flips, RGB colour shift; N(0, 0.01) "
             "weights (--init paper: the paper trains net A so and starts B-E from its layers)."}
GOOGLENET_PAPER: dict[str, Any] = {
    **SGD, "epochs": 250, "batch_size": 32, "img_size": 224, "lr": 0.01, "weight_decay": 2e-4, "scheduler": "step",
    "step_size": 8, "gamma": 0.96, "options": {"augment": "inception"},
    "about": "Szegedy et al. 2015 sec. 6: SGD momentum 0.9, lr decreased by 4% every 8 epochs; crops of 8-100% of "
             "the area at aspect ratios 3/4-4/3, flips, photometric distortions; auxiliary losses x 0.3. The paper "
             "gives no lr, weight decay, batch or length: Caffe's bvlc_googlenet solver's (lr 0.01, weight decay "
             "2e-4, batch 32, 10M iterations = 250 epochs)."}
# Szegedy et al. 2016 sec. 8: lr 0.045 x 0.94 every 2 epochs, gradient clipping 2.0, batch 32, 100 epochs; weight
# decay and augmentation are not in the papers (TF-slim's 4e-5, Inception crops)
INCEPTION_SCHEDULE: dict[str, Any] = {
    "epochs": 100, "batch_size": 32, "img_size": 299, "lr": 0.045, "momentum": 0.9, "weight_decay": 4e-5,
    "scheduler": "step", "step_size": 2, "gamma": 0.94, "grad_clip": 2.0, "options": {"augment": "inception"}}
INCEPTION_V2_PAPER: dict[str, Any] = {
    **INCEPTION_SCHEDULE, "optimizer": "sgd",
    "about": "Szegedy et al. 2016 sec. 8 for Table 3's first row (before RMSProp and label smoothing): momentum "
             "0.9, lr 0.045 x 0.94 every 2 epochs, gradient clipping 2.0, batch 32, 100 epochs, 299 px. Weight decay "
             "(4e-5) and the Inception crops are TF-slim's: the paper gives neither."}
INCEPTION_V3_PAPER: dict[str, Any] = {
    **INCEPTION_SCHEDULE, "optimizer": "rmsprop-tf", "label_smoothing": 0.1,
    "about": "Szegedy et al. 2016 sec. 7-8: RMSProp (decay 0.9, epsilon 1.0, TensorFlow's form), lr 0.045 x 0.94 "
             "every 2 epochs, gradient clipping 2.0, label smoothing 0.1, batch 32, 100 epochs, 299 px. Weight "
             "decay (4e-5) and the Inception crops are TF-slim's: the paper gives neither."}
INCEPTION_V4_PAPER: dict[str, Any] = {
    **INCEPTION_SCHEDULE, "optimizer": "rmsprop-tf",
    "about": "Szegedy et al. 2017 sec. 4: RMSProp (decay 0.9, epsilon 1.0), lr 0.045 x 0.94 every 2 epochs, 299 px. "
             "Batch 32, 100 epochs and gradient clipping 2.0 are Inception-v3's (this paper states none); weight "
             "decay (4e-5) and the Inception crops TF-slim's."}
RESNET_PAPER: dict[str, Any] = {
    **SGD, "epochs": 120, "batch_size": 256, "img_size": 224, "lr": 0.1, "weight_decay": 1e-4, "scheduler": "plateau",
    "gamma": 0.1, "options": {"augment": "resnet"},
    "about": "He et al. 2016 sec. 3.4 (ImageNet): SGD batch 256, momentum 0.9, weight decay 1e-4, lr 0.1 divided by "
             "10 when the error plateaus, up to 60e4 iterations (120 epochs), no dropout; shorter side a random "
             "256-480, 224 crops, flips, PCA colour noise. (The /10 at 32k and 48k iterations of sec. 4.2 is the "
             "recipe of its CIFAR-10 networks, 20-110 layers on 32 px, not of these.)"}
RESNET_V2_PAPER: dict[str, Any] = {
    **RESNET_PAPER, "about": "ResNet's ImageNet recipe (He et al. 2016a sec. 3.4), which cnnkit uses for the "
                             "pre-activation networks: " + RESNET_PAPER["about"].split(": ", 1)[1]}
RESNEXT_PAPER: dict[str, Any] = {
    **SGD, "epochs": 100, "batch_size": 256, "img_size": 224, "lr": 0.1, "weight_decay": 1e-4,
    "scheduler": "multistep", "milestones": [30, 60, 90], "gamma": 0.1, "options": {"augment": "inception"},
    "about": "Xie et al. 2017 sec. 4: SGD batch 256, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 three "
             "times on fb.resnet.torch's schedule (every 30 epochs), its scale and aspect-ratio crops; the paper "
             "gives no length (100 epochs is cnnkit's). resnext101-32x8d: Mahajan et al. pre-train on 3.5B "
             "Instagram images first, which no recipe here reproduces."}
DENSENET_PAPER: dict[str, Any] = {
    "optimizer": "nesterov", "momentum": 0.9, "epochs": 90, "batch_size": 256, "img_size": 224, "lr": 0.1,
    "weight_decay": 1e-4, "scheduler": "multistep", "milestones": [30, 60], "gamma": 0.1,
    "options": {"augment": "inception"},
    "about": "Huang et al. 2017 sec. 4.2 (ImageNet): SGD with Nesterov momentum 0.9, batch 256, 90 epochs, lr 0.1 "
             "divided by 10 at epochs 30 and 60, weight decay 1e-4; fb.resnet.torch's augmentation (scale and "
             "aspect-ratio crops, flips, colour)."}

KRIZHEVSKY = "Krizhevsky, Sutskever & Hinton 2012, ImageNet classification with deep CNNs"
SIMONYAN = "Simonyan & Zisserman 2015, Very deep convolutional networks (Tables 1, 2)"
SZEGEDY15 = "Szegedy et al. 2015, Going deeper with convolutions (Table 1, sec. 5)"
SZEGEDY16 = "Szegedy et al. 2016, Rethinking the Inception architecture (sec. 6-8; the released graph, not Table 1)"
SZEGEDY17 = "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the impact of residual connections"
HE = "He et al. 2016, Deep residual learning (Table 1); params: torchvision / Xie et al. 2017 Tables 1, 5"
HE_V2 = "He et al. 2016, Identity mappings in deep residual networks (same layers as ResNet-N)"
XIE = "Xie et al. 2017, Aggregated residual transformations (Table 1)"
MAHAJAN = "Mahajan et al. 2018, Exploring the limits of weakly supervised pretraining (Table 1)"
HUANG = "Huang et al. 2017, Densely connected convolutional networks (Table 1); params: reference code"

_M = f"{PKG}.models"


def _cfg(name: str, build: str, *, min_img_size: int, paper_recipe: dict[str, Any],
         recipe: dict[str, Any] | None = None, **kw: Any) -> ModelSpec:
    """One classifier: CLASSIFY_RECIPE with the family's overrides, at an image size the network
    accepts (``min_img_size``: the smallest input it does not shrink to nothing, auxiliary heads
    included), and its paper's recipe."""
    default = {**CLASSIFY_RECIPE, **(recipe or {})}
    default["img_size"] = max(int(default["img_size"]), min_img_size)
    default["about"] = (f"cnnkit's short CPU recipe: {default['optimizer']} lr {default['lr']}, "
                        f"{default['scheduler']}, {default['epochs']} epochs at {default['img_size']} px "
                        "(synthetic textures train in minutes)")
    return ModelSpec(name=name, task="classify", build=build, min_img_size=min_img_size,
                     default_data="synthetic:textures", recipe=default, recipes={"paper": paper_recipe}, **kw)


INIT = {"init": "torch"}  # --init paper: N(0, 0.01) weights (+ AlexNet's biases of 1), the papers'
SHORTCUT = {"shortcut": "B"}  # He et al. 2016 sec. 4.1: A, B or C
RESIDUAL_SCALE = {"residual_scale": None}  # Szegedy et al. 2017 sec. 3.3: 0.1-0.3 (None: per-grid defaults)

MODELS: list[ModelSpec] = [
    _cfg("alexnet-lrn", f"{_M}:alexnet_lrn", options=INIT, paper_params=62_300_000, img_size=227, min_img_size=67,
         paper_recipe={**ALEXNET_PAPER, "img_size": 227, "options": {"augment": "alexnet", "init": "paper"}},
         description="AlexNet from the paper: LRN, overlapping pooling, dropout, ungrouped", paper=KRIZHEVSKY),
    _cfg("alexnet", f"{_M}:torchvision_model", build_kwargs={"arch": "alexnet"}, paper_params=61_100_840,
         paper_recipe=ALEXNET_PAPER,
         paper_macs=0.72e9, min_img_size=63,
         description="AlexNet as torchvision builds it (no LRN, 64-192-384-256-256)",
         paper="Krizhevsky 2014, One weird trick"),
    *[_cfg(f"vgg-{c.lower()}", f"{_M}:vgg", build_kwargs={"config": c}, options={"batch_norm": False, **INIT},
           paper_recipe=VGG_PAPER,
           paper_params=p, paper_macs=m,
           min_img_size=32, description=f"VGG configuration {c}{d}", paper=SIMONYAN, aliases=a)
      for c, p, m, d, a in [("A", 133_000_000, 7.6e9, " (11 layers)", ("vgg11",)),
                            ("A-LRN", 133_000_000, None, " (A + LRN after conv1)", ()),
                            ("B", 133_000_000, None, " (13 layers)", ("vgg13",)),
                            ("C", 134_000_000, None, " (16 layers, 1x1 convs in stages 3-5)", ()),
                            ("D", 138_000_000, 15.5e9, " (16 layers)", ("vgg16",)),
                            ("E", 144_000_000, 19.6e9, " (19 layers)", ("vgg19",))]],
    _cfg("googlenet", f"{PKG}.googlenet:googlenet", paper_params=6_800_000, paper_macs=1.5e9, min_img_size=79,
         paper_recipe=GOOGLENET_PAPER,
         description="GoogLeNet / Inception-v1 with two auxiliary classifiers (training only)", paper=SZEGEDY15,
         aliases=("inception-v1",)),
    _cfg("inception-v2", f"{_M}:inception_v2", img_size=299, min_img_size=299, paper=SZEGEDY16,
         paper_recipe=INCEPTION_V2_PAPER,
         description="Inception-v2 on Google's released v3 graph (not Table 1): 7x7 stem, aux head with BN convs only"),
    _cfg("inception-v3", f"{_M}:inception_v3", paper_params=25_000_000, paper_macs=5.0e9, img_size=299,
         min_img_size=299, options={"aux_bn": True}, recipe=INCEPTION_V3_RECIPE, paper=SZEGEDY16,
         paper_recipe=INCEPTION_V3_PAPER,
         description="Inception-v3 as Google released it (torchvision's Inception3, not Table 1) + BN-auxiliary head"),
    _cfg("inception-v4", f"{_M}:timm_model", build_kwargs={"arch": "inception_v4", "drop_rate": 0.2}, img_size=299,
         min_img_size=75, recipe=RMSPROP_RECIPE, paper=SZEGEDY17, paper_recipe=INCEPTION_V4_PAPER,
         description="Inception-v4: pure Inception, 4/7/3 A/B/C modules"),
    _cfg("inception-resnet-v1", f"{PKG}.inception_resnet:inception_resnet_v1", options=RESIDUAL_SCALE,
         img_size=299, min_img_size=75, recipe=RMSPROP_RECIPE, paper=SZEGEDY17, paper_recipe=INCEPTION_V4_PAPER,
         description="Inception-ResNet-v1 from the paper (--residual-scale)"),
    _cfg("inception-resnet-v2", f"{_M}:inception_resnet_v2", options=RESIDUAL_SCALE, img_size=299,
         min_img_size=75, recipe=RMSPROP_RECIPE, paper=SZEGEDY17, paper_recipe=INCEPTION_V4_PAPER,
         description="Inception-ResNet-v2 (--residual-scale)"),
    *[_cfg(f"resnet{d}", f"{_M}:resnet", build_kwargs={"arch": f"resnet{d}"},
           options={**SHORTCUT, "stride_in_1x1": True} if d >= 50 else SHORTCUT, paper_params=p,
           paper_macs=m, min_img_size=1, paper=HE, paper_recipe=RESNET_PAPER,
           description=f"ResNet-{d} ({'basic' if d < 50 else 'bottleneck'} blocks, --shortcut A|B|C)")
      for d, p, m in [(18, 11_700_000, 1.8e9), (34, 21_800_000, 3.6e9), (50, 25_500_000, 3.8e9),
                      (101, 44_500_000, 7.6e9), (152, 60_200_000, 11.3e9)]],
    *[_cfg(f"resnet{d}-v2", f"{_M}:timm_model", build_kwargs={"arch": f"resnetv2_{d}"}, paper_params=p,
           min_img_size=1, paper=HE_V2, aliases=(f"preact-resnet{d}",), paper_recipe=RESNET_V2_PAPER,
           description=f"Pre-activation ResNet-{d} (BN-ReLU-conv, identity paths)")
      for d, p in [(18, 11_700_000), (34, 21_800_000), (50, 25_500_000), (101, 44_500_000), (152, 60_200_000)]],
    _cfg("resnext50-32x4d", f"{_M}:torchvision_model", build_kwargs={"arch": "resnext50_32x4d"},
         paper_params=25_000_000, paper_macs=4.2e9, min_img_size=1, paper=XIE, paper_recipe=RESNEXT_PAPER,
         description="ResNeXt-50, cardinality 32, bottleneck width 4"),
    _cfg("resnext101-32x8d", f"{_M}:torchvision_model", build_kwargs={"arch": "resnext101_32x8d"},
         paper_params=88_800_000, paper_macs=16.5e9, min_img_size=1, paper=MAHAJAN, paper_recipe=RESNEXT_PAPER,
         description="ResNeXt-101, cardinality 32, bottleneck width 8"),
    *[_cfg(f"densenet{d}", f"{_M}:densenet", build_kwargs={"blocks": b}, paper_params=p, paper_macs=m,
           min_img_size=29, paper=HUANG, description=f"DenseNet-BC-{d}, growth rate 32", paper_recipe=DENSENET_PAPER)
      for d, b, p, m in [(121, (6, 12, 24, 16), 8_000_000, 2.9e9), (169, (6, 12, 32, 32), 14_100_000, None),
                         (201, (6, 12, 48, 32), 20_000_000, None), (264, (6, 12, 64, 48), 33_300_000, None)]],
]


@hookimpl
def register_models(register):
    for spec in MODELS:
        register(spec)


@hookimpl
def register_weights(register):
    from cnnkit.plugins.classify.pretrained import WEIGHTS

    for entry in WEIGHTS:
        register(entry)
