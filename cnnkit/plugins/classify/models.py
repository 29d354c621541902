"""Classification networks: torchvision/timm builders where they build exactly the paper's network,
small adjustments where they do not (ResNet v1 strides, shortcut options), and AlexNet/VGG
variants written from the papers. GoogLeNet and Inception-ResNet-v1 live in their own modules."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torchvision
from torch import nn

from cnnkit.api import CnnkitError


# ------------------------------------------------------------------------- the backbone contract
# Every classifier here exposes ``forward_features(x)`` and ``feature_channels`` and, built with
# ``num_classes=0``, carries no classifier (cnnkit.core.models.backbone). torchvision's classes get them
# from the small subclasses below (same modules, same state dict keys).
class ResNet(torchvision.models.ResNet):
    head = "fc"

    @property
    def feature_channels(self) -> int:
        return [m for m in self.layer4.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class VGG(torchvision.models.VGG):
    head = "classifier"

    @property
    def feature_channels(self) -> int:
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class AlexNet(torchvision.models.AlexNet):
    head = "classifier"
    feature_channels = 256

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DenseNet(torchvision.models.DenseNet):
    head = "classifier"

    @property
    def feature_channels(self) -> int:
        return self.features[-1].num_features  # norm5

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.features(x))


CONTRACT = {cls.__bases__[0]: cls for cls in (ResNet, VGG, AlexNet, DenseNet)}


def with_contract(model: nn.Module, num_classes: int) -> nn.Module:
    """Give a torchvision classifier the backbone contract; ``num_classes=0`` drops its head."""
    model.__class__ = CONTRACT[type(model)]
    if num_classes == 0:
        setattr(model, model.head, nn.Identity())
    return model


class SequentialClassifier(nn.Sequential):
    """A classifier written as one ``nn.Sequential``: the children up to ``trunk`` are the
    backbone; ``num_classes=0`` leaves the rest out."""

    def __init__(self, layers: list[tuple[str, nn.Module]], trunk: str, channels: int, num_classes: int) -> None:
        end = [name for name, _ in layers].index(trunk) + 1
        super().__init__(OrderedDict(layers if num_classes else layers[:end]))
        self.trunk, self.feature_channels = trunk, channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            x = module(x)
            if name == self.trunk:
                break
        return x


def torchvision_model(*, arch: str, num_classes: int = 1000, weights: Any = None, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(arch)`` with ``weights=None`` unless the caller passes a
    weights enum (downloads only happen when a user asks for them)."""
    model = torchvision.models.get_model(arch, weights=weights, num_classes=max(num_classes, 1), **kwargs)
    return with_contract(model, num_classes) if type(model) in CONTRACT else model


def timm_model(*, arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, pretrained=False)``: never downloads weights. timm models
    already have ``forward_features``; ``feature_channels`` is their ``num_features``."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    model.feature_channels = model.num_features
    return model


# ---------------------------------------------------------------------------------------- AlexNet
def paper_lrn() -> nn.LocalResponseNorm:
    """Krizhevsky et al.'s response normalisation: b = a / (k + alpha * sum_{n neighbours} a^2)^beta
    with k=2, n=5, alpha=1e-4, beta=0.75. PyTorch divides alpha by n, so it gets alpha*n."""
    return nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


INITS = ("torch", "paper")


def paper_init(model: nn.Module, ones: tuple[str, ...] = ()) -> None:
    """The papers' initialisation: every conv and FC weight from N(0, 0.01), biases 0, except the
    biases of the layers named in ``ones`` (AlexNet: conv2, conv4, conv5, fc6, fc7), which are 1."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 1.0 if name.rsplit(".", 1)[-1] in ones else 0.0)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise CnnkitError(f"--init {init}: choose {' or '.join(INITS)}")


def alexnet_lrn(*, num_classes: int = 1000, dropout: float = 0.5, init: str = "torch") -> nn.Module:
    """AlexNet as in the 2012 paper (one tower, i.e. ungrouped): 227x227 input, ReLU, LRN after conv1
    and conv2, overlapping 3x3/2 max-pooling, dropout 0.5 on fc6/fc7. 62,378,344 parameters.
    Inputs other than 227 are average-pooled to pool5's 6x6 (a no-op at 227). ``init="paper"``:
    N(0, 0.01) weights, biases 1 in conv2, conv4, conv5, fc6 and fc7 (sec. 5); ``torch``: PyTorch's
    default layer initialisation."""
    _check_init(init)

    def stage(i: int, conv: nn.Conv2d, lrn: bool = False, pool: bool = False) -> list[tuple[str, nn.Module]]:
        return ([(f"conv{i}", conv), (f"relu{i}", nn.ReLU(inplace=True))] + ([(f"norm{i}", paper_lrn())] if lrn else [])
                + ([(f"pool{i}", nn.MaxPool2d(3, 2))] if pool else []))

    features = nn.Sequential(OrderedDict(
        stage(1, nn.Conv2d(3, 96, 11, stride=4), lrn=True, pool=True)
        + stage(2, nn.Conv2d(96, 256, 5, padding=2), lrn=True, pool=True)
        + stage(3, nn.Conv2d(256, 384, 3, padding=1)) + stage(4, nn.Conv2d(384, 384, 3, padding=1))
        + stage(5, nn.Conv2d(384, 256, 3, padding=1), pool=True)))
    classifier = nn.Sequential(OrderedDict([
        ("fc6", nn.Linear(256 * 6 * 6, 4096)), ("relu6", nn.ReLU(inplace=True)), ("drop6", nn.Dropout(dropout)),
        ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU(inplace=True)), ("drop7", nn.Dropout(dropout)),
        ("fc8", nn.Linear(4096, num_classes)),
    ]))
    model = SequentialClassifier([("features", features), ("avgpool", nn.AdaptiveAvgPool2d(6)),
                                  ("flatten", nn.Flatten()), ("classifier", classifier)], "features", 256, num_classes)
    if init == "paper":
        paper_init(model, ("conv2", "conv4", "conv5", "fc6", "fc7"))
    return model


# -------------------------------------------------------------------------------------------- VGG
# Table 1 of Simonyan & Zisserman (2015): channels of each 3x3 conv, "1x1:C" a 1x1 conv, "M" max-pool,
# "LRN" local response normalisation.
VGG_CONFIGS: dict[str, Sequence[int | str]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "A-LRN": (64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, "1x1:256", "M", 512, 512, "1x1:512", "M",
          512, 512, "1x1:512", "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
}


def vgg(*, config: str, num_classes: int = 1000, dropout: float = 0.5, batch_norm: bool = False,
        init: str = "torch") -> nn.Module:
    """VGG configuration A, A-LRN, B, C, D or E (Table 1), on torchvision's ``VGG`` classifier
    (fc 4096-4096-classes with dropout 0.5). The LRN of A-LRN is AlexNet's (k=2, n=5, ...).
    ``batch_norm`` (not in the paper): BN after each conv, as torchvision's ``vgg*_bn``.
    ``init="paper"``: N(0, 0.01) weights, zero biases (sec. 3.1; the paper trains A so and starts
    deeper nets from it); ``torch``: torchvision's (Kaiming-normal convs, N(0, 0.01) FCs)."""
    _check_init(init)
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG_CONFIGS[config]:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif item == "LRN":
            layers.append(paper_lrn())
        else:
            size, out = (1, int(item[4:])) if isinstance(item, str) else (3, item)
            layers += [nn.Conv2d(channels, out, size, padding=size // 2),
                       *([nn.BatchNorm2d(out)] if batch_norm else []), nn.ReLU(inplace=True)]
            channels = out
    model = torchvision.models.VGG(nn.Sequential(*layers), num_classes=max(num_classes, 1), init_weights=True,
                                   dropout=dropout)
    if init == "paper":
        paper_init(model)
    return with_contract(model, num_classes)


# ----------------------------------------------------------------------------------------- ResNet
class PadShortcut(nn.Module):
    """Option A shortcut: identity, subsampled by ``stride`` and zero-padded to ``out_channels``."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def resnet(*, arch: str, num_classes: int = 1000, shortcut: str = "B", stride_in_1x1: bool = True) -> nn.Module:
    """torchvision's ResNet/ResNeXt with the paper's choices:

    - ``shortcut`` (He et al. 2016, sec. 4.1): "A" zero-padding identity shortcuts (parameter-free),
      "B" projections only where dimensions grow (torchvision's), "C" projections everywhere.
    - ``stride_in_1x1``: the original ResNet downsamples in the bottleneck's first 1x1 conv (giving
      the paper's 3.8/7.6/11.3 G multiply-adds); torchvision ("v1.5", as in ResNeXt) uses the 3x3.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    shortcut = str(shortcut).upper()
    if shortcut not in ("A", "B", "C"):
        raise CnnkitError(f"--shortcut must be A, B or C (He et al. 2016, sec. 4.1), not '{shortcut}'")
    model = torchvision_model(arch=arch, num_classes=num_classes)
    for block in model.modules():
        if not isinstance(block, (BasicBlock, Bottleneck)):
            continue
        last = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        stride = block.stride
        if isinstance(block, Bottleneck) and stride_in_1x1 and stride > 1:
            block.conv1.stride, block.conv2.stride = (stride, stride), (1, 1)
        if shortcut == "A" and block.downsample is not None:
            block.downsample = PadShortcut(last.num_features, stride)
        elif shortcut == "C" and block.downsample is None:
            block.downsample = _projection(block.conv1.in_channels, last.num_features, stride)
    return model


# --------------------------------------------------------------------------------------- DenseNet
def densenet(*, blocks: tuple[int, ...], num_classes: int = 1000, growth_rate: int = 32) -> nn.Module:
    """DenseNet-BC (Huang et al. 2017, Table 1): growth rate k=32, BN-ReLU-Conv, 1x1 bottlenecks of
    4k channels, transitions with compression 0.5, 2k initial channels; ``blocks`` layers per block
    (121: 6,12,24,16; 169: 6,12,32,32; 201: 6,12,48,32; 264: 6,12,64,48)."""
    model = torchvision.models.DenseNet(growth_rate=growth_rate, block_config=blocks,
                                        num_init_features=2 * growth_rate, bn_size=4,
                                        num_classes=max(num_classes, 1))
    return with_contract(model, num_classes)


# -------------------------------------------------------------------------------------- Inception
def bn_auxiliary(in_channels: int, num_classes: int) -> nn.Module:
    """Szegedy et al. 2016, Table 3 "BN-auxiliary": the auxiliary classifier whose fully connected
    layer is batch-normalised too (``BN(Wx)``, so no bias), not just its convolutions."""
    from torchvision.models.inception import InceptionAux

    aux = InceptionAux(in_channels, num_classes)
    aux.fc = nn.Sequential(nn.Linear(768, num_classes, bias=False), nn.BatchNorm1d(num_classes))
    aux.fc[0].stddev = 0.001  # torchvision's initialisation of the aux FC
    return aux


def inception_v3(*, num_classes: int = 1000, aux_logits: bool = True, aux_bn: bool = True) -> nn.Module:
    """Inception-v3 as Google released it, not the paper's Table 1: torchvision's ``Inception3``,
    the graph of Google's published weights. It differs from Table 1 in that its 35x35 modules
    keep a 5x5 branch (beside the two 3x3s), the 17x17 grid has 4 modules (Table 1: 5) and the
    stem ends with a 1x1-80 and a 3x3-192 convolution (Table 1: three 3x3s to 288 channels).
    Table 1 gives no per-module filter counts, so no network follows it exactly. From the paper:
    the factorised 3x3 stem, 1x7/7x1 and expanded 1x3/3x1 modules, the efficient grid reductions,
    and Table 3's last row, the BN-auxiliary classifier on the 17x17 grid (convolutions and FC
    batch-normalised; ``aux_bn=False``: torchvision's auxiliary FC with a bias and no BN, as the
    published weights have)."""
    from torchvision.models.inception import (
        BasicConv2d,
        Inception3,
        InceptionA,
        InceptionAux,
        InceptionB,
        InceptionC,
        InceptionD,
        InceptionE,
    )

    blocks = [BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
              bn_auxiliary if aux_bn else InceptionAux]
    return Inception3(num_classes=num_classes, aux_logits=aux_logits, inception_blocks=blocks, init_weights=True)


def inception_v2(*, num_classes: int = 1000, aux_logits: bool = True) -> nn.Module:
    """Inception-v2 of Szegedy et al. 2016 (Table 3, first row: v3 before the factorised 7x7 and
    the BN-auxiliary) built on the same released graph as :func:`inception_v3` (torchvision's
    ``Inception3``, not Table 1): the stem starts with one unfactorised 7x7/2 convolution instead
    of three 3x3s, and the auxiliary classifier's FC layer is not batch-normalised (its
    convolutions are, in both versions). (RMSProp and label smoothing are the recipe's.)"""
    from torchvision.models.inception import BasicConv2d, Inception3

    model = Inception3(num_classes=num_classes, aux_logits=aux_logits, init_weights=True)
    model.Conv2d_1a_3x3 = BasicConv2d(3, 64, kernel_size=7, stride=2)  # 299 -> 147x147x64, as v3's three 3x3s
    model.Conv2d_2a_3x3 = nn.Identity()
    model.Conv2d_2b_3x3 = nn.Identity()
    return model


def inception_resnet_v2(*, num_classes: int = 1000, residual_scale: float | None = None) -> nn.Module:
    """Inception-ResNet-v2 (Szegedy et al. 2017) as timm builds it; ``residual_scale`` (paper:
    0.1-0.3) replaces timm's per-block scales 0.17 (35x35), 0.10 (17x17), 0.20 (8x8)."""
    model = timm_model(arch="inception_resnet_v2", num_classes=num_classes, drop_rate=0.2)
    if residual_scale is not None:
        set_residual_scale(model, residual_scale)
    return model


def set_residual_scale(model: nn.Module, scale: float) -> None:
    """Scale every Inception-ResNet residual branch by ``scale`` before it is added."""
    if not 0.0 < float(scale) <= 1.0:
        raise CnnkitError(f"--residual-scale must be in (0, 1] (the paper uses 0.1-0.3), not {scale}")
    for module in model.modules():
        if hasattr(module, "scale") and isinstance(module.scale, float):
            module.scale = float(scale)
