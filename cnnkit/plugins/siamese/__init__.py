"""Siamese networks and face verification (hook implementations only, nothing heavy).

Embedders trained with triplet, contrastive or learned-similarity losses; ``cnnkit enroll``,
``cnnkit verify`` and ``cnnkit gallery`` over a SQLite gallery of face embeddings.
"""

from cnnkit.api import DatasetSpec, LossSpec, ModelSpec, hookimpl, is_pairs_file

BACKBONE = "cnnkit.plugins.siamese.models:siamese_backbone"
LOSSES = "cnnkit.plugins.siamese.losses"

# siamese-small's CPU recipe for synthetic:glyphs (32 px); its unseen-identity AUC is measured by
# tests/test_siamese_train.py on a shortened run, not claimed here.
SMALL_RECIPE = {"epochs": 10, "batch_size": 64, "img_size": 32, "lr": 1e-3, "optimizer": "adamw",
                "weight_decay": 1e-4, "scheduler": "cosine",
                "about": "cnnkit's CPU recipe for synthetic:glyphs (32 px)"}
# Fine-tuning dlib's pretrained face ResNet on an identity root of aligned 150x150 chips.
FACE_RECIPE = {"epochs": 5, "batch_size": 32, "img_size": 150, "lr": 1e-4, "optimizer": "adamw",
               "weight_decay": 1e-4, "scheduler": "cosine",
               "about": "fine-tuning dlib's pretrained model on aligned 150x150 chips (AdamW 1e-4, cosine)"}
BACKBONE_RECIPE = {"epochs": 20, "batch_size": 64, "img_size": 96, "lr": 1e-3, "optimizer": "adamw",
                   "weight_decay": 1e-4, "scheduler": "cosine", "about": "cnnkit's CPU recipe (AdamW 1e-3, cosine)"}
OWN = "cnnkit's own embedder: no paper trains it, so its paper recipe is the default"
# FaceNet (Schroff et al. 2015 sec. 3.2, 4): AdaGrad from lr 0.05, random init, semi-hard triplets mined online in
# batches of ~1800 faces, ~40 a person, margin 0.2. It trains for 1000-2000 CPU-cluster hours, not epochs.
FACENET_RECIPE = {"epochs": 20, "batch_size": 1800, "img_size": 160, "lr": 0.05, "optimizer": "adagrad",
                  "weight_decay": 0.0, "scheduler": "none", "options": {"k": 40, "margin": 0.2, "mining": "semi-hard"},
                  "about": "Schroff et al. 2015 sec. 3.2, 4: AdaGrad lr 0.05, random init, semi-hard triplets mined "
                           "online in batches of ~1800 faces (~40 a person), margin 0.2; 160 px (the paper's networks "
                           "take 96-224). Its length is hours, not epochs: the default's 20."}
# dlib's face ResNet: dnn_metric_learning_on_images_ex.cpp with 35 x 15 batches (dnn_face_recognition_ex.cpp)
DLIB_RECIPE = {"epochs": 5, "batch_size": 525, "img_size": 150, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9,
               "weight_decay": 1e-4, "scheduler": "plateau", "gamma": 0.1, "options": {"k": 15, "pretrained": False},
               "about": "How King trained dlib's model (dnn_face_recognition_ex.cpp: dnn_metric_learning_on_images_ex "
                        "with batches of 35 people x 15 chips): from scratch, SGD lr 0.1, momentum 0.9, weight decay "
                        "1e-4, lr x 0.1 when the loss stops falling (dlib counts 10,000 batches; here 2 epochs of "
                        "the key metric), loss_metric (the dlib-metric loss), 150 px chips. Epochs: not stated."}


def _embedder(name: str, build: str, *, img_size: int, min_img_size: int, loss: str = "triplet", **kw) -> ModelSpec:
    return ModelSpec(name=name, task="embed", build=build, loss=loss, img_size=img_size,
                     min_img_size=min_img_size, num_classes=0, default_data="synthetic:glyphs", **kw)


@hookimpl
def register_models(register):
    register(_embedder("siamese-small", "cnnkit.plugins.siamese.models:siamese_small", img_size=64,
                       min_img_size=16, recipe=SMALL_RECIPE, recipes={"paper": {**SMALL_RECIPE, "about": OWN}},
                       description="small CNN embedder (128-d, L2-normalised) for CPUs"))
    register(_embedder("siamese-resnet18", BACKBONE, img_size=96, min_img_size=32, paper="He et al. 2015",
                       build_kwargs={"backbone": "resnet18"}, recipe=BACKBONE_RECIPE,
                       recipes={"paper": {**BACKBONE_RECIPE, "about": OWN}},
                       description="ResNet-18 backbone with a 128-d embedding head"))
    register(_embedder("siamese-inception-resnet", BACKBONE, img_size=160, min_img_size=75,
                       paper="FaceNet (Schroff et al. 2015)", build_kwargs={"backbone": "inception-resnet-v1"},
                       recipe={**BACKBONE_RECIPE, "img_size": 160}, recipes={"paper": FACENET_RECIPE},
                       description="Inception-ResNet-v1 backbone (from the classify plugin) "
                       "with a 128-d embedding head"))
    # its weights ship in the face_recognition_models package: --pretrained builds them in
    register(_embedder("face-resnet", "cnnkit.plugins.siamese.face_resnet:face_resnet", img_size=150,
                       min_img_size=132, options={"pretrained": False},
                       paper="King 2017 (dlib dnn_face_recognition_ex)",
                       recipe=FACE_RECIPE, recipes={"paper": DLIB_RECIPE},
                       loss="dlib-metric",  # the loss dlib trained it with
                       description="dlib's face ResNet-29 (128-d, 99.38% on LFW), "
                       "pretrained from face_recognition_models"))


@hookimpl
def register_losses(register):
    margin = {"margin": None}
    register(LossSpec("triplet", f"{LOSSES}:triplet", ("embed",), {**margin, "mining": "semi-hard"},
                      "FaceNet triplet loss, mined online (--mining batch-hard|semi-hard|all, --margin 0.2)"))
    register(LossSpec("contrastive", f"{LOSSES}:contrastive", ("embed",), margin,
                      "Hadsell et al. contrastive loss (--margin 1.0)"))
    register(LossSpec("dlib-metric", f"{LOSSES}:dlib_metric", ("embed",), {**margin, "distance_threshold": 0.6},
                      "dlib's loss_metric: hinge on the distance around the 0.6 threshold (--margin 0.04), "
                      "as many hardest impostor pairs as genuine pairs (face-resnet's default)"))
    register(LossSpec("similarity", f"{LOSSES}:similarity", ("embed",), {"metric": "similarity"},
                      "binary cross-entropy of the learned similarity sigmoid(w.|f_i - f_j| + b)"))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("lfw-pairs", "embed", "cnnkit.api:pairs_dataset", is_pairs_file,
                         "LFW-style pairs.txt next to an identity folder (evaluation only)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.siamese.commands import register

    register(app)
