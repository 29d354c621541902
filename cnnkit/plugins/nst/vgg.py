"""The frozen VGG feature extractor that style transfer measures images with: VGG-19 (Gatys et al.)
or VGG-16 (Johnson et al.'s perceptual loss).

Layers are named as in the papers (``conv4_2`` is the ReLU output of the second convolution of
block 4, Johnson's ``relu4_2``). Only the layers up to the deepest one asked for are kept.
Gatys et al. replace max pooling by average pooling (``pooling="avg"``); weights are the same.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cnnkit.api import IMAGENET_MEAN, IMAGENET_STD, CnnkitError, load_state_dict, load_weights_into

BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}  # convolutions per block (configurations D, E)
POOLING = ("avg", "max")


def _layer_index(blocks: tuple[int, ...]) -> dict[str, int]:
    """``conv{b}_{i}`` -> index of its ReLU in ``torchvision.models.vgg*().features``."""
    index, names = 0, {}
    for block, convs in enumerate(blocks, start=1):
        for i in range(1, convs + 1):
            names[f"conv{block}_{i}"] = index + 1
            index += 2
        index += 1  # max pooling
    return names


ARCH_LAYERS = {arch: _layer_index(blocks) for arch, blocks in BLOCKS.items()}
LAYERS = ARCH_LAYERS["vgg19"]


def _check_arch(arch: str) -> None:
    if arch not in BLOCKS:
        raise CnnkitError(f"unknown VGG '{arch}' ({', '.join(BLOCKS)})")


def check_layers(names: list[str], arch: str = "vgg19") -> None:
    _check_arch(arch)
    bad = [n for n in names if n not in ARCH_LAYERS[arch]]
    if bad:
        last = list(ARCH_LAYERS[arch])[-1]
        raise CnnkitError(f"unknown {arch.upper().replace('VGG', 'VGG-')} layer(s) {', '.join(bad)} "
                          f"(use conv1_1 ... {last})")


IMAGENET = {"vgg19": "vgg19-nst", "vgg16": "vgg16-nst"}  # the registered weights (cnnkit weights list)


def resolve_weights(weights: str, arch: str = "vgg19", flag: str = "--weights") -> str:
    """``PATH``, ``random``, or "" (the ImageNet VGG-16/19: from torch's cache, downloaded on first use);
    ``flag`` is the option that gives the weights, named in the hint when the download fails."""
    _check_arch(arch)
    if weights:
        return weights
    from cnnkit.api import fetch_weights as fetch
    from cnnkit.api import load_plugins
    from cnnkit.api import weights as published

    load_plugins()
    name = arch.upper().replace("VGG", "VGG-")
    try:
        return str(fetch(published.get(IMAGENET[arch])))
    except CnnkitError as exc:
        raise CnnkitError(f"{exc}; or pass {flag} PATH (a {name} state dict) or {flag} random") from None


class VGGFeatures(nn.Module):
    """Frozen VGG-16/19 ``features`` up to the deepest requested layer; ``forward`` returns a dict.

    Inputs are RGB images in [0, 1]; ImageNet normalisation happens inside. ``pooling="avg"``
    swaps each 2x2 max pooling for an average pooling (Gatys et al. 2016, section 2).
    """

    def __init__(self, layers: list[str], weights: str = "", seed: int = 0, arch: str = "vgg19",
                 pooling: str = "max") -> None:
        super().__init__()
        check_layers(layers, arch)
        if pooling not in POOLING:
            raise CnnkitError(f"unknown --pooling '{pooling}' ({', '.join(POOLING)})")
        source = resolve_weights(weights, arch)
        import torchvision

        index = ARCH_LAYERS[arch]
        with torch.device("meta"):  # the classifier is never materialised
            full = getattr(torchvision.models, arch)(weights=None)
        cut = max(index[n] for n in layers) + 1
        self.body = full.features[:cut].to_empty(device="cpu")
        if source == "random":
            generator = torch.Generator().manual_seed(seed)
            for m in self.body.modules():
                if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation
                    fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                    with torch.no_grad():
                        m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                        m.bias.zero_()
        else:
            state = load_state_dict(source)
            state = {k.removeprefix("features."): v for k, v in state.items()}
            state = {k: v for k, v in state.items() if k.split(".")[0].isdigit() and int(k.split(".")[0]) < cut}
            load_weights_into(self.body, state, f"{arch} features", source)
        self.arch, self.pooling = arch, "max"
        self._set_pooling(pooling)
        self.at = {index[n]: n for n in layers}
        # the smallest side that fits
        self.min_size = 2 ** sum(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in self.body)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _set_pooling(self, pooling: str) -> None:
        pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
        for i, m in enumerate(self.body):
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                self.body[i] = pool(kernel_size=2, stride=2)
        self.pooling = pooling

    def with_pooling(self, pooling: str) -> "VGGFeatures":
        """This extractor with ``avg`` or ``max`` pooling (sharing the convolution weights)."""
        if pooling not in POOLING:
            raise CnnkitError(f"unknown --pooling '{pooling}' ({', '.join(POOLING)})")
        if pooling == self.pooling:
            return self
        other = copy.copy(self)
        other._modules = dict(self._modules)
        other.body = nn.Sequential(*self.body)
        other._set_pooling(pooling)
        return other

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.at:
                out[self.at[i]] = x
        return out
