"""dlib's CNN face detector (``mmod_human_face_detector.dat``, King 2015, max-margin object
detection) run in torch.

The network is fully convolutional: three 5x5/2 convolutions (16, 32, 32 channels), three 5x5
convolutions of 45 channels (each with frozen batch norm and ReLU) and a 9x9 convolution to one
score map. A positive score at output cell ``(r, c)`` is a face in the 80x80 window centred on
input pixel ``(8c + 14, 8r + 14)``. Faces of other sizes are found on an image pyramid that
shrinks by 5/6 a level (dlib's ``pyramid_down<6>``); overlapping windows are suppressed greedily
at the IoU stored in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import nms

from cnnkit.api import CnnkitError
from cnnkit.plugins.siamese.dlib_format import DlibNet
from cnnkit.plugins.siamese.face_resnet import Affine, load_conv, read_packaged

MMOD_FILE = "mmod_human_face_detector.dat"
LEVEL_SCALE = 5 / 6
PAD = 11  # black border around each level (dlib's outer padding of its tiled pyramid)
MIN_LEVEL = 32  # smallest level side scanned
MAX_SIDE = 1600  # longer images are scanned from a level of this size (faces >= ~80/1600 of the side)
UPSAMPLE_BELOW = 640  # shorter images are scanned from twice their size (faces down to ~40 px)


def sequential_from_dlib(net: DlibNet) -> nn.Sequential:
    """A torch ``nn.Sequential`` for a chain of dlib conv / affine / relu layers."""
    layers: list[nn.Module] = []
    for layer in net.layers:
        if layer["type"] == "con":
            cout, cin, kh, kw = layer["weight"].shape
            conv = nn.Conv2d(cin, cout, (kh, kw), layer["stride"], layer["padding"])
            load_conv(conv, layer)
            layers.append(conv)
        elif layer["type"] == "affine":
            affine = Affine(len(layer["gamma"]))
            affine.load(layer)
            layers.append(affine)
        elif layer["type"] == "relu":
            layers.append(nn.ReLU(inplace=True))
        else:
            raise CnnkitError(f"a {layer['type']} layer in a detector that should be a plain chain of convolutions")
    return nn.Sequential(*layers)


def _receptive_map(net: nn.Sequential) -> tuple[int, int]:
    """Output cell ``c`` looks at input pixel ``stride * c + offset`` (dlib's map_output_to_input)."""
    stride, offset = 1, 0
    for m in net:
        if isinstance(m, nn.Conv2d):
            offset += stride * (m.kernel_size[1] // 2 - m.padding[1])
            stride *= m.stride[1]
    return stride, offset


@dataclass
class Detection:
    """A face box in image pixels, ``x1, y1, x2, y2``, and its detector score (> 0: a face)."""

    box: tuple[float, float, float, float]
    score: float


class MMODDetector:
    """The packaged detector on one device (CPU by default)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        net = read_packaged(MMOD_FILE)
        self.net = sequential_from_dlib(net).eval().to(device)
        self.device = torch.device(device)
        self.mean = torch.tensor(net.input["mean"], device=self.device).view(1, 3, 1, 1)
        self.window_h, self.window_w = net.loss["window"]
        self.nms_iou = float(net.loss["nms_iou"])
        self.stride, self.offset = _receptive_map(self.net)

    def levels(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(scale, resized image) from the first scanned level down to ``MIN_LEVEL`` pixels."""
        h, w = image.shape[:2]
        scale = 2.0 if max(h, w) < UPSAMPLE_BELOW else min(1.0, MAX_SIDE / max(h, w))
        out = []
        while min(h, w) * scale >= MIN_LEVEL:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            out.append((scale, image if scale == 1 else cv2.resize(image, size, interpolation=interp)))
            scale *= LEVEL_SCALE
        return out

    @torch.no_grad()
    def __call__(self, image: np.ndarray, threshold: float = 0.0) -> list[Detection]:
        """Faces in an RGB uint8 image, best score first."""
        boxes, scores = [], []
        for scale, level in self.levels(image):
            level = cv2.copyMakeBorder(level, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            x = torch.from_numpy(level).to(self.device).permute(2, 0, 1)[None].float()
            x = (x - self.mean) / 256
            score = self.net(x)[0, 0]
            rows, cols = torch.nonzero(score > threshold, as_tuple=True)
            if len(rows) == 0:
                continue
            cx = (cols * self.stride + self.offset - PAD).float()
            cy = (rows * self.stride + self.offset - PAD).float()
            half_w, half_h = (self.window_w - 1) / 2, (self.window_h - 1) / 2
            boxes.append(torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1) / scale)
            scores.append(score[rows, cols])
        if not boxes:
            return []
        all_boxes, all_scores = torch.cat(boxes).cpu(), torch.cat(scores).float().cpu()
        keep = nms(all_boxes, all_scores, self.nms_iou)
        return [Detection(tuple(float(v) for v in all_boxes[i]), float(all_scores[i])) for i in keep]


@lru_cache(maxsize=2)
def mmod_detector(device: str = "cpu") -> MMODDetector:
    return MMODDetector(device)
