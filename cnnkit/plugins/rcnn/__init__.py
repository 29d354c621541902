"""R-CNN, Fast R-CNN and Faster R-CNN (hook implementations only)."""

from cnnkit.api import LossSpec, ModelSpec, WeightsSpec, hookimpl

_M = "cnnkit.plugins.rcnn.models:"
_T = "cnnkit.plugins.rcnn.task:"
_L = "cnnkit.plugins.rcnn.losses:"
SHAPES = "synthetic:shapes?n=256&size=64"
# small | resnet18 | vgg16 | alexnet (--pretrained: ImageNet weights for the last three); head sizes left
# None follow the trunk: the papers' for vgg16 and alexnet (models.PAPER_HEADS), small ones otherwise
TRUNK = {"backbone": "small", "fc": None, "pool": None}
HEAD = {"rois_per_image": 64, "fg_fraction": 0.25}
# pixels and h/w ratios (--anchor-sizes 128,256,512 --anchor-ratios 0.5,1,2); None: the paper's 128, 256, 512
# scaled by --img-size / 600 (its shorter side) and its ratios 0.5, 1, 2
ANCHORS = {"anchor_sizes": None, "anchor_ratios": None}


@hookimpl
def register_models(register):
    # the three generations share their data, sizes and the SGD recipe; they differ in batch
    # size, epochs and gradient clipping
    recipe = {"img_size": 64, "lr": 0.01, "optimizer": "sgd", "weight_decay": 5e-4, "scheduler": "cosine"}
    rpn = {"rpn_batch": 256, "rpn_pre_nms": 12000, "rpn_post_nms": 2000, "rpn_test_pre_nms": 6000,
           "rpn_test_post_nms": 300, "rpn_nms": 0.7, "rpn_ignore_border": True}
    for name, task, loss, options, description, paper, defaults in (
            ("rcnn", "RCNNTask", "", {**TRUNK, "crop": None},
             "R-CNN (Girshick et al. 2014): selective search, warped regions, SVMs, box regression",
             "arXiv:1311.2524", {"epochs": 10, "batch_size": 8}),
            ("fast-rcnn", "FastRCNNTask", "fast-rcnn", {**TRUNK, **HEAD, "bg_iou_lo": 0.1},
             "Fast R-CNN (Girshick 2015): RoI max pooling, sibling heads, multi-task loss",
             "arXiv:1504.08083", {"epochs": 12, "batch_size": 2, "grad_clip": 10.0}),
            ("faster-rcnn", "FasterRCNNTask", "faster-rcnn", {**TRUNK, **HEAD, **rpn, **ANCHORS, "rpn_channels": None},
             "Faster R-CNN (Ren et al. 2015): RPN (3 scales x 3 ratios) + Fast R-CNN head",
             "arXiv:1506.01497", {"epochs": 12, "batch_size": 4, "grad_clip": 10.0})):
        register(ModelSpec(
            name=name, task="detect", build=_M + name.replace("-", "_"), task_class=_T + task, loss=loss,
            options=options, description=description, paper=paper, img_size=64, min_img_size=32,
            num_classes=20, default_data=SHAPES, defaults={**recipe, **defaults}))
    for name, params, description in (
            ("fasterrcnn_resnet50_fpn", 41_755_286, "torchvision Faster R-CNN, ResNet-50 FPN (production)"),
            ("fasterrcnn_mobilenet_v3_large_fpn", 19_386_354,
             "torchvision Faster R-CNN, MobileNetV3-Large FPN (production)")):
        register(ModelSpec(
            name=name, task="detect", build=_M + "torchvision_faster_rcnn", description=description, build_kwargs={"arch": name}, paper_params=params, img_size=800,
            min_img_size=64, num_classes=90, default_data=SHAPES,
            defaults={"epochs": 4, "batch_size": 4, "img_size": 64, "lr": 0.01, "optimizer": "sgd",
                      "weight_decay": 1e-4, "scheduler": "cosine", "grad_clip": 10.0}))


@hookimpl
def register_losses(register):
    register(LossSpec("fast-rcnn", _L + "build_fast_rcnn", ("detect",), {"box_weight": 1.0},
                      "Fast R-CNN multi-task loss: softmax + lambda smooth-L1 on normalised box targets"))
    register(LossSpec("faster-rcnn", _L + "build_faster_rcnn", ("detect",),
                      {"box_weight": 1.0, "rpn_loss": "paper", "rpn_lambda": 10.0},
                      "Faster R-CNN: the Fast R-CNN loss + the RPN loss (paper: 1/N_cls, lambda/N_reg; "
                      "or pyfaster)"))


@hookimpl
def register_weights(register):
    # torchvision's COCO files (91 outputs, background included); a head for other classes is re-initialised.
    # The model normalises inside (GeneralizedRCNNTransform), so it is fed pixels in [0, 1] as they are.
    for model, file in (("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
                        ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth")):
        register(WeightsSpec(name=model, model=model, file=file, url="https://download.pytorch.org/models/" + file,
                             hash_prefix=file.rsplit("-", 1)[1][:-4], classes="coco90",
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                             license="BSD-3-Clause (torchvision); COCO terms apply",
                             variant=f"torchvision {model}, COCO train2017 (its frozen BN is trainable BN here)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.rcnn.commands import register

    register(app)
