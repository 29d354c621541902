"""The frozen VGG-19 feature extractor that style transfer measures images with.

Layers are named as in the paper (``conv4_2`` is the ReLU output of the second convolution of
block 4). Only the layers up to the deepest one asked for are kept.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.core.checkpoint import load_state_dict, load_weights_into
from cnnkit.core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.core.errors import CnnkitError

BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block in VGG-19 (configuration E)


def _layer_index() -> dict[str, int]:
    """``conv{b}_{i}`` -> index of its ReLU in ``torchvision.models.vgg19().features``."""
    index, names = 0, {}
    for block, convs in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            names[f"conv{block}_{i}"] = index + 1
            index += 2
        index += 1  # max pooling
    return names


LAYERS = _layer_index()


def check_layers(names: list[str]) -> None:
    bad = [n for n in names if n not in LAYERS]
    if bad:
        raise CnnkitError(f"unknown VGG-19 layer(s) {', '.join(bad)} (use conv1_1 ... conv5_4)")


IMAGENET = "vgg19-nst"  # the registered weights (cnnkit weights list)


def resolve_weights(weights: str) -> str:
    """``PATH``, ``random``, or "" (the ImageNet VGG-19: from torch's cache, downloaded on first use)."""
    if weights:
        return weights
    from cnnkit.core.plugins import load_plugins
    from cnnkit.core.registry import weights as published
    from cnnkit.core.weights import fetch

    load_plugins()
    try:
        return str(fetch(published.get(IMAGENET)))
    except CnnkitError as exc:
        raise CnnkitError(f"{exc}; or pass --weights PATH (a VGG-19 state dict) or --weights random") from None


class VGGFeatures(nn.Module):
    """Frozen VGG-19 ``features`` up to the deepest requested layer; ``forward`` returns a dict.

    Inputs are RGB images in [0, 1]; ImageNet normalisation happens inside.
    """

    def __init__(self, layers: list[str], weights: str = "", seed: int = 0) -> None:
        super().__init__()
        check_layers(layers)
        source = resolve_weights(weights)
        import torchvision

        with torch.device("meta"):  # the classifier is never materialised
            full = torchvision.models.vgg19(weights=None)
        cut = max(LAYERS[n] for n in layers) + 1
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
            load_weights_into(self.body, state, "vgg19 features", source)
        self.at = {LAYERS[n]: n for n in layers}
        self.min_size = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in self.body)  # smallest side that fits
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.at:
                out[self.at[i]] = x
        return out
