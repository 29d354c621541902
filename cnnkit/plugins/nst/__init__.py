"""Neural style transfer: Gatys et al. (`cnnkit stylize`) and Johnson et al.'s fast stylizer
(`cnnkit train fast-style`). Hook implementations only, nothing heavy."""

from cnnkit.core.hookspecs import hookimpl
from cnnkit.core.registry import DatasetSpec, ModelSpec
from cnnkit.plugins.nst.data import is_photo_folder


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="fast-style", task="stylize", build="cnnkit.plugins.nst.models:transformer_net",
        task_class="cnnkit.plugins.nst.task:FastStyleTask",
        description="Johnson et al. 2016 image transformation network (train with --style S.jpg)",
        paper="Perceptual Losses for Real-Time Style Transfer and Super-Resolution", img_size=256,
        min_img_size=32, num_classes=3, default_data="synthetic:textures?n=64&size=128",
        defaults={"epochs": 2, "batch_size": 4, "img_size": 128, "optimizer": "adam", "lr": 1e-3,
                  "weight_decay": 0.0, "scheduler": "none"}))


@hookimpl
def register_losses(register):
    register("nst_content", "cnnkit.plugins.nst.losses:content_loss")
    register("nst_style", "cnnkit.plugins.nst.losses:style_loss")
    register("nst_tv", "cnnkit.plugins.nst.losses:total_variation")
    register("nst_perceptual", "cnnkit.plugins.nst.losses:StyleTransferLoss")


@hookimpl
def register_datasets(register):
    register(DatasetSpec("photos", "photos", "cnnkit.plugins.nst.data:photo_folder", is_photo_folder,
                         "a flat folder of photos (fast-style training)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.nst.commands import register

    register(app)
