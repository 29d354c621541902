"""The ``stylize`` task: train an image-to-image network (a fast stylizer) on photos with a
registered ``stylize`` loss (``perceptual`` from the nst plugin by default)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from cnnkit.core.data.pixels import to_image, to_tensor
from cnnkit.core.tasks import results
from cnnkit.core.tasks.base import MappedDataset, Task


class PhotoSample:
    """A photo (or an ``(image, label)`` sample) -> a square crop as a [0, 1] tensor."""

    def __init__(self, img_size: int, train: bool) -> None:
        import albumentations as A

        crop = A.RandomCrop if train else A.CenterCrop
        self.pipeline = A.Compose([A.SmallestMaxSize(max_size=img_size), crop(img_size, img_size)])

    def __call__(self, sample: Any) -> torch.Tensor:
        image = sample[0] if isinstance(sample, tuple) else sample
        return to_tensor(self.pipeline(image=image)["image"], normalize=False)


class StylizeTask(Task):
    """``model(photos) -> images`` in [0, 1]; the loss is ``criterion(output, photos)``."""

    explain_kind = "style"  # cnnkit explain: the loss network's style layers for the style image and the result

    data_tasks = ("photos", "classify")  # a folder of photos, or any image set's images
    default_data = "synthetic:textures?n=64&size=128"
    key_metric = "loss"
    noun = "stylizer"
    run_with = "`cnnkit stylize IMAGE --model {source}`"
    key_mode = "min"
    normalize = False
    channels_last_inference = False  # measured 1.4x slower for the fast stylizer (bench/infer_cpu.py)

    def export_axes(self) -> dict[int, str]:
        return {2: "height", 3: "width"}  # images keep their own size

    def default_loss(self) -> str:
        return self.spec.loss or "perceptual"

    def dataset(self, split: str) -> MappedDataset:
        return MappedDataset(self.raw_dataset(split), PhotoSample(self.config.img_size, split == "train"))

    def build_model(self) -> nn.Module:
        return self.spec.create(**self.arch_options())

    def loss(self, model: nn.Module, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        return self.criterion(model)(model(batch), batch)

    @staticmethod
    def batch_len(batch: torch.Tensor) -> int:
        return len(batch)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        totals: dict[str, float] = {}
        n = 0
        for photos in loader:
            photos = photos.to(device)
            for k, v in self.criterion(model)(model(photos), photos).items():
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

    def explain_input(self, image: np.ndarray) -> Any:
        from cnnkit.core.data.pixels import RAW
        from cnnkit.core.tasks.explaining import prepared

        return prepared(lambda im: to_tensor(im, normalize=False), image, RAW)

    def predict(self, model: nn.Module, images: Iterable[np.ndarray], device: torch.device,
                **kwargs: Any) -> list[np.ndarray]:
        """Stylize RGB uint8 images in one forward pass each (sizes kept)."""
        model.eval()
        styled = []
        with torch.no_grad():
            for image in images:
                x = to_tensor(image, normalize=False)[None].to(device)
                styled.append(to_image(self.inference(model)(x)))
        return styled

    def result(self, image: str, pixels: Any, prediction: Any, **_: Any) -> results.Stylized:
        return results.Stylized(image, prediction)
