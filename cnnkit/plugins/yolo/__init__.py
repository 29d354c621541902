"""YOLO v1/v2/v3 detectors with Darknet backbones (hook implementations only)."""

from dataclasses import replace
from pathlib import Path

from cnnkit.api import DatasetSpec, LossSpec, ModelSpec, WeightsSpec, hookimpl

MODELS = "cnnkit.plugins.yolo.models"
TASK = "cnnkit.plugins.yolo.task:YoloTask"
DATA = "synthetic:shapes?n=1024&size=128"
V1 = "You Only Look Once: Unified, Real-Time Object Detection (Redmon et al. 2016)"
V2 = "YOLO9000: Better, Faster, Stronger (Redmon & Farhadi 2017)"
V3 = "YOLOv3: An Incremental Improvement (Redmon & Farhadi 2018)"
PAPERS = {"yolov1": V1, "yolov2": V2, "yolov3": V3}

# Training recipes for CPU-sized runs on the synthetic shapes (Darknet's own: SGD, lr 1e-3, burn-in).
DETECT_RECIPE = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "cosine",
                 "batch_size": 8, "epochs": 14, "grad_clip": 10.0}

# YOLOv2 family (yolov2-tiny, yolov2, yolo9000), from scratch on small data and in YOLO9000 joint
# training: Adam 2e-3 with Darknet's burn_in warm-up (lr x (step/60)^4), batches of 16, one input
# size, 40 epochs. bench/yolo9000_sets.py, yolov2-tiny at 160 px, 256 boxes + 256 crops: "outlines",
# 4 epochs: the detection recipe above (batches of 8, multi-scale) coarse/fine map50 0.086/0.028 in
# 122 CPU s; batches of 16, burn-in, one size 0.288/0.073 in 91 CPU s. "clutter" (--cls-box
# objectness, --cls-zoom 0.4): 12 epochs 0.264/0.024 (202 CPU s), 24 epochs 0.847/0.240 (408 s),
# 40 epochs 0.967/0.544 (673 s).
YOLOV2_RECIPE = {**DETECT_RECIPE, "lr": 2e-3, "batch_size": 16, "burn_in": 60, "epochs": 40,
                 "options": {"multi_scale": False},
                 "about": "cnnkit's CPU recipe for small data and YOLO9000 joint training (Adam 2e-3, burn-in 60, "
                          "batches of 16, one input size, 40 epochs, 128 px): bench/yolo9000_sets.py"}
YOLOV2_FAMILY = ("yolov2", "yolov2-tiny", "yolo9000")

# The papers' recipes (`--recipe paper`); iteration counts in epochs of the paper's data: VOC 2007+2012 trainval
# (16,551 images) for YOLOv1/v2, COCO trainval35k (117,264) for YOLOv3's Darknet cfg.
DARKNET_SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "scheduler": "multistep",
               "gamma": 0.1}
PAPER_RECIPES = {
    "yolov1": {
        **DARKNET_SGD, "epochs": 135, "img_size": 448, "lr": 1e-2, "milestones": [75, 105], "burn_in": 600,
        "options": {"jitter": 0.2},
        "about": "Redmon et al. 2016 sec. 2.2: 135 epochs on VOC 2007+2012, batch 64, momentum 0.9, weight decay "
                 "5e-4, lr raised from 1e-3 to 1e-2 over the first epochs, 1e-2 to epoch 75, 1e-3 for 30, 1e-4 for 30; "
                 "dropout 0.5, random scaling and translation up to 20%, exposure and saturation up to 1.5 in HSV. "
                 "The warm-up is Darknet's burn-in (lr x (step/600)^4; yolov1.cfg steps it up over 600 batches)."},
    "yolov2": {
        **DARKNET_SGD, "epochs": 160, "img_size": 416, "lr": 1e-3, "milestones": [60, 90], "burn_in": 1000,
        "about": "Redmon & Farhadi 2017 sec. 'Training for detection': 160 epochs, lr 1e-3 divided by 10 at epochs "
                 "60 and 90, weight decay 5e-4, momentum 0.9, random crops and colour shifts; a new input size "
                 "every 10 batches (multi-scale: a .cfg's random=). Batch 64 and burn_in 1000 are Darknet's "
                 "yolov2-voc.cfg's."},
    "yolov3": {
        **DARKNET_SGD, "epochs": 273, "img_size": 416, "lr": 1e-3, "milestones": [218, 246], "burn_in": 1000,
        "about": "The YOLOv3 paper gives no schedule: Darknet's yolov3.cfg (random=1, so multi-scale): batch 64, lr "
                 "1e-3, burn_in 1000, 500,200 batches with /10 at 400,000 and 450,000 (273 epochs, /10 at 218 and 246 "
                 "of COCO trainval35k), momentum 0.9, decay 5e-4; 416 px (the cfg's own text says 608)."},
}
# Darknet-19 (YOLOv2 paper) and Darknet-53 (darknet53.cfg): ImageNet with Darknet's polynomial decay
CLASSIFIER_PAPER = {
    "darknet19": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "epochs": 160,
                  "img_size": 224, "lr": 0.1, "scheduler": "poly", "power": 4.0, "options": {"augment": "darknet"},
                  "about": "Redmon & Farhadi 2017 sec. 'Training for classification': ImageNet 160 epochs, SGD lr "
                           "0.1, polynomial decay power 4, weight decay 5e-4, momentum 0.9, 224 px, random crops, "
                           "rotations, hue/saturation/exposure shifts (then 10 epochs at 448 px, lr 1e-3: not part of "
                           "this recipe); batch 128 is darknet19.cfg's."},
    "darknet53": {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128, "epochs": 80,
                  "img_size": 256, "lr": 0.1, "scheduler": "poly", "power": 4.0, "burn_in": 1000,
                  "options": {"augment": "darknet"},
                  "about": "The YOLOv3 paper gives no classifier recipe: Darknet's darknet53.cfg: batch 128, lr 0.1, "
                           "burn_in 1000, polynomial decay power 4 over 800,000 batches (80 epochs), momentum 0.9, "
                           "decay 5e-4, 256 px, rotations and hue/saturation/exposure shifts."},
}
DEFAULT_ABOUT = "cnnkit's short CPU recipe for the synthetic shapes (Adam 1e-3, cosine, 128 px)"

# Darknet's "Bn ops" at 416 (YOLOv3 paper, darknet site) are FLOPs: multiply-adds are half.
PAPER_MACS = {"yolov3": 65.86e9 / 2, "yolov3-tiny": 5.56e9 / 2}



def _detector(name: str, build: str, family: str = "yolov3", **kw) -> ModelSpec:
    """A YOLO detector of ``family`` (its loss: yolov1, yolov2 or yolov3) with the CPU and paper recipes."""
    recipe = YOLOV2_RECIPE if name in YOLOV2_FAMILY else {**DETECT_RECIPE, "about": DEFAULT_ABOUT}
    return ModelSpec(name=name, task="detect", build=build, task_class=TASK, default_data=DATA,
                     recipe={**recipe, "img_size": 128}, recipes={"paper": PAPER_RECIPES[family]},
                     paper_macs=PAPER_MACS.get(name), loss=kw.pop("loss", family), **kw)


class CfgSpec(ModelSpec):
    """``darknet-cfg``: a .cfg given by path is built as written -- its ``[net]`` width is the
    default input size, its head's ``classes=`` the classes, its head the loss and paper (a file
    without a head is a classifier); ``--img-size`` / ``--num-classes`` still override."""

    def for_file(self, path: str) -> ModelSpec:
        from cnnkit.plugins.yolo.cfgfile import describe

        about = describe(path)
        family = str(about["family"])
        size = int(about["img_size"])
        spec = replace(super().for_file(path), img_size=size, description=f"Darknet .cfg {Path(path).name}",
                       recipe={**self.recipe, "img_size": size})
        if family == "classify":
            return replace(spec, task="classify", task_class=None, loss="", paper="", default_data="synthetic:textures",
                           num_classes=int(about["num_classes"]), recipe={**BACKBONE_RECIPE, "img_size": size},
                           recipes={"paper": CLASSIFIER_PAPER["darknet53"]})
        return replace(spec, num_classes=int(about["num_classes"]), loss=family, paper=PAPERS[family],
                       min_img_size=64 if family == "yolov1" else 32, recipes={"paper": PAPER_RECIPES[family]})


CFG_DIR = Path(__file__).parent / "cfg"
# Darknet's configs shipped in cfg/ that no hand-written model below builds (those that one does --
# yolov2, yolov2-tiny, yolov3, yolov3-tiny, darknet19, darknet53 -- are the same networks).
# name, .cfg file, loss, paper, input size, classes, description
_CFGS = [
    ("yolov1-darknet", "yolov1", "yolov1", V1, 448, 20,
     "Darknet's yolov1.cfg: batch norm, a locally connected layer, 3 boxes"),
    ("yolov1-tiny", "yolov1-tiny", "yolov1", V1, 448, 20,
     "Darknet's yolov1-tiny.cfg: 8 conv layers, batch norm, 1 FC layer"),
    ("yolov2-voc", "yolov2-voc", "yolov2", V2, 416, 20, "Darknet's yolov2-voc.cfg: YOLOv2 with VOC anchors"),
    ("yolov2-tiny-voc", "yolov2-tiny-voc", "yolov2", V2, 416, 20, "Darknet's yolov2-tiny-voc.cfg"),
    ("yolo9000", "yolo9000", "yolov2", V2, 544, 9418,
     "YOLO9000: Darknet-19, 3 anchors, softmax over the 9418-node WordTree"),
    ("yolov3-voc", "yolov3-voc", "yolov3", V3, 416, 20, "Darknet's yolov3-voc.cfg"),
    ("yolov3-spp", "yolov3-spp", "yolov3", V3, 608, 80, "YOLOv3 with spatial pyramid pooling (yolov3-spp.cfg)"),
    ("yolov3-openimages", "yolov3-openimages", "yolov3", V3, 608, 601, "YOLOv3 for Open Images' 601 classes"),
]

DETECTORS = [
    _detector("yolov1", f"{MODELS}:yolov1", family="yolov1", paper=V1, img_size=448, min_img_size=64, num_classes=20,
              description="YOLOv1 as published: 24 conv (no batch norm) + 2 FC layers, S=7, B=2"),
    _detector("yolov1-bn", f"{MODELS}:yolov1", family="yolov1", paper=V1, img_size=448, min_img_size=64, num_classes=20,
              build_kwargs={"batch_norm": True},
              description="YOLOv1 with batch norm after every convolution (YOLOv2's first change)"),
    _detector("yolov1-fast", f"{MODELS}:yolov1_fast", family="yolov1", paper=V1, img_size=448, min_img_size=64,
              num_classes=20, options={"batch_norm": False},
              description="Fast YOLO as published: 9 conv layers (no batch norm; --batch-norm) + 1 FC, S=7, B=2"),
    _detector("yolov2", f"{MODELS}:yolov2", family="yolov2", paper=V2, img_size=416, num_classes=80,
              description="YOLOv2: Darknet-19, 5 anchors, passthrough layer"),
    _detector("yolov2-tiny", f"{MODELS}:yolov2_tiny", family="yolov2", paper=V2, img_size=416, num_classes=80,
              description="Tiny YOLOv2: 9 conv layers, 5 anchors"),
    _detector("yolov3", f"{MODELS}:yolov3", family="yolov3", paper=V3, paper_params=61_949_149, img_size=416,
              num_classes=80, description="YOLOv3: Darknet-53, 3 scales x 3 anchors"),
    _detector("yolov3-tiny", f"{MODELS}:yolov3_tiny", family="yolov3", paper=V3, paper_params=8_852_366,
              img_size=416, num_classes=80, description="Tiny YOLOv3: 2 scales x 3 anchors"),
    *[_detector(name, "cnnkit.plugins.yolo.darknet:model_from_cfg", family=loss, paper=paper, img_size=size,
                min_img_size=64 if loss == "yolov1" else 32, num_classes=classes, description=description,
                build_kwargs={"cfg": str(CFG_DIR / f"{cfg}.cfg")})
      for name, cfg, loss, paper, size, classes, description in _CFGS],
    # a .cfg given by path: built as written (CfgSpec.for_file reads its size, classes and head)
    CfgSpec(**vars(_detector("darknet-cfg", "cnnkit.plugins.yolo.darknet:model_from_cfg", aliases=("*.cfg",),
                             img_size=416, num_classes=80, loss="",
                             description="A network read from a Darknet .cfg file (pass the path as the model)"))),
]
BACKBONE_RECIPE = {"optimizer": "sgd", "lr": 0.05, "img_size": 64, "batch_size": 32,
                   "about": "cnnkit's short CPU recipe for the synthetic textures (SGD 0.05, cosine, 64 px)"}
CLASSIFIERS = [
    ModelSpec(name="darknet19", task="classify", build=f"{MODELS}:darknet19", paper=V2, paper_params=20_842_376,
              img_size=224, default_data="synthetic:textures", recipe=BACKBONE_RECIPE,
              recipes={"paper": CLASSIFIER_PAPER["darknet19"]},
              description="Darknet-19 classifier (YOLOv2's backbone)"),
    ModelSpec(name="darknet53", task="classify", build=f"{MODELS}:darknet53", paper=V3, paper_params=41_609_928,
              img_size=256, default_data="synthetic:textures", recipe=BACKBONE_RECIPE,
              recipes={"paper": CLASSIFIER_PAPER["darknet53"]},
              description="Darknet-53 classifier (YOLOv3's backbone)"),
]


@hookimpl
def register_models(register):
    for spec in DETECTORS + CLASSIFIERS:
        register(spec)


PJREDDIE = "https://pjreddie.com/media/files/"
DARKNET_LICENSE = "public domain (Darknet's YOLO LICENSE)"
# pjreddie publishes no hashes; sizes are those of the files our writer produces for these networks
# (header + float32 values), so a truncated download is still refused. yolov3-tiny.weights is pinned by the
# SHA-256 of the published file (35,434,956 bytes).
WEIGHTS = [
    WeightsSpec(name="yolov3.weights", model="yolov3", file="yolov3.weights", url=PJREDDIE + "yolov3.weights",
                size=248_007_048, license=DARKNET_LICENSE, variant="yolov3.cfg, COCO 80 classes", format="darknet",
                classes="coco"),
    WeightsSpec(name="yolov3-tiny.weights", model="yolov3-tiny", file="yolov3-tiny.weights",
                url=PJREDDIE + "yolov3-tiny.weights", size=35_434_956, license=DARKNET_LICENSE,
                sha256="dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
                variant="yolov3-tiny.cfg, COCO 80 classes", format="darknet", classes="coco"),
    WeightsSpec(name="yolov2.weights", model="yolov2", file="yolov2.weights", url=PJREDDIE + "yolov2.weights",
                size=203_934_260, license=DARKNET_LICENSE, variant="yolov2.cfg (608), COCO 80 classes",
                format="darknet", classes="coco"),
    WeightsSpec(name="yolov2-tiny.weights", model="yolov2-tiny", file="yolov2-tiny.weights",
                url=PJREDDIE + "yolov2-tiny.weights", size=44_948_600, license=DARKNET_LICENSE,
                variant="yolov2-tiny.cfg, COCO 80 classes", format="darknet", classes="coco"),
    WeightsSpec(name="darknet53.conv.74", model="yolov3", file="darknet53.conv.74", url=PJREDDIE + "darknet53.conv.74",
                size=162_482_580, license=DARKNET_LICENSE, format="darknet",
                variant="Darknet-53's first 74 layers (ImageNet), the start of YOLOv3 training"),
]


@hookimpl
def register_weights(register):
    for entry in WEIGHTS:  # Darknet's networks see pixels in [0, 1] as they are
        register(replace(entry, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("synthetic:figures", "detect", "cnnkit.plugins.yolo.synthetic:Figures", None,
                         "rings, crosses and bars (labels=fine) or boxes all called 'shape' (labels=coarse)"))
    register(DatasetSpec("synthetic:figure-crops", "classify", "cnnkit.plugins.yolo.synthetic:FigureCrops", None,
                         "one ring, cross or bar an image (YOLO9000 joint-training demo)"))


@hookimpl
def register_losses(register):
    # a .cfg's head sets these for its model (Darknet's coord_scale, noobject_scale, thresh, rescore, ...);
    # flags win; rescore 1: objectness trained towards the box's IoU, 0: towards 1
    register(LossSpec("yolov1", "cnnkit.plugins.yolo.losses:yolov1", ("detect",),
                      {"coord_scale": 5.0, "noobject_scale": 0.5, "object_scale": 1.0, "class_scale": 1.0,
                       "rescore": 1},
                      "YOLOv1 sum-squared error (--coord-scale 5, --noobject-scale 0.5, --object-scale, "
                      "--class-scale, --rescore)"))
    register(LossSpec("yolov2", "cnnkit.plugins.yolo.losses:yolov2", ("detect",),
                      {"ignore_thresh": 0.6, "object_scale": 5.0, "noobject_scale": 1.0, "coord_scale": 1.0,
                       "class_scale": 1.0, "rescore": 1, "cls_objectness": "paper", "cls_box": "objectness"},
                      "YOLOv2 anchor loss, softmax classes (--ignore-thresh, --object-scale, --noobject-scale, "
                      "--coord-scale, --class-scale, --rescore; --cls-objectness paper|darknet, "
                      "--cls-box class|objectness: YOLO9000's classification images)"))
    register(LossSpec("yolov3", "cnnkit.plugins.yolo.losses:yolov3", ("detect",),
                      {"ignore_thresh": 0.5, "truth_thresh": 1.0},
                      "YOLOv3 three-scale loss, logistic classes (--ignore-thresh, --truth-thresh)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.yolo.commands import register

    register(app)
