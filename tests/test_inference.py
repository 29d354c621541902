"""The fast torch inference path: batch norm folded into convolutions, channels-last on CPU."""

import pytest
import torch

from cnnkit.core.base.plugins import load_plugins
from cnnkit.core.base.registry import models
from cnnkit.core.load.inference import fold_batchnorm, for_inference


def test_folded_darknet_model_gives_the_same_heads():
    """yolov3-tiny.cfg (a conv + batch norm + leaky block per layer): every batch norm folds, and
    the heads agree with the unfolded network's to float precision."""
    load_plugins()
    from cnnkit.plugins.yolo.darknet import packaged_cfg

    torch.manual_seed(0)
    model = models.get(str(packaged_cfg("yolov3-tiny"))).create(num_classes=3).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = [h.clone() for h in model(x)]
        fast = for_inference(model, "cpu")
        after = fast(x)
    assert bns == 11 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(before, after))


def test_fold_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
