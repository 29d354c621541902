"""R-CNN, Fast R-CNN and Faster R-CNN (hook implementations only)."""

from cnnkit.api import ModelSpec, hookimpl

_M = "cnnkit.plugins.rcnn.models:"
_T = "cnnkit.plugins.rcnn.task:"
SHAPES = "synthetic:shapes?n=256&size=64"


@hookimpl
def register_models(register):
    # the three generations share their data, sizes and the SGD recipe; they differ in batch
    # size, epochs and gradient clipping
    recipe = {"img_size": 64, "lr": 0.01, "optimizer": "sgd", "weight_decay": 5e-4, "scheduler": "cosine"}
    for name, task, description, paper, defaults in (
            ("rcnn", "RCNNTask",
             "R-CNN (Girshick et al. 2014): selective search, warped regions, SVMs, box regression",
             "arXiv:1311.2524", {"epochs": 10, "batch_size": 8}),
            ("fast-rcnn", "FastRCNNTask",
             "Fast R-CNN (Girshick 2015): RoI max pooling, sibling heads, multi-task loss",
             "arXiv:1504.08083", {"epochs": 12, "batch_size": 2, "grad_clip": 10.0}),
            ("faster-rcnn", "FasterRCNNTask",
             "Faster R-CNN (Ren et al. 2015): RPN (3 scales x 3 ratios) + Fast R-CNN head",
             "arXiv:1506.01497", {"epochs": 12, "batch_size": 4, "grad_clip": 10.0})):
        register(ModelSpec(
            name=name, task="detect", build=_M + name.replace("-", "_"), task_class=_T + task,
            description=description, paper=paper, img_size=64, min_img_size=32, num_classes=20,
            default_data=SHAPES, defaults={**recipe, **defaults}))
    for name, arch, params, description in (
            ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn", 41_755_286,
             "torchvision Faster R-CNN, ResNet-50 FPN (production)"),
            ("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_fpn", 19_386_354,
             "torchvision Faster R-CNN, MobileNetV3-Large FPN (production)")):
        register(ModelSpec(
            name=name, task="detect", build=_M + "torchvision_faster_rcnn", task_class=_T + "TorchvisionTask",
            description=description, build_kwargs={"arch": arch}, paper_params=params, img_size=800,
            min_img_size=64, num_classes=90, default_data=SHAPES,
            defaults={"epochs": 4, "batch_size": 4, "img_size": 64, "lr": 0.01, "optimizer": "sgd",
                      "weight_decay": 1e-4, "scheduler": "cosine", "grad_clip": 10.0}))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.rcnn.commands import register

    register(app)
