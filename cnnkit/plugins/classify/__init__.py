"""Image classification: the ImageNet case studies (hook implementations only, nothing heavy)."""

from cnnkit.core.hookspecs import hookimpl
from cnnkit.core.registry import ModelSpec

TASK = "cnnkit.plugins.classify.task:ClassifyTask"
TORCHVISION = "cnnkit.plugins.classify.models:torchvision_model"

# name, torchvision arch, paper params, paper multiply-adds, description, aliases
_TORCHVISION = [
    ("resnet18", "resnet18", 11_689_512, 1.8e9, "ResNet-18 (He et al. 2015), basic blocks", ()),
    ("resnet34", "resnet34", 21_797_672, 3.6e9, "ResNet-34, basic blocks", ()),
    ("resnet50", "resnet50", 25_557_032, 3.8e9, "ResNet-50, bottleneck blocks", ()),
    ("vgg11", "vgg11", 132_863_336, 7.6e9, "VGG configuration A (Simonyan & Zisserman 2014)", ()),
    ("vgg16", "vgg16", 138_357_544, 15.5e9, "VGG configuration D", ()),
    ("alexnet", "alexnet", 61_100_840, 0.72e9, "AlexNet as torchvision builds it (no LRN)", ()),
    ("densenet121", "densenet121", 7_978_856, 2.9e9, "DenseNet-121 (Huang et al. 2017), k=32", ()),
]


@hookimpl
def register_models(register):
    for name, arch, params, macs, description, aliases in _TORCHVISION:
        register(ModelSpec(name=name, task="classify", build=TORCHVISION, task_class=TASK,
                           build_kwargs={"arch": arch}, paper_params=params, paper_macs=macs,
                           description=description, aliases=aliases, img_size=224,
                           min_img_size=32, default_data="synthetic:textures"))


@hookimpl
def register_losses(register):
    register("cross_entropy", "cnnkit.plugins.classify.losses:ClassificationLoss")
