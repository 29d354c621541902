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


# The papers' recipes (`--recipe paper`): an ImageNet VGG-16 fine-tuned with SGD; iterations in epochs of VOC 2007
# trainval (5,011 images). The papers scale the shorter side to 600 (longer at most 1000); cnnkit letterboxes to a
# square, so 600 is the longer side here.
VOC_SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "lr": 1e-3, "scheduler": "multistep",
           "gamma": 0.1, "pretrained": True}
PAPER_RECIPES = {
    "rcnn": {
        **VOC_SGD, "epochs": 16, "milestones": [8], "batch_size": 2, "img_size": 600,
        "options": {"backbone": "vgg16", "rois_per_batch": 128, "fg_fraction": 0.25},
        "about": "Girshick et al. 2014 sec. 2.3: fine-tune the ImageNet network (here VGG-16, as its later tables) "
                 "with SGD from lr 0.001, 128 warped regions a batch (32 positive, 96 background), flips; the SVMs "
                 "and regressors after. Momentum 0.9, weight decay 5e-4 and /10 after 20k of 40k iterations are "
                 "its Caffe solver's; one iteration is 2 images' regions here (16 epochs, /10 after 8)."},
    "fast-rcnn": {
        **VOC_SGD, "epochs": 16, "milestones": [12], "batch_size": 2, "img_size": 600,
        "options": {"backbone": "vgg16", "rois_per_image": 64, "fg_fraction": 0.25, "bg_iou_lo": 0.1},
        "about": "Girshick 2015 sec. 2.3, 3.1: ImageNet VGG-16, batches of 2 images x 64 RoIs (25% foreground, "
                 "background IoU [0.1, 0.5)), flips, SGD lr 0.001 for 30k iterations then 0.0001 for 10k (12 + 4 "
                 "epochs), momentum 0.9, weight decay 5e-4, shorter side 600."},
    "faster-rcnn": {
        **VOC_SGD, "epochs": 16, "milestones": [12], "batch_size": 1, "img_size": 600,
        "options": {"backbone": "vgg16", "rpn_batch": 256, "rois_per_image": 128, "fg_fraction": 0.25,
                    "schedule": "joint", "augment": "flip"},
        "about": "Ren et al. 2015 sec. 3.1.3, 3.3, 4: ImageNet VGG-16, one image a batch, 256 anchors an image, lr "
                 "0.001 for 60k batches then 0.0001 for 20k (12 + 4 epochs), momentum 0.9, weight decay 5e-4, flips, "
                 "shorter side 600, anchors 128/256/512 x 1:2/1:1/2:1 (cnnkit's default at 600 px). Trained jointly "
                 "(sec. 3.2's approximate joint training, the released code's end2end); --schedule 4step is the "
                 "alternation of its tables."},
}
TORCHVISION_RECIPE = {
    "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr": 0.02, "batch_size": 16, "epochs": 26,
    "img_size": 800, "scheduler": "multistep", "milestones": [16, 22], "gamma": 0.1, "burn_in": 1000,
    "options": {"augment": "flip"},
    "about": "torchvision's references/detection recipe, which made its published weights: 26 epochs, lr 0.02 for "
             "batches of 16 (2 images x 8 GPUs), /10 at epochs 16 and 22, momentum 0.9, weight decay 1e-4, 1000 "
             "warm-up iterations (here Darknet's burn-in), flips, shorter side 800."}


@hookimpl
def register_models(register):
    # the three generations share their data, sizes and the SGD recipe; they differ in batch
    # size, epochs and gradient clipping
    recipe = {"img_size": 64, "lr": 0.01, "optimizer": "sgd", "weight_decay": 5e-4, "scheduler": "cosine",
              "about": "cnnkit's short CPU recipe for the synthetic shapes (small trunk, SGD 0.01, cosine, 64 px)"}
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
            num_classes=20, default_data=SHAPES, recipe={**recipe, **defaults}, recipes={"paper": PAPER_RECIPES[name]}))
    for name, params, description in (
            ("fasterrcnn_resnet50_fpn", 41_755_286, "torchvision Faster R-CNN, ResNet-50 FPN (production)"),
            ("fasterrcnn_mobilenet_v3_large_fpn", 19_386_354,
             "torchvision Faster R-CNN, MobileNetV3-Large FPN (production)")):
        register(ModelSpec(
            name=name, task="detect", build=_M + "torchvision_faster_rcnn", description=description,
            build_kwargs={"arch": name}, paper_params=params, img_size=800,
            min_img_size=64, num_classes=90, default_data=SHAPES,
            recipe={"epochs": 4, "batch_size": 4, "img_size": 64, "lr": 0.01, "optimizer": "sgd",
                    "weight_decay": 1e-4, "scheduler": "cosine", "grad_clip": 10.0,
                    "about": "cnnkit's short CPU recipe for the synthetic shapes (SGD 0.01, cosine, 64 px)"},
            recipes={"paper": TORCHVISION_RECIPE}))


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
