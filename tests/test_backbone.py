"""The backbone contract: forward_features(x) and feature_channels; num_classes=0 drops the classifier."""

import pytest
import torch

from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.models.backbone import Backbone, build_backbone


@pytest.fixture(autouse=True)
def _plugins():
    load_plugins()


# model, input size, feature map (C, H, W) at that size, parameters of the classifier it drops
CASES = [
    ("resnet18", 64, (512, 2, 2), 512 * 1000 + 1000),
    ("resnet50", 64, (2048, 2, 2), 2048 * 1000 + 1000),
    ("vgg16", 64, (512, 2, 2), 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000),
    ("alexnet-lrn", 227, (256, 6, 6), 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000),
    ("densenet121", 64, (1024, 2, 2), 1024 * 1000 + 1000),
    ("googlenet", 224, (1024, 7, 7), None),  # the auxiliary classifiers go too
    ("inception-resnet-v1", 299, (1792, 8, 8), 1792 * 1000 + 1000),
    ("inception-v4", 299, (1536, 8, 8), 1536 * 1000 + 1000),
]


@pytest.mark.parametrize("name,size,shape,head", CASES)
def test_classifiers_serve_as_backbones(name, size, shape, head):
    with torch.device("meta"):
        full = models.get(name).create(num_classes=1000)
        trunk = build_backbone(name)
    assert isinstance(full, Backbone) and full.feature_channels == shape[0] == trunk.out_channels
    with torch.device("meta"):
        assert tuple(trunk(torch.empty(1, 3, size, size)).shape) == (1, *shape)
        assert tuple(full.forward_features(torch.empty(1, 3, size, size)).shape) == (1, *shape)
    dropped = sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in trunk.parameters())
    if head is not None:
        assert dropped == head
    else:
        assert dropped > 1024 * 1000


def test_a_model_without_the_contract_is_a_clear_error():
    with pytest.raises(CnnkitError, match="'inception-v3' cannot serve as a backbone"):
        build_backbone("inception-v3")


def test_trunk_state_dict_keeps_the_classifier_keys_for_loading_published_weights():
    full = models.get("resnet18").create(num_classes=1000).state_dict()
    trunk = build_backbone("resnet18").body.state_dict()
    assert set(trunk) == set(full) - {"fc.weight", "fc.bias"}
