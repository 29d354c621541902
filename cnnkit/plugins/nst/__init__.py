"""Neural style transfer: Gatys et al. (`cnnkit stylize`) and Johnson et al.'s fast stylizer
(`cnnkit train fast-style`). Hook implementations only, nothing heavy."""

from cnnkit.api import DatasetSpec, LossSpec, ModelSpec, WeightsSpec, hookimpl
from cnnkit.plugins.nst.data import is_photo_folder

# Johnson et al. 2016: VGG-16, content at relu2_2, style at relu1_2, relu2_2, relu3_3, relu4_3.
PERCEPTUAL_OPTIONS = {"style": "", "style_size": 0, "content_weight": 1.0, "style_weight": 1e6, "tv_weight": 0.0,
                      "content_layers": "conv2_2", "style_layers": "conv1_2,conv2_2,conv3_3,conv4_3",
                      "vgg": "vgg16", "vgg_weights": ""}


JOHNSON = {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"}


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="fast-style", task="stylize", build="cnnkit.plugins.nst.models:transformer_net", loss="perceptual",
        description="Johnson et al. 2016 image transformation network (train with --style S.jpg)",
        paper="Perceptual Losses for Real-Time Style Transfer and Super-Resolution", img_size=256,
        min_img_size=32, num_classes=3, default_data="synthetic:textures?n=64&size=128",
        recipe={**JOHNSON, "img_size": 128,
                "about": "Johnson et al.'s recipe at 128 px (CPU-sized); --recipe paper: 256 px"},
        recipes={"paper": {**JOHNSON, "img_size": 256,
                           "about": "Johnson et al. 2016 sec. 4.1 and supplementary: 40k iterations of batches of 4 on "
                                    "COCO's 80k images resized to 256x256 (2 epochs), Adam lr 1e-3, no weight decay or "
                                    "dropout; the loss weights are chosen per style"}}))


@hookimpl
def register_weights(register):
    # the frozen feature extractor of `cnnkit stylize` and the perceptual loss (torchvision's file)
    for depth, file, use in ((19, "vgg19-dcbb9e9d.pth", "Gatys style transfer"),
                             (16, "vgg16-397923af.pth", "the fast stylizer's perceptual loss")):
        register(WeightsSpec(name=f"vgg{depth}-nst", file=file, url=f"https://download.pytorch.org/models/{file}",
                             hash_prefix=file[-12:-4],
                             license="BSD-3-Clause (torchvision); ImageNet-1k terms apply",
                             variant=f"torchvision VGG-{depth}, ImageNet; its features feed the style losses",
                             description=f"VGG-{depth} features for {use}"))


@hookimpl
def register_losses(register):
    register(LossSpec("perceptual", "cnnkit.plugins.nst.perceptual:perceptual", ("stylize",), PERCEPTUAL_OPTIONS,
                      "Johnson et al.: VGG-16 content + Gram style (+ TV) against --style S.jpg (--vgg vgg19)"))


@hookimpl
def register_datasets(register):
    register(DatasetSpec("photos", "photos", "cnnkit.plugins.nst.data:photo_folder", is_photo_folder,
                         "a flat folder of photos (fast-style training)"))


@hookimpl
def register_commands(app):
    from cnnkit.plugins.nst.commands import register

    register(app)
