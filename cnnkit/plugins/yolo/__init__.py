"""YOLO v1/v2/v3 detectors with Darknet backbones (hook implementations only)."""

from cnnkit.api import LossSpec, ModelSpec, WeightsSpec, hookimpl

MODELS = "cnnkit.plugins.yolo.models"
TASK = "cnnkit.plugins.yolo.task:YoloTask"
DATA = "synthetic:shapes?n=1024&size=128"
V1 = "You Only Look Once: Unified, Real-Time Object Detection (Redmon et al. 2016)"
V2 = "YOLO9000: Better, Faster, Stronger (Redmon & Farhadi 2017)"
V3 = "YOLOv3: An Incremental Improvement (Redmon & Farhadi 2018)"

# Training recipes for CPU-sized runs on the synthetic shapes (Darknet's own: SGD, lr 1e-3, burn-in).
DETECT_RECIPE = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "cosine",
                 "batch_size": 8, "epochs": 14, "grad_clip": 10.0}

# Darknet's "Bn ops" at 416 (YOLOv3 paper, darknet site) are FLOPs: multiply-adds are half.
PAPER_MACS = {"yolov3": 65.86e9 / 2, "yolov3-tiny": 5.56e9 / 2}



def _detector(name: str, build: str, **kw) -> ModelSpec:
    return ModelSpec(name=name, task="detect", build=build, task_class=TASK, default_data=DATA,
                     defaults={**DETECT_RECIPE, "img_size": 128}, paper_macs=PAPER_MACS.get(name), **kw)


DETECTORS = [
    _detector("yolov1", f"{MODELS}:yolov1", loss="yolov1", paper=V1, img_size=448, min_img_size=64, num_classes=20,
              description="YOLOv1: 24 conv + 2 FC layers, S=7, B=2"),
    _detector("yolov1-fast", f"{MODELS}:yolov1_fast", loss="yolov1", paper=V1, img_size=448, min_img_size=64,
              num_classes=20, description="Fast YOLO: 9 conv layers, S=7, B=2"),
    _detector("yolov2", f"{MODELS}:yolov2", loss="yolov2", paper=V2, img_size=416, num_classes=80,
              description="YOLOv2: Darknet-19, 5 anchors, passthrough layer"),
    _detector("yolov2-tiny", f"{MODELS}:yolov2_tiny", loss="yolov2", paper=V2, img_size=416, num_classes=80,
              description="Tiny YOLOv2: 9 conv layers, 5 anchors"),
    _detector("yolov3", f"{MODELS}:yolov3", loss="yolov3", paper=V3, paper_params=61_949_149, img_size=416,
              num_classes=80, description="YOLOv3: Darknet-53, 3 scales x 3 anchors"),
    _detector("yolov3-tiny", f"{MODELS}:yolov3_tiny", loss="yolov3", paper=V3, paper_params=8_852_366,
              img_size=416, num_classes=80, description="Tiny YOLOv3: 2 scales x 3 anchors"),
    # the loss follows the cfg's head ([yolo]: yolov3, [region]: yolov2, [detection]: yolov1)
    _detector("darknet-cfg", "cnnkit.plugins.yolo.darknet:model_from_cfg", aliases=("*.cfg",), paper=V3,
              img_size=416, num_classes=80,
              description="A detector read from a Darknet .cfg file (pass the path as the model)"),
]
BACKBONE_RECIPE = {"optimizer": "sgd", "lr": 0.05, "img_size": 64, "batch_size": 32}
CLASSIFIERS = [
    ModelSpec(name="darknet19", task="classify", build=f"{MODELS}:darknet19", paper=V2, paper_params=20_842_376,
              img_size=224, default_data="synthetic:textures", defaults=BACKBONE_RECIPE,
              description="Darknet-19 classifier (YOLOv2's backbone)"),
    ModelSpec(name="darknet53", task="classify", build=f"{MODELS}:darknet53", paper=V3, paper_params=41_609_928,
              img_size=256, default_data="synthetic:textures", defaults=BACKBONE_RECIPE,
              description="Darknet-53 classifier (YOLOv3's backbone)"),
]


@hookimpl
def register_models(register):
    for spec in DETECTORS + CLASSIFIERS:
        register(spec)


PJREDDIE = "https://pjreddie.com/media/files/"
DARKNET_LICENSE = "public domain (Darknet's YOLO LICENSE)"
# pjreddie publishes no hashes; sizes are those of the files our writer produces for these networks
# (header + float32 values), so a truncated download is still refused.
WEIGHTS = [
    WeightsSpec(name="yolov3.weights", model="yolov3", file="yolov3.weights", url=PJREDDIE + "yolov3.weights",
                size=248_007_048, license=DARKNET_LICENSE, variant="yolov3.cfg, COCO 80 classes", format="darknet"),
    WeightsSpec(name="yolov3-tiny.weights", model="yolov3-tiny", file="yolov3-tiny.weights",
                url=PJREDDIE + "yolov3-tiny.weights", size=35_434_956, license=DARKNET_LICENSE,
                variant="yolov3-tiny.cfg, COCO 80 classes", format="darknet"),
    WeightsSpec(name="yolov2.weights", model="yolov2", file="yolov2.weights", url=PJREDDIE + "yolov2.weights",
                size=203_934_260, license=DARKNET_LICENSE, variant="yolov2.cfg (608), COCO 80 classes", format="darknet"),
    WeightsSpec(name="darknet53.conv.74", model="yolov3", file="darknet53.conv.74", url=PJREDDIE + "darknet53.conv.74",
                size=162_482_580, license=DARKNET_LICENSE, format="darknet",
                variant="Darknet-53's first 74 layers (ImageNet), the start of YOLOv3 training"),
]


@hookimpl
def register_weights(register):
    for entry in WEIGHTS:
        register(entry)


@hookimpl
def register_losses(register):
    register(LossSpec("yolov1", "cnnkit.plugins.yolo.losses:yolov1", ("detect",),
                      description="YOLOv1 sum-squared error (lambda_coord 5, lambda_noobj 0.5)"))
    register(LossSpec("yolov2", "cnnkit.plugins.yolo.losses:yolov2", ("detect",),
                      description="YOLOv2 anchor loss, softmax classes"))
    register(LossSpec("yolov3", "cnnkit.plugins.yolo.losses:yolov3", ("detect",), {"ignore_thresh": 0.5},
                      "YOLOv3 three-scale loss, logistic classes (--ignore-thresh)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.yolo.commands import register

    register(app)
