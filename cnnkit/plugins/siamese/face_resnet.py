"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module.

The network of dlib's ``dnn_face_recognition_ex.cpp`` (King 2017; 99.38% on LFW): a 7x7/2 conv
stem and 3x3/2 max-pool, then residual stages of 32, 64, 128, 256 and 256 channels (3, 4, 3, 3 and
1 blocks; the first block of every stage after the first halves the resolution), global average
pooling and a 128-d linear layer without bias, trained with dlib's metric loss (a pair of faces is
the same person when their descriptors are less than 0.6 apart). Batch norm is frozen into
per-channel affine layers. Input: 150x150 aligned face chips (see ``align.py``).

Two details follow dlib rather than the usual ResNet: strided convolutions have no padding, and a
down-sampling block adds a 2x2 average-pool of its input, zero-padded to the block's channels and
size (dlib's ``add_prev`` adds tensors of different shapes over their common part).
"""

from __future__ import annotations

from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.api import IMAGENET_MEAN, IMAGENET_STD, CnnkitError
from cnnkit.plugins.siamese.dlib_format import DlibNet, read_dnn

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
CHIP_SIZE = 150


def model_file(name: str) -> Path:
    """A model file shipped by the ``face_recognition_models`` package (found without importing
    it: its ``__init__`` needs ``pkg_resources``)."""
    spec = find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise CnnkitError("the face models are missing: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise CnnkitError(f"{path}: missing from the face_recognition_models package (reinstall it)")
    return path


@lru_cache(maxsize=4)
def read_packaged(name: str) -> DlibNet:
    return read_dnn(model_file(name))


class Affine(nn.Module):
    """``y = gamma * x + beta`` per channel (dlib's frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))

    def load(self, layer: dict[str, Any]) -> None:
        self.weight.data.copy_(torch.from_numpy(layer["gamma"]))
        self.bias.data.copy_(torch.from_numpy(layer["beta"]))


def load_conv(conv: nn.Conv2d, layer: dict[str, Any]) -> None:
    if tuple(conv.weight.shape) != layer["weight"].shape or conv.stride != layer["stride"] \
            or conv.padding != layer["padding"]:
        raise CnnkitError(f"dlib conv {layer['weight'].shape}/{layer['stride']}/{layer['padding']} does not fit "
                          f"{conv}")
    conv.weight.data.copy_(torch.from_numpy(layer["weight"]))
    conv.bias.data.copy_(torch.from_numpy(layer["bias"]))


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` over their common part, the rest of the larger one kept (dlib's ``add_prev``)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class Block(nn.Module):
    """conv3x3 - affine - relu - conv3x3 - affine, plus the input (average-pooled when ``down``), relu."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        return F.relu(add_padded(y, F.avg_pool2d(x, 2, 2) if self.down else x))

    def load(self, layers: list[dict[str, Any]]) -> None:
        load_conv(self.conv1, layers[0])
        self.aff1.load(layers[1])
        load_conv(self.conv2, layers[3])
        self.aff2.load(layers[4])


class FaceResNet(nn.Module):
    """The trunk: ImageNet-normalised RGB (what ``to_tensor`` gives) in, (B, 256, h, w) out.

    The first step turns the input back into dlib's ``(pixel - mean) / 256``."""

    feature_channels = 256

    def __init__(self, pixel_mean: tuple[float, float, float] = (122.782, 117.001, 104.298)) -> None:
        super().__init__()
        std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("in_scale", (std * 255 / 256).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", ((mean * 255 - torch.tensor(pixel_mean)) / 256).view(1, 3, 1, 1),
                             persistent=False)
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)
        self.stem_affine = Affine(32)
        blocks, cin = [], 32
        for width, count, down in STAGES:
            for i in range(count):
                blocks.append(Block(cin, width, down and i == 0))
                cin = width
        self.blocks = nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.in_scale + self.in_shift
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem(x))), 3, 2)
        return self.blocks(x)

    forward = forward_features

    def load_dlib(self, net: DlibNet) -> None:
        """Copy the weights of a parsed dlib face ResNet (checks every layer kind and shape)."""
        layers = net.layers
        kinds = net.types()
        expected = ["con", "affine", "relu", "max_pool"]
        for block in self.blocks:
            expected += ["con", "affine", "relu", "con", "affine"] + (["avg_pool"] if block.down else []) \
                + ["add_prev", "relu"]
        expected += ["avg_pool", "fc"]
        if kinds != expected:
            raise CnnkitError(f"not dlib's face ResNet: layers {kinds[:8]}... differ from the expected ones")
        load_conv(self.stem, layers[0])
        self.stem_affine.load(layers[1])
        i = 4
        for block in self.blocks:
            block.load(layers[i:i + 5])
            i += 8 if block.down else 7


def face_resnet(*, embedding_dim: int = 128, pretrained: bool = True, num_classes: int = 0, **_: Any) -> nn.Module:
    """dlib's face ResNet as an :class:`Embedder` with unnormalised 128-d descriptors (as dlib's);
    with ``pretrained`` (the default) the weights of the file in ``face_recognition_models``.

    ``num_classes`` is ignored (an embedder has no classes)."""
    from cnnkit.plugins.siamese.models import Embedder

    if pretrained and embedding_dim != 128:
        raise CnnkitError(f"the pretrained face-resnet gives 128-d descriptors, not {embedding_dim}")
    net = read_packaged(RESNET_FILE) if pretrained else None
    trunk = FaceResNet(net.input["mean"] if net else (122.782, 117.001, 104.298))
    model = Embedder(trunk, FaceResNet.feature_channels, embedding_dim, normalize=False, bias=False)
    if net is not None:
        trunk.load_dlib(net)
        model.head.weight.data.copy_(torch.from_numpy(net.layers[-1]["weight"]))
        model.distance_threshold = float(net.loss["distance_threshold"])  # "same person" below 0.6
    return model
