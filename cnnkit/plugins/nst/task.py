"""How the engine trains the fast stylizer: photos in, perceptual losses from a frozen VGG-19."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import albumentations as A
import numpy as np
import torch
from torch import nn

from cnnkit.core.data.images import read_image
from cnnkit.core.data.transforms import to_tensor
from cnnkit.core.errors import CnnkitError
from cnnkit.core.task import MappedDataset, Task
from cnnkit.plugins.nst.losses import StyleTransferLoss, gram
from cnnkit.plugins.nst.stylize import fit_long_side, to_image
from cnnkit.plugins.nst.vgg import VGGFeatures, check_layers, resolve_weights

DEFAULT_STYLE = "synthetic:textures"  # a built-in texture, so the model trains with no files at all


def _layers(value: Any) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


class PhotoSample:
    """A photo (or an ``(image, label)`` sample) -> a square crop as a [0, 1] tensor."""

    def __init__(self, img_size: int, train: bool) -> None:
        crop = A.RandomCrop if train else A.CenterCrop
        self.pipeline = A.Compose([A.SmallestMaxSize(max_size=img_size), crop(img_size, img_size)])

    def __call__(self, sample: Any) -> torch.Tensor:
        image = sample[0] if isinstance(sample, tuple) else sample
        return to_tensor(self.pipeline(image=image)["image"], normalize=False)


class FastStyleTask(Task):
    """Johnson et al.: train an image transformation network for one style (``--style S.jpg``)."""

    data_tasks = ("photos", "classify")  # a folder of photos, or any image set's images
    default_data = "synthetic:textures?n=64&size=128"
    key_metric = "loss"
    key_mode = "min"
    options = {"style": "", "style_size": 0, "content_weight": 1.0, "style_weight": 1e6, "tv_weight": 0.0,
               "content_layers": "conv2_2", "style_layers": "conv1_2,conv2_2,conv3_3,conv4_3",
               "vgg_weights": ""}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.state:  # a new run: record the style config in the checkpoint
            self.state = {"style": str(self.option("style") or DEFAULT_STYLE),
                          "style_size": int(self.option("style_size") or self.config.img_size)}
            for key in ("content_weight", "style_weight", "tv_weight"):
                try:
                    self.state[key] = float(self.option(key))
                except (TypeError, ValueError):
                    raise CnnkitError(f"--{key.replace('_', '-')} must be a number") from None
            self.state["content_layers"] = ",".join(_layers(self.option("content_layers")))
            self.state["style_layers"] = ",".join(_layers(self.option("style_layers")))
            check_layers(_layers(self.state["content_layers"]) + _layers(self.state["style_layers"]))
            if self.state["style"] != DEFAULT_STYLE and not Path(self.state["style"]).is_file():
                raise CnnkitError(f"--style {self.state['style']}: no such file")
            resolve_weights(str(self.option("vgg_weights")))  # fail before training, not at the first batch
        self._vgg: VGGFeatures | None = None
        self._grams: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- data
    def dataset(self, split: str) -> MappedDataset:
        return MappedDataset(self.raw_dataset(split), PhotoSample(self.config.img_size, split == "train"))

    def build_model(self) -> nn.Module:
        return self.spec.create()

    # ---------------------------------------------------------------- losses
    def style_image(self) -> np.ndarray:
        style = self.state["style"]
        if style == DEFAULT_STYLE:
            from cnnkit.core.data.synthetic import Textures

            return Textures(split="val", n=32, size=256)[5][0]  # rings
        return read_image(style)

    def vgg(self, device: torch.device) -> VGGFeatures:
        """The frozen VGG-19 and the style's target Grams, built once on first use."""
        if self._vgg is None:
            content, style = _layers(self.state["content_layers"]), _layers(self.state["style_layers"])
            self._vgg = VGGFeatures(content + style, str(self.option("vgg_weights")), seed=self.config.seed)
            image = fit_long_side(to_tensor(self.style_image(), normalize=False)[None], self.state["style_size"])
            with torch.no_grad():
                features = self._vgg(image)
            self._grams = {k: gram(features[k]) for k in style}
        self._vgg.to(device)
        self._grams = {k: g.to(device) for k, g in self._grams.items()}
        return self._vgg

    def criterion(self, photos: torch.Tensor) -> tuple[VGGFeatures, StyleTransferLoss]:
        vgg = self.vgg(photos.device)
        with torch.no_grad():
            targets = vgg(photos)
        layers = list(self._grams)
        loss = StyleTransferLoss(
            content={k: targets[k] for k in _layers(self.state["content_layers"])}, grams=self._grams,
            layer_weights={k: 1.0 / len(layers) for k in layers}, content_weight=self.state["content_weight"],
            style_weight=self.state["style_weight"], tv_weight=self.state["tv_weight"])
        return vgg, loss

    def loss(self, model: nn.Module, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        vgg, criterion = self.criterion(batch)
        out = model(batch)
        return criterion(vgg(out), out)

    @staticmethod
    def batch_len(batch: torch.Tensor) -> int:
        return len(batch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        totals: dict[str, float] = {}
        n = 0
        for photos in loader:
            photos = photos.to(device)
            vgg, criterion = self.criterion(photos)
            out = model(photos)
            for k, v in criterion(vgg(out), out).items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(photos)
            n += len(photos)
        return {k: v / max(n, 1) for k, v in totals.items()}

    def log_artifacts(self, model: nn.Module, val: Any, tracker: Any, device: torch.device) -> None:
        """A strip of validation photos (top) and their stylized versions (bottom)."""
        photos = torch.stack([val[i] for i in range(min(4, len(val)))]).to(device)
        with torch.no_grad():
            out = model(photos).clamp(0, 1)
        strip = torch.cat([torch.cat(list(photos), 2), torch.cat(list(out), 2)], 1)
        tracker.log_image(to_image(strip[None]), "samples/stylized.png")

    def predict(self, model: nn.Module, images: Iterable[np.ndarray], device: torch.device,
                **kwargs: Any) -> list[np.ndarray]:
        """Stylize RGB uint8 images in one forward pass each (sizes kept)."""
        model.eval()
        results = []
        with torch.no_grad():
            for image in images:
                x = to_tensor(image, normalize=False)[None].to(device)
                results.append(to_image(model(x)))
        return results
