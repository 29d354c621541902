"""The published ImageNet weights of the classifiers we register (torchvision's and timm's files),
as a table the plugin registers; URLs, hash prefixes and sizes come from torchvision's and timm's
own metadata (``torchvision.models.get_model_weights``, ``timm.models.get_pretrained_cfg``)."""

from __future__ import annotations

import math
import re
from typing import Any

from cnnkit.api import HALF, WeightsSpec

TV = "https://download.pytorch.org/models/"
TV_LICENSE = "BSD-3-Clause (torchvision); ImageNet-1k terms apply"
HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
B = {"shortcut": "B"}
V15 = {"shortcut": "B", "stride_in_1x1": False}  # torchvision's ResNet "v1.5": stride on the 3x3
GOOGLENET = ("cnnkit's googlenet is the paper's network (LRN, no batch norm, 5x5 branches); torchvision's "
             "weights are for its batch-normalised variant with 3x3 branches")


def tv(name: str, model: str, file: str, variant: str, **kw: Any) -> WeightsSpec:
    """A torchvision file: its name carries the first hex digits of its SHA-256 (torchvision states
    its size only in MiB, so none is recorded). Evaluation as ``weights.transforms()`` does: resize
    the short side to 256 (bilinear), centre crop 224, ImageNet mean/std, unless ``kw`` says other."""
    return WeightsSpec(name=name, model=model, file=file, url=TV + file, hash_prefix=file.rsplit("-", 1)[1][:-4],
                       license=TV_LICENSE, variant=variant, classes="imagenet", **kw)


def densenet_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet files name ``norm.1``/``conv.2``; the modules are ``norm1``/``conv2``
    (the rename torchvision's own loader does)."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                         r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    return {(m.group(1) + m.group(2) if (m := pattern.match(k)) else k): v for k, v in state.items()}


def timm(name: str, model: str, hub_id: str, variant: str, crop_pct: float, **kw: Any) -> WeightsSpec:
    """A timm file on the Hugging Face hub (safetensors); its SHA-256 and size are not in timm's
    metadata. Google's TF weights: inputs in [-1, 1] (mean = std = 0.5), bicubic resize to
    ``floor(299 / crop_pct)``, centre crop 299 (timm's ``resolve_data_config``)."""
    return WeightsSpec(name=name, model=model, file=f"{hub_id}.safetensors", url=HF.format(hub_id),
                       format="safetensors", license="apache-2.0 (timm pretrained_cfg)", variant=variant,
                       classes="imagenet", mean=HALF, std=HALF, resize=math.floor(299 / crop_pct), crop=299,
                       interpolation="bicubic", **kw)


WEIGHTS: list[WeightsSpec] = [
    tv("alexnet", "alexnet", "alexnet-owt-7be5be79.pth", "torchvision AlexNet (one weird trick)"),
    *[tv(f"vgg{d}", f"vgg-{c}", f"vgg{d}-{h}.pth", f"VGG configuration {c.upper()}", options={"batch_norm": False})
      for d, c, h in [(11, "a", "8a719046"), (13, "b", "19584684"), (16, "d", "397923af"), (19, "e", "dcbb9e9d")]],
    *[tv(f"vgg{d}-bn", f"vgg-{c}", f"vgg{d}_bn-{h}.pth", f"VGG configuration {c.upper()} with batch norm",
         options={"batch_norm": True})
      for d, c, h in [(11, "a", "6002323d"), (13, "b", "abd245e5"), (16, "d", "6c64b313"), (19, "e", "c79401a0")]],
    tv("googlenet", "googlenet", "googlenet-1378be20.pth", "torchvision GoogLeNet (batch norm)", mismatch=GOOGLENET),
    # torchvision's Inception3 maps ImageNet-normalised inputs to (x - 0.5) / 0.5 (transform_input=True)
    tv("inception-v3", "inception-v3", "inception_v3_google-0cc3c7bd.pth",
       "torchvision Inception3 (Google's weights; trained on inputs scaled to [-1, 1])",
       options={"aux_bn": False}, mean=HALF, std=HALF, resize=342, crop=299),
    *[tv(f"resnet{d}", f"resnet{d}", f"resnet{d}-{h}.pth",
         "ResNet v1.5 (stride on the 3x3), projection shortcuts" if d >= 50 else "ResNet, projection shortcuts",
         options=V15 if d >= 50 else B)
      for d, h in [(18, "f37072fd"), (34, "b627a593"), (50, "0676ba61"), (101, "63fe2227"), (152, "394f9c45")]],
    *[tv(f"resnet{d}.v2", f"resnet{d}", f"resnet{d}-{h}.pth",
         "ResNet v1.5 (stride on the 3x3), torchvision's second recipe (IMAGENET1K_V2)", options=V15, resize=232)
      for d, h in [(50, "11ad3fa6"), (101, "cd907fc2"), (152, "f82ba261")]],
    tv("resnext50-32x4d", "resnext50-32x4d", "resnext50_32x4d-7cdf4587.pth", "ResNeXt-50 32x4d"),
    tv("resnext101-32x8d", "resnext101-32x8d", "resnext101_32x8d-8ba56ff5.pth", "ResNeXt-101 32x8d"),
    *[tv(f"densenet{d}", f"densenet{d}", f"densenet{d}-{h}.pth", f"DenseNet-BC-{d}, k=32",
         convert="cnnkit.plugins.classify.pretrained:densenet_keys")
      for d, h in [(121, "a639ec97"), (169, "b2777c0a"), (201, "c1103571")]],
    timm("inception-v4", "inception-v4", "inception_v4.tf_in1k", "timm inception_v4 (TF weights)", 0.875),
    timm("inception-resnet-v2", "inception-resnet-v2", "inception_resnet_v2.tf_in1k",
         "timm inception_resnet_v2 (TF weights, per-grid residual scales)", 0.8975, options={"residual_scale": None}),
]
