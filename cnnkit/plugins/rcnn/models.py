"""The networks: trunks (a small conv stack or a registered backbone), R-CNN's warped-region
classifier, Fast R-CNN (trunk + :class:`RoIHead`), Faster R-CNN (trunk + :class:`RPN` +
:class:`RoIHead`) and torchvision's production Faster R-CNNs.

The heads go with the trunk: the papers' trunks (``vgg16``, ``alexnet``) get the papers' heads
(:data:`PAPER_HEADS`), the small trunks small heads (:data:`SMALL_HEADS`); every size is an option."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import roi_align

from cnnkit.api import CnnkitError
from cnnkit.plugins.rcnn.roi_heads import RoIHead, fc67, with_index
from cnnkit.plugins.rcnn.rpn import (
    PAPER_ANCHOR_RATIOS,
    PAPER_ANCHOR_SIZES,
    PAPER_SHORT_SIDE,
    RPN,
    default_anchor_sizes,
    pixel_values,
)

BACKBONES = {"small": 4, "resnet18": 8, "vgg16": 16, "alexnet": 16}  # name -> stride of the features the heads see
# The papers' heads on the ImageNet networks: R-CNN warps to 224 (VGG-16) / 227 (AlexNet), pool5 is
# 7x7 / 6x6 (Fast R-CNN's RoI pooling grid), fc6/fc7 are 4096 with dropout 0.5 and start from the
# ImageNet classifier (``classifier``: their indices in torchvision's), the RPN's 3x3 conv has 512
# (VGG-16) / 256 (ZF, AlexNet-like: conv5 of 256) channels.
PAPER_HEADS: dict[str, dict[str, Any]] = {
    "vgg16": {"crop": 224, "pool": 7, "fc": 4096, "rpn_channels": 512, "dropout": 0.5,
              "classifier": (0, 3)},
    "alexnet": {"crop": 227, "pool": 6, "fc": 4096, "rpn_channels": 256, "dropout": 0.5,
                "classifier": (1, 4)},
}
# Small images and trunks: R-CNN warps to 32 and pools 4x4, Fast R-CNN pools 7x7, fc 256, RPN 128.
SMALL_HEADS: dict[str, Any] = {"crop": 32, "pool": None, "fc": 256, "rpn_channels": 128, "dropout": 0.0,
                               "classifier": ()}


def head_sizes(backbone: str, **given: Any) -> dict[str, Any]:
    """The head sizes for ``backbone`` (its paper's or the small ones), ``given`` non-None values winning."""
    sizes = dict(PAPER_HEADS.get(backbone, SMALL_HEADS))
    sizes.update({k: v for k, v in given.items() if v is not None})
    return sizes


def share_classifier(net: nn.Module, fc: nn.Sequential, indices: tuple[int, ...]) -> None:
    """fc6/fc7 from the ImageNet network: the trunk ``net`` (built without its classifier) holds
    the head's two Linear layers ``fc`` under their names in the ImageNet file (``classifier.N``,
    ``indices``), so loading that file into the trunk (``--pretrained``) fills them; the head runs them."""
    if not indices:
        return
    layers: list[nn.Module] = [nn.Identity() for _ in range(max(indices) + 1)]
    for i, linear in zip(indices, [m for m in fc if isinstance(m, nn.Linear)]):
        layers[i] = linear
    net.body.classifier = nn.Sequential(*layers)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _dilate(layer: nn.Module, rate: int) -> None:
    """A ResNet stage at its input's resolution: strides 1, its 3x3 convs dilated by ``rate``
    (torchvision's ``replace_stride_with_dilation``, which refuses BasicBlock stages)."""
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (rate, rate), (rate, rate)


def trunk(*, backbone: str = "small", width: int = 16) -> tuple[nn.Module, int, int]:
    """A feature extractor, its channels and its stride.

    ``small`` (stride 4, for small images): VGG-style conv3x3-BN-ReLU blocks (width, 2w, 4w, 4w)
    with two 2x2 max pools. ``resnet18`` (stride 8), ``vgg16`` (conv5_3, stride 16: the papers')
    and ``alexnet`` (conv5, stride 16: the small networks' of the papers) come through the backbone
    contract (:func:`cnnkit.core.models.backbone.build_backbone`); resnet18's last two stages are dilated
    instead of strided, VGG-16's and AlexNet's last max pool is dropped (neither changes a
    weight's name, so ``--pretrained`` loads the ImageNet files into them).
    """
    if backbone not in BACKBONES:
        raise CnnkitError(f"--backbone {backbone}: choose {', '.join(BACKBONES)}")
    if backbone == "small":
        w = width
        return nn.Sequential(_conv(3, w), nn.MaxPool2d(2), _conv(w, 2 * w), nn.MaxPool2d(2),
                             _conv(2 * w, 4 * w), _conv(4 * w, 4 * w)), 4 * w, 4
    from cnnkit.api import build_backbone

    net = build_backbone(backbone)
    if backbone == "resnet18":
        _dilate(net.body.layer3, 2)
        _dilate(net.body.layer4, 4)
    else:
        net.body.features = net.body.features[:-1]
    return net, net.out_channels, BACKBONES[backbone]


class RCNN(nn.Module):
    """R-CNN: each proposal, dilated by the paper's 16/227 context, is warped to ``crop`` x ``crop``
    and classified by a CNN into K+1 classes: the trunk, pool5 (``pool`` x ``pool`` max pooling),
    fc6/fc7 (``fc``, dropout 0.5) and the (K+1)-way layer. After fine-tuning, one linear SVM a
    class on the fc7 features and a class-specific ridge box regressor on pool5 (buffers, so
    checkpoints carry them) replace the softmax (:mod:`cnnkit.plugins.rcnn.svm`). ``vgg16`` and
    ``alexnet`` take the paper's sizes (224 / 227 crops, fc6/fc7 4096 from the ImageNet network)."""

    context = 16 / 227

    def __init__(self, num_classes: int, crop: int | None = None, backbone: str = "small", width: int = 16,
                 fc: int | None = None, pool: int | None = None) -> None:
        super().__init__()
        sizes = head_sizes(backbone, crop=crop, fc=fc, pool=pool)
        self.num_classes, self.crop = num_classes, int(sizes["crop"])
        fc = int(sizes["fc"])
        self.trunk, channels, _ = trunk(backbone=backbone, width=width)
        self.pool = nn.AdaptiveMaxPool2d(sizes["pool"] or 4)
        pool_dim = channels * self.pool.output_size ** 2
        self.fc = fc67(pool_dim, fc, 0.5)
        share_classifier(self.trunk, self.fc, sizes["classifier"])
        self.cls = nn.Linear(fc, num_classes + 1)
        self.register_buffer("svm_weight", torch.zeros(num_classes, fc))
        self.register_buffer("svm_bias", torch.zeros(num_classes))
        self.register_buffer("reg_weight", torch.zeros(num_classes, pool_dim + 1, 4))
        self.register_buffer("svm_ready", torch.zeros((), dtype=torch.bool))

    def warp(self, images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Crops for ``rois`` (R, 5: batch index, xyxy), each box dilated for context."""
        box = rois[:, 1:]
        wh = (box[:, 2:] - box[:, :2]).clamp(min=1.0)
        pad = wh * self.context / (1 - 2 * self.context)
        dilated = torch.cat([rois[:, :1], box[:, :2] - pad, box[:, 2:] + pad], 1)
        return roi_align(images, dilated, self.crop, 1.0, sampling_ratio=2, aligned=True)

    def features(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled conv features flattened, fc features) of warped crops."""
        pooled = self.pool(self.trunk(crops)).flatten(1)
        return pooled, self.fc(pooled)

    def region_features(self, images: torch.Tensor, rois: torch.Tensor,
                        chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`features` of the warped ``rois`` of ``images``, ``chunk`` regions at a time."""
        parts = [self.features(self.warp(images, rois[i:i + chunk])) for i in range(0, len(rois), chunk)]
        if not parts:
            return self.features(self.warp(images, rois))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.cls(self.features(crops)[1])


class FastRCNN(nn.Module):
    """Fast R-CNN: one conv pass over the image, then :class:`RoIHead` on the proposals
    (background RoIs with IoU in [0.1, 0.5), as the paper). ``vgg16``/``alexnet``: RoI pooling
    7x7 / 6x6 into fc6/fc7 4096 (dropout 0.5) that start from the ImageNet classifier."""

    def __init__(self, num_classes: int, backbone: str = "small", width: int = 16, pool: int | None = None,
                 fc: int | None = None, rois_per_image: int = 64, fg_fraction: float = 0.25,
                 bg_low: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk, channels, self.stride = trunk(backbone=backbone, width=width)
        sizes = head_sizes(backbone, pool=pool, fc=fc)
        self.head = RoIHead(channels, num_classes, self.stride, sizes["pool"] or 7, sizes["fc"], rois_per_image,
                            fg_fraction, bg_low, sizes["dropout"])
        share_classifier(self.trunk, self.head.fc, sizes["classifier"])

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(images), rois)

    def summary_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole network on one RoI covering each image (``cnnkit summary``'s pass)."""
        return self(images, whole_images(images))


def whole_images(images: torch.Tensor) -> torch.Tensor:
    """(B, 5) RoIs, one covering each image."""
    box = images.new_tensor([[0.0, 0.0, images.shape[-1], images.shape[-2]]])
    return with_index([box] * len(images))


class FasterRCNN(nn.Module):
    """Faster R-CNN: a trunk, a Region Proposal Network and the Fast R-CNN head (background RoIs
    with IoU in [0, 0.5)). ``anchor_sizes`` (pixels, the square root of the area) x
    ``aspect_ratios`` (h/w) are the RPN's anchors (the paper's 128, 256, 512 x 0.5, 1, 2).
    ``separate_trunks`` adds the detector's own trunk ``det_trunk`` that step 2 of the 4-step
    schedule trains before steps 3 and 4 share it. ``vgg16``: the paper's
    network (RPN conv 512, RoI pooling 7x7 into fc6/fc7 4096 from VGG-16's classifier; 137M
    parameters for 20 classes); ``alexnet``: RPN conv 256 as ZF's, 6x6 into fc6/fc7 4096."""

    def __init__(self, num_classes: int, backbone: str = "small", width: int = 16, pool: int | None = None,
                 fc: int | None = None, anchor_sizes: tuple[float, ...] = PAPER_ANCHOR_SIZES,
                 aspect_ratios: tuple[float, ...] = PAPER_ANCHOR_RATIOS, rpn_channels: int | None = None,
                 rpn: dict[str, Any] | None = None, rois_per_image: int = 64, fg_fraction: float = 0.25,
                 separate_trunks: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        sizes = head_sizes(backbone, pool=pool, fc=fc, rpn_channels=rpn_channels)
        self.trunk, channels, self.stride = trunk(backbone=backbone, width=width)
        if separate_trunks:
            self.det_trunk = trunk(backbone=backbone, width=width)[0]
        self.rpn = RPN(channels, sizes["rpn_channels"], tuple(anchor_sizes), tuple(aspect_ratios), self.stride,
                       **(rpn or {}))
        self.head = RoIHead(channels, num_classes, self.stride, sizes["pool"] or 7, sizes["fc"], rois_per_image,
                            fg_fraction, 0.0, sizes["dropout"])
        # the detector's trunk holds fc6/fc7 (the 4-step schedule's det_trunk, whose convs step 3 shares)
        share_classifier(getattr(self, "det_trunk", self.trunk), self.head.fc, sizes["classifier"])
        if backbone == "vgg16" and sizes == head_sizes(backbone):  # the paper's model (py-faster-rcnn's VGG16)
            self.paper_params = 137_000_000

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network pass: feature map, RPN objectness logits (B, A, 2) and deltas (B, A, 4)."""
        features = self.trunk(images)
        return features, *self.rpn.scores(features)

    def summary_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk, RPN and the head on one RoI covering each image (``cnnkit summary``'s pass)."""
        features, _, _ = self(images)
        return self.head(features, whole_images(images))

    @torch.no_grad()
    def propose(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature map and the RPN's proposals of each image."""
        features = self.trunk(images)
        return features, self.rpn(features, images.shape[-1])[0]


def rcnn(*, num_classes: int = 20, **kwargs: Any) -> RCNN:
    return RCNN(num_classes, **kwargs)


def fast_rcnn(*, num_classes: int = 20, bg_iou_lo: float = 0.1, **kwargs: Any) -> FastRCNN:
    return FastRCNN(num_classes, bg_low=bg_iou_lo, **kwargs)


def faster_rcnn(*, num_classes: int = 20, rpn_batch: int = 256, rpn_pre_nms: int = 12000, rpn_post_nms: int = 2000,
                rpn_test_pre_nms: int = 6000, rpn_test_post_nms: int = 300, rpn_nms: float = 0.7,
                rpn_ignore_border: bool = True, anchor_sizes: Any = None, anchor_ratios: Any = None,
                img_size: int = PAPER_SHORT_SIDE, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN with the RPN settings as flat options (``--rpn-post-nms 2000``, ...).
    ``anchor_sizes``/``anchor_ratios`` (``--anchor-sizes 128,256,512 --anchor-ratios 0.5,1,2``) are
    pixels and h/w ratios at any ``img_size``; without sizes, the paper's scaled to ``img_size / 600``
    (:func:`default_anchor_sizes`: the paper's own at 600)."""
    rpn = {"batch": rpn_batch, "pre_nms": (rpn_pre_nms, rpn_test_pre_nms), "nms_iou": rpn_nms,
           "post_nms": (rpn_post_nms, rpn_test_post_nms), "ignore_border": rpn_ignore_border}
    sizes = default_anchor_sizes(img_size) if anchor_sizes is None else pixel_values(anchor_sizes, "--anchor-sizes")
    ratios = PAPER_ANCHOR_RATIOS if anchor_ratios is None else pixel_values(anchor_ratios, "--anchor-ratios")
    return FasterRCNN(num_classes, rpn=rpn, anchor_sizes=sizes, aspect_ratios=ratios, **kwargs)


class ZeroBasedFasterRCNN(TorchvisionFasterRCNN):
    """torchvision's Faster R-CNN speaking cnnkit's labels (0..C-1; torchvision keeps 0 for the
    background) and loss names; same modules, same state dict keys."""

    keys = {"loss_objectness": "rpn_obj", "loss_rpn_box_reg": "rpn_box", "loss_classifier": "cls",
            "loss_box_reg": "box"}

    def forward(self, images: Any, targets: Any = None) -> Any:
        if self.training:
            shifted = [{**t, "labels": t["labels"] + 1} for t in targets]
            return {self.keys[k]: v for k, v in super().forward(images, shifted).items()}
        return [{**o, "labels": o["labels"] - 1} for o in super().forward(images)]


class KeepSize(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize: the task letterboxes images to
    ``--img-size`` already."""

    def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
        return image, target


def torchvision_faster_rcnn(*, arch: str, num_classes: int = 91, **kwargs: Any) -> nn.Module:
    """torchvision's ``arch`` with ``num_classes`` + background outputs, random init (weights come
    only from ``--weights`` or ``--pretrained``, torchvision's COCO files in the weights registry),
    on images as they come; it keeps detections down to score 0.001 and leaves the threshold to the task."""
    import torchvision

    model = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                         box_score_thresh=0.001, **kwargs)
    model.__class__ = ZeroBasedFasterRCNN
    model.transform = KeepSize(1, 1, model.transform.image_mean, model.transform.image_std)
    return model
