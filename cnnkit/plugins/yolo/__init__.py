"""YOLO v1/v2/v3 detectors with Darknet backbones (hook implementations only)."""

from pathlib import Path

from cnnkit.core.hookspecs import hookimpl
from cnnkit.core.registry import DatasetSpec, ModelSpec

MODELS = "cnnkit.plugins.yolo.models"
TASK = "cnnkit.plugins.yolo.task:YoloTask"
CLASSIFY_TASK = "cnnkit.plugins.classify.task:ClassifyTask"
DATA = "synthetic:shapes?n=1024&size=128"
V1 = "You Only Look Once: Unified, Real-Time Object Detection (Redmon et al. 2016)"
V2 = "YOLO9000: Better, Faster, Stronger (Redmon & Farhadi 2017)"
V3 = "YOLOv3: An Incremental Improvement (Redmon & Farhadi 2018)"

# Training recipes for CPU-sized runs on the synthetic shapes (Darknet's own: SGD, lr 1e-3, burn-in).
DETECT_RECIPE = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "cosine",
                 "batch_size": 8, "epochs": 14, "grad_clip": 10.0}

# Darknet's "Bn ops" at 416 (YOLOv3 paper, darknet site) are FLOPs: multiply-adds are half.
PAPER_MACS = {"yolov3": 65.86e9 / 2, "yolov3-tiny": 5.56e9 / 2}

# name, builder, paper, paper params (80 classes), input size, classes, description
_DETECTORS = [
    ("yolov1", "yolov1", V1, None, 448, 20, "YOLOv1 as published: 24 conv (no batch norm) + 2 FC layers, S=7, B=2"),
    ("yolov1-fast", "yolov1_fast", V1, None, 448, 20, "Fast YOLO: 9 conv layers, S=7, B=2"),
    ("yolov2", "yolov2", V2, None, 416, 80, "YOLOv2: Darknet-19, 5 anchors, passthrough layer"),
    ("yolov2-tiny", "yolov2_tiny", V2, None, 416, 80, "Tiny YOLOv2: 9 conv layers, 5 anchors"),
    ("yolov3", "yolov3", V3, 61_949_149, 416, 80, "YOLOv3: Darknet-53, 3 scales x 3 anchors"),
    ("yolov3-tiny", "yolov3_tiny", V3, 8_852_366, 416, 80, "Tiny YOLOv3: 2 scales x 3 anchors"),
]


CFG_DIR = Path(__file__).parent / "cfg"
# Darknet's configs shipped in cfg/ that no hand-written model above builds (those that one does --
# yolov2, yolov2-tiny, yolov3, yolov3-tiny, darknet19, darknet53 -- are the same networks).
# name, .cfg file, paper, input size, classes, description
_CFGS = [
    ("yolov1-darknet", "yolov1", V1, 448, 20, "Darknet's yolov1.cfg: batch norm, a locally connected layer, 3 boxes"),
    ("yolov1-tiny", "yolov1-tiny", V1, 448, 20, "Darknet's yolov1-tiny.cfg: 8 conv layers, batch norm, 1 FC layer"),
    ("yolov2-voc", "yolov2-voc", V2, 416, 20, "Darknet's yolov2-voc.cfg: YOLOv2 with VOC anchors"),
    ("yolov2-tiny-voc", "yolov2-tiny-voc", V2, 416, 20, "Darknet's yolov2-tiny-voc.cfg"),
    ("yolo9000", "yolo9000", V2, 544, 9418, "YOLO9000: Darknet-19, 3 anchors, softmax over the 9418-node WordTree"),
    ("yolov3-voc", "yolov3-voc", V3, 416, 20, "Darknet's yolov3-voc.cfg"),
    ("yolov3-spp", "yolov3-spp", V3, 608, 80, "YOLOv3 with spatial pyramid pooling (yolov3-spp.cfg)"),
    ("yolov3-openimages", "yolov3-openimages", V3, 608, 601, "YOLOv3 for Open Images' 601 classes"),
]


@hookimpl
def register_models(register):
    for name, fn, paper, params, size, classes, description in _DETECTORS:
        register(ModelSpec(name=name, task="detect", build=f"{MODELS}:{fn}", task_class=TASK, paper=paper,
                           paper_params=params, paper_macs=PAPER_MACS.get(name), img_size=size,
                           min_img_size=64 if name.startswith("yolov1") else 32, num_classes=classes,
                           default_data=DATA, description=description, defaults={**DETECT_RECIPE, "img_size": 128}))
    register(ModelSpec(name="yolov1-bn", task="detect", build=f"{MODELS}:yolov1", task_class=TASK, paper=V1,
                       img_size=448, min_img_size=64, num_classes=20, default_data=DATA,
                       build_kwargs={"batch_norm": True}, defaults={**DETECT_RECIPE, "img_size": 128},
                       description="YOLOv1 with batch norm after every convolution (YOLOv2's first change)"))
    for name, cfg, paper, size, classes, description in _CFGS:
        register(ModelSpec(name=name, task="detect", build="cnnkit.plugins.yolo.darknet:model_from_cfg",
                           task_class=TASK, paper=paper, img_size=size, min_img_size=64 if "v1" in name else 32,
                           num_classes=classes, default_data=DATA, description=description,
                           build_kwargs={"cfg": str(CFG_DIR / f"{cfg}.cfg")},
                           defaults={**DETECT_RECIPE, "img_size": 128}))
    register(ModelSpec(name="darknet-cfg", task="detect", build="cnnkit.plugins.yolo.darknet:model_from_cfg",
                       task_class=TASK, aliases=("*.cfg",), paper=V3, img_size=416, num_classes=80,
                       default_data=DATA, defaults={**DETECT_RECIPE, "img_size": 128},
                       description="A detector read from a Darknet .cfg file (pass the path as the model)"))
    for name, params, size, description in (
            ("darknet19", 20_842_376, 224, "Darknet-19 classifier (YOLOv2's backbone)"),
            ("darknet53", 41_609_928, 256, "Darknet-53 classifier (YOLOv3's backbone)")):
        register(ModelSpec(name=name, task="classify", build=f"{MODELS}:{name}", task_class=CLASSIFY_TASK,
                           paper=V2 if name == "darknet19" else V3, paper_params=params, img_size=size,
                           num_classes=1000, default_data="synthetic:textures", description=description,
                           defaults={"optimizer": "sgd", "lr": 0.05, "img_size": 64, "batch_size": 32}))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("synthetic:figures", "detect", "cnnkit.plugins.yolo.synthetic:Figures", None,
                         "rings, crosses and bars (labels=fine) or boxes all called 'shape' (labels=coarse)"))
    register(DatasetSpec("synthetic:figure-crops", "classify", "cnnkit.plugins.yolo.synthetic:FigureCrops", None,
                         "one ring, cross or bar an image (YOLO9000 joint-training demo)"))


@hookimpl
def register_losses(register):
    register("yolov1", "cnnkit.plugins.yolo.losses:YOLOv1Loss")
    register("yolov2", "cnnkit.plugins.yolo.losses:YOLOv2Loss")
    register("yolov3", "cnnkit.plugins.yolo.losses:YOLOv3Loss")


@hookimpl
def register_commands(app):
    from cnnkit.plugins.yolo.commands import register

    register(app)
