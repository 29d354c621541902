"""The published ImageNet weights of the classifiers we register (torchvision's and timm's files),
as a table the plugin registers; URLs, hash prefixes and sizes come from torchvision's and timm's
own metadata (``torchvision.models.get_model_weights``, ``timm.models.get_pretrained_cfg``)."""

from __future__ import annotations

import re
from typing import Any

from cnnkit.api import WeightsSpec

TV = "https://download.pytorch.org/models/"
TV_LICENSE = "BSD-3-Clause (torchvision); ImageNet-1k terms apply"
HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
B = {"shortcut": "B"}
V15 = {"shortcut": "B", "stride_in_1x1": False}  # torchvision's ResNet "v1.5": stride on the 3x3
GOOGLENET = ("cnnkit's googlenet is the paper's network (LRN, no batch norm, 5x5 branches); torchvision's "
             "weights are for its batch-normalised variant with 3x3 branches")


def tv(name: str, model: str, file: str, mb: float, variant: str, **kw: Any) -> WeightsSpec:
    """A torchvision file: its name carries the first hex digits of its SHA-256."""
    return WeightsSpec(name=name, model=model, file=file, url=TV + file, hash_prefix=file.rsplit("-", 1)[1][:-4],
                       size=round(mb * 1000) * 1000, license=TV_LICENSE, variant=variant, **kw)


def densenet_keys(state: dict[str, Any]) -> dict[str, Any]:
    """torchvision's published DenseNet files name ``norm.1``/``conv.2``; the modules are ``norm1``/``conv2``
    (the rename torchvision's own loader does)."""
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    return {(m.group(1) + m.group(2) if (m := pattern.match(k)) else k): v for k, v in state.items()}


def timm(name: str, model: str, hub_id: str, variant: str, **kw: Any) -> WeightsSpec:
    """A timm file on the Hugging Face hub (safetensors). Its SHA-256 is not in timm's metadata."""
    return WeightsSpec(name=name, model=model, file=f"{hub_id}.safetensors", url=HF.format(hub_id),
                       format="safetensors", license="apache-2.0 (timm pretrained_cfg)", variant=variant, **kw)


WEIGHTS: list[WeightsSpec] = [
    tv("alexnet", "alexnet", "alexnet-owt-7be5be79.pth", 233.087, "torchvision AlexNet (one weird trick)"),
    *[tv(f"vgg{d}", f"vgg-{c}", f"vgg{d}-{h}.pth", mb, f"VGG configuration {c.upper()}",
         options={"batch_norm": False})
      for d, c, h, mb in [(11, "a", "8a719046", 506.84), (13, "b", "19584684", 507.545),
                          (16, "d", "397923af", 527.796), (19, "e", "dcbb9e9d", 548.051)]],
    *[tv(f"vgg{d}-bn", f"vgg-{c}", f"vgg{d}_bn-{h}.pth", mb, f"VGG configuration {c.upper()} with batch norm",
         options={"batch_norm": True})
      for d, c, h, mb in [(11, "a", "6002323d", 506.881), (13, "b", "abd245e5", 507.59),
                          (16, "d", "6c64b313", 527.866), (19, "e", "c79401a0", 548.143)]],
    tv("googlenet", "googlenet", "googlenet-1378be20.pth", 49.731, "torchvision GoogLeNet (batch norm)",
       mismatch=GOOGLENET),
    tv("inception-v3", "inception-v3", "inception_v3_google-0cc3c7bd.pth", 103.903,
       "torchvision Inception3 (Google's weights; trained on inputs scaled to [-1, 1])"),
    *[tv(f"resnet{d}", f"resnet{d}", f"resnet{d}-{h}.pth", mb,
         "ResNet v1.5 (stride on the 3x3), projection shortcuts" if d >= 50 else "ResNet, projection shortcuts",
         options=V15 if d >= 50 else B)
      for d, h, mb in [(18, "f37072fd", 44.661), (34, "b627a593", 83.275), (50, "0676ba61", 97.781),
                       (101, "63fe2227", 170.511), (152, "394f9c45", 230.434)]],
    *[tv(f"resnet{d}.v2", f"resnet{d}", f"resnet{d}-{h}.pth", mb,
         "ResNet v1.5 (stride on the 3x3), torchvision's second recipe (IMAGENET1K_V2)", options=V15)
      for d, h, mb in [(50, "11ad3fa6", 97.79), (101, "cd907fc2", 170.53), (152, "f82ba261", 230.474)]],
    tv("resnext50-32x4d", "resnext50-32x4d", "resnext50_32x4d-7cdf4587.pth", 95.789, "ResNeXt-50 32x4d"),
    tv("resnext101-32x8d", "resnext101-32x8d", "resnext101_32x8d-8ba56ff5.pth", 339.586, "ResNeXt-101 32x8d"),
    *[tv(f"densenet{d}", f"densenet{d}", f"densenet{d}-{h}.pth", mb, f"DenseNet-BC-{d}, k=32",
         convert="cnnkit.plugins.classify.pretrained:densenet_keys")
      for d, h, mb in [(121, "a639ec97", 30.845), (169, "b2777c0a", 54.708), (201, "c1103571", 77.373)]],
    timm("inception-v4", "inception-v4", "inception_v4.tf_in1k", "timm inception_v4 (TF weights)"),
    timm("inception-resnet-v2", "inception-resnet-v2", "inception_resnet_v2.tf_in1k",
         "timm inception_resnet_v2 (TF weights, per-grid residual scales)", options={"residual_scale": None}),
]
