"""R-CNN family pieces: anchors and their labelling, RoI sampling, the losses, SVM/ridge fitting,
the networks' shapes, options and torchvision's production models."""

import math

import pytest
import torch

from cnnkit.plugins.rcnn.losses import fast_rcnn_loss, rpn_loss
from cnnkit.plugins.rcnn.matching import HEAD_CODER, Labeller, Sampler
from cnnkit.plugins.rcnn.models import (
    RCNN,
    FasterRCNN,
    FastRCNN,
    torchvision_faster_rcnn,
    trunk,
)
from cnnkit.plugins.rcnn.roi_heads import postprocess
from cnnkit.plugins.rcnn.rpn import RPN, anchor_shapes, grid_anchors, proposals
from cnnkit.plugins.rcnn.svm import feature_scale, ridge, train_svm


def test_anchor_shapes_are_3_scales_by_3_ratios():
    shapes = anchor_shapes((16, 32, 64), (0.5, 1.0, 2.0))
    assert shapes.shape == (9, 4)
    w, h = shapes[:, 2] - shapes[:, 0], shapes[:, 3] - shapes[:, 1]
    assert torch.allclose(w * h, torch.tensor([16.0, 16, 16, 32, 32, 32, 64, 64, 64]) ** 2)
    assert torch.allclose(h / w, torch.tensor([0.5, 1, 2] * 3))
    anchors = grid_anchors(shapes, 2, 3, 8)
    assert anchors.shape == (2 * 3 * 9, 4)
    centre = (anchors[:9, :2] + anchors[:9, 2:]) / 2
    assert torch.allclose(centre, torch.tensor([4.0, 4.0]).expand(9, 2))


def test_label_anchors_paper_rules():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60], [0, 0, 14, 14], [30, 30, 34, 34]],
                           dtype=torch.float32)
    gt = torch.tensor([[0, 0, 10, 10], [29, 29, 39, 39]], dtype=torch.float32)
    labels, matched = Labeller(0.7, 0.3, low_quality=True)(anchors, gt)
    assert labels[0] == 1 and labels[1] == 1  # IoU 1.0 and 0.9 > 0.7
    assert labels[2] == 0  # no overlap: negative
    assert labels[3] == -1  # IoU 0.51: between 0.3 and 0.7, ignored
    assert labels[4] == 1 and torch.equal(matched[4], gt[1])  # IoU 0.16 but the best anchor of box 1


def test_rpn_ignores_anchors_crossing_the_border_in_training():
    rpn = RPN(8, 8, (16.0,), (1.0,), stride=8)
    features = torch.zeros(1, 8, 4, 4)  # a 32 x 32 image: anchors centred at 4, 12, 20, 28
    anchors = rpn.anchors(features)
    gt = [{"boxes": torch.tensor([[0.0, 0, 14, 14]]), "labels": torch.tensor([0])}]
    labels, _ = rpn.targets(anchors, gt, 32)
    crossing = ((anchors[:, :2] < 0) | (anchors[:, 2:] > 32)).any(1)
    assert int(crossing.sum()) == 12 and (labels[0][crossing] == -1).all()
    assert labels[0][5] == 1  # the box's best anchor inside the image (centre 12, 12), IoU 0.36
    rpn.ignore_border = False
    labels, _ = rpn.targets(anchors, gt, 32)
    assert labels[0][0] == 1  # the crossing anchor at (4, 4) would have been the best (IoU 0.53)


def test_sample_labels_256_at_most_half_positive():
    labels = torch.cat([torch.ones(300, dtype=torch.long), torch.zeros(1000, dtype=torch.long),
                        -torch.ones(50, dtype=torch.long)])
    s = Sampler(256, 0.5).mask(labels)
    assert int((s == 1).sum()) == 128 and int((s == 0).sum()) == 128
    few = Sampler(256, 0.5).mask(torch.cat([torch.ones(10, dtype=torch.long), torch.zeros(1000, dtype=torch.long)]))
    assert int((few == 1).sum()) == 10 and int((few == 0).sum()) == 246  # negatives fill up


def test_rpn_proposals_are_clipped_and_suppressed():
    anchors = torch.tensor([[0, 0, 20, 20], [1, 1, 21, 21], [40, 40, 80, 80], [-10, -10, 5, 5]], dtype=torch.float32)
    logits = torch.tensor([[[0.0, 3.0], [0.0, 2.0], [0.0, 1.0], [0.0, 0.5]]])
    out = proposals(anchors, logits, torch.zeros(1, 4, 4), 64, pre_nms=10, post_nms=10, nms_iou=0.7)[0]
    assert out.tolist() == [[0, 0, 20, 20], [40, 40, 64, 64], [0, 0, 5, 5]]  # 2nd suppressed, clipped to 64


def test_roi_labelling_and_25_percent_sampling():
    gt, gl = torch.tensor([[10.0, 10, 30, 30]]), torch.tensor([2])
    rois = torch.tensor([[10.0, 10, 30, 30], [12, 12, 30, 30], [20, 20, 40, 40], [100, 100, 120, 120]])
    labels, matched = Labeller(0.5, 0.5, bg_low=0.1)(rois, gt, gl)
    assert labels.tolist() == [3, 3, 0, -1]  # class 2 -> 3 (0 is background); IoU < 0.1 left out
    assert torch.equal(matched[0], gt[0])
    many = torch.cat([torch.full((100,), 1), torch.zeros(300, dtype=torch.long)])
    keep = Sampler(64, 0.25)([many])[0]
    assert len(keep) == 64 and int((many[keep] > 0).sum()) == 16


def test_fast_rcnn_loss_is_multitask_with_normalised_targets():
    rois = torch.tensor([[10.0, 10, 30, 30], [0, 0, 8, 8]])
    gt = torch.tensor([[12.0, 10, 32, 30], [0, 0, 1, 1]])
    labels = torch.tensor([2, 0])
    targets = HEAD_CODER.encode_single(gt, rois)
    target = targets[:1]
    deltas = torch.zeros(2, 4 * 3)
    deltas[0, 4:8] = target[0]  # class 2's slot (index 1) holds the exact target
    logits = torch.tensor([[-9.0, -9, 9, -9], [9.0, -9, -9, -9]])
    parts = fast_rcnn_loss(logits, deltas, labels, targets)
    assert parts["cls"] < 1e-3 and parts["box"] < 1e-6
    assert abs(target[0, 0].item() - 10 * 2 / 20) < 1e-6  # t_x = (G_x - P_x) / P_w, normalised by 0.1
    wrong = fast_rcnn_loss(logits, torch.zeros(2, 12), labels, targets)
    assert wrong["box"] > 0.1  # background RoIs never add box loss: only row 0 counts
    assert torch.allclose(wrong["box"], torch.nn.functional.smooth_l1_loss(
        torch.zeros(4), target[0], reduction="sum") / 2)


def test_rpn_loss_ignores_unsampled_anchors():
    logits = torch.tensor([[0.0, 5.0], [5.0, 0.0], [5.0, 0.0]])  # third is confidently wrong but ignored
    labels = torch.tensor([1, 0, -1])
    parts = rpn_loss(logits, torch.zeros(3, 4), labels, torch.zeros(3, 4), 3, mode="pyfaster")
    assert parts["rpn_obj"] < 0.01 and parts["rpn_box"] == 0


def test_rpn_loss_paper_and_pyfaster_normalisation():
    logits = torch.zeros(2, 100, 2)  # two images, 100 anchors each (25 locations x 4 anchors)
    labels = torch.full((2, 100), -1)
    labels[:, :3], labels[:, 3:8] = 1, 0  # 8 sampled an image, 3 positive
    deltas, targets = torch.zeros(2, 100, 4), torch.full((2, 100, 4), 0.5)
    paper = rpn_loss(logits, deltas, labels, targets, 25, mode="paper", batch=256, weight=10.0)
    # 16 sampled x ln 2 over N_cls = 256 a image; 6 positives x 4 x smooth_L1(0.5) = 0.125 each over N_reg / lambda
    assert torch.isclose(paper["rpn_obj"], torch.tensor(16 * math.log(2) / 512))
    assert torch.isclose(paper["rpn_box"], torch.tensor(10 * 6 * 4 * 0.125 / 50))
    pyfaster = rpn_loss(logits, deltas, labels, targets, 25, mode="pyfaster")
    assert torch.isclose(pyfaster["rpn_obj"], torch.tensor(math.log(2)))
    assert torch.isclose(pyfaster["rpn_box"], torch.tensor(6 * 4 * (0.5 - 0.5 / 9) / 16))  # beta 1/9: L1 part


def test_svm_hard_negative_mining_finds_the_rare_hard_negatives():
    """10,000 easy negatives and 5 hard ones the first random 1000 are unlikely to hold (features scaled
    to mean norm 20, C = 0.001, as R-CNN): the SVM of the first round alone (no mining) scores all 5 as
    objects (0/5 right, measured), the mined one rejects all 5, keeping every positive and easy negative."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(50, 2, generator=g) * 0.3 + torch.tensor([2.0, 0.0])
    easy = torch.randn(10000, 2, generator=g) * 0.3 + torch.tensor([-2.0, 0.0])
    hard = torch.randn(5, 2, generator=g) * 0.1 + torch.tensor([2.0, 3.0])  # near the positives in x, not in y
    scale = feature_scale(torch.cat([pos, easy, hard]))
    assert float((torch.cat([pos, easy, hard]) * scale).norm(dim=1).mean()) == pytest.approx(20.0)
    pos, easy, hard = pos * scale, easy * scale, hard * scale
    for rounds, hard_rejected in ((1, 0.0), (4, 1.0)):
        w, b = train_svm(pos, torch.cat([easy, hard]), 1e-3, rounds=rounds)
        assert float(((hard @ w + b) < 0).float().mean()) == hard_rejected
        assert bool(((pos @ w + b) > 0).all()) and bool(((easy @ w + b) < 0).all())


def test_ridge_at_the_papers_lambda_is_the_closed_form():
    """lambda = 1000 (the paper's, the default): (Xc'Xc + lambda I)^-1 Xc't on centred data, the
    bias unshrunk; at this lambda the weights shrink to 0.18 of the true ones (1.0 without ridge)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 5, generator=g).double()
    true = torch.randn(6, 4, generator=g).double()
    t = torch.nn.functional.pad(x, (0, 1), value=1.0) @ true
    xc, tc = x - x.mean(0), t - t.mean(0)
    w = torch.linalg.solve(xc.T @ xc + 1000 * torch.eye(5, dtype=torch.float64), xc.T @ tc)
    expected = torch.cat([w, (t.mean(0) - x.mean(0) @ w)[None]]).float()
    got = ridge(x.float(), t.float(), 1000.0)
    assert torch.allclose(got, expected, atol=1e-4)
    assert 0.1 < float(got[:5].norm() / true[:5].norm()) < 0.3


def test_postprocess_keeps_per_class_boxes_after_nms():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]], [[1.0, 1, 11, 11], [30, 30, 40, 40]]])
    scores = torch.tensor([[0.9, 0.8], [0.7, 0.05]])
    _, kept_scores, labels = postprocess(boxes, scores, 64, conf=0.1, iou=0.3)
    assert labels.tolist() == [0, 1] and torch.allclose(kept_scores, torch.tensor([0.9, 0.8]))


@pytest.mark.parametrize("size", [64, 96])
def test_network_shapes(size):
    images = torch.rand(2, 3, size, size)
    rois = torch.tensor([[0, 4.0, 4, 40, 40], [1, 10.0, 8, 30, 50], [1, 0.0, 0, size, size]])
    logits, deltas = FastRCNN(3)(images, rois)
    assert logits.shape == (3, 4) and deltas.shape == (3, 12)
    rcnn = RCNN(3)
    crops = rcnn.warp(images, rois)
    assert crops.shape == (3, 3, 32, 32)
    pooled, fc = rcnn.features(crops)
    assert rcnn.reg_weight.shape == (3, pooled.shape[1] + 1, 4) and rcnn.svm_weight.shape == (3, fc.shape[1])
    assert {"svm_weight", "svm_bias", "reg_weight", "svm_ready"} <= set(rcnn.state_dict())
    model = FasterRCNN(3).eval()
    features, obj, box = model(images)
    _, found = model.propose(images)
    k = 9 * (size // 4) ** 2
    assert obj.shape == (2, k, 2) and box.shape == (2, k, 4) and features.shape[-1] == size // 4
    assert len(found) == 2 and all(len(p) <= 300 for p in found)  # the test-time top 300


@pytest.mark.parametrize("name,stride,channels", [("resnet18", 8, 512), ("vgg16", 16, 512)])
def test_registered_backbones_through_the_contract(name, stride, channels):
    from cnnkit.core.base.plugins import load_plugins

    load_plugins()
    net, c, s = trunk(backbone=name)
    assert (c, s) == (channels, stride)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, channels, 64 // stride, 64 // stride)


def test_context_padding_is_16_of_227():
    images = torch.arange(64.0).repeat(64, 1)[None, None].expand(1, 3, 64, 64).contiguous()
    rcnn = RCNN(1, crop=227)
    crop = rcnn.warp(images, torch.tensor([[0, 16.0, 16, 48, 48]]))
    # the box's left edge (x = 16, where pixel values read 15.5) lands 16 pixels into the 227-pixel warp
    col = crop[0, 0, 100]
    assert abs(int(torch.argmin((col - 15.5).abs())) - 16) <= 1
    assert abs(int(torch.argmin((col - 47.5).abs())) - (227 - 16)) <= 1


def test_torchvision_model_trains_one_step():
    model = torchvision_faster_rcnn(arch="fasterrcnn_mobilenet_v3_large_fpn", num_classes=3)
    model.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 5, 30, 30]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    losses = model(images, targets)
    assert set(losses) == {"cls", "box", "rpn_obj", "rpn_box"}  # cnnkit's names for torchvision's terms
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    model.eval()
    out = model(images)
    assert all(o["labels"].min() >= 0 for o in out if len(o["labels"]))  # 0-based labels, no background


def test_bad_options_are_clear_errors(cli):
    r = cli("train", "faster-rcnn", "--schedule", "3step", "--no-track", "--data", "synthetic:shapes?n=4&size=64")
    assert r.code == 2 and "--schedule" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", "faster-rcnn", "--schedule", "4step", "--epochs", "2", "--no-track")
    assert r.code == 2 and "4step" in r.stderr
    r = cli("train", "fast-rcnn", "--ss-mode", "exhaustive", "--no-track")
    assert r.code == 2 and "--ss-mode" in r.stderr
    r = cli("train", "rcnn", "--backbone", "vgg99", "--no-track", "--data", "synthetic:shapes?n=4&size=64")
    assert r.code == 2 and "--backbone" in r.stderr
    r = cli("train", "rcnn", "--anchors", "3", "--no-track")
    assert r.code == 2 and "unknown option" in r.stderr


def test_four_step_schedule_gives_each_step_its_own_cosine():
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task

    load_plugins()
    task = make_task(models.get("faster-rcnn"), TrainConfig(model="faster-rcnn", epochs=8,
                                                             options={"schedule": "4step"}))
    task._steps_per_epoch = 10  # 8 epochs: two a step, 20 batches a step
    assert task.config.scheduler == "none"  # the steps' schedules replace the run-wide one
    starts = [task.phase(s) for s in (0, 20, 40, 60)]
    assert starts == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]  # each step starts at --lr
    assert task.phase(10) == (1, pytest.approx(0.5)) and task.phase(79)[1] < 0.01  # and anneals to ~0
    joint = make_task(models.get("faster-rcnn"), TrainConfig(model="faster-rcnn", epochs=8))
    assert joint.phase(50) == (0, 1.0) and joint.config.scheduler == "cosine"


def _layers(report):
    return {row["name"]: row for row in report["layers"]}


def test_summary_builds_the_papers_heads_on_the_papers_trunks(cli):
    """`cnnkit summary MODEL --backbone vgg16` takes the model's options as `train` does; VGG-16 gets
    the papers' heads (RPN 512, 7x7 RoI pool into fc6/fc7 4096: 137M for 20 classes, py-faster-rcnn's
    VGG16), AlexNet ZF's RPN 256 and a 6x6 pool, the small trunk keeps its small heads, sizes are options."""
    import json

    from tests.conftest import one_clear_line

    def report(*args):
        r = cli("summary", *args, "--json")
        assert r.code == 0, r.stderr
        return json.loads(r.stdout)

    vgg = report("faster-rcnn", "--backbone", "vgg16")
    rows = _layers(vgg)
    assert vgg["params"] == 137_061_851 and vgg["paper"]["params"] == 137_000_000
    assert rows["rpn.conv.0"]["output"][0] == 512 and rows["head.fc.1"]["params"] == 512 * 7 * 7 * 4096 + 4096
    assert rows["head.fc.4"]["output"] == [4096] and rows["head.cls"]["output"] == [21]
    zf = _layers(report("faster-rcnn", "--backbone", "alexnet"))
    assert zf["rpn.conv.0"]["output"][0] == 256 and zf["head.fc.1"]["params"] == 256 * 6 * 6 * 4096 + 4096
    rcnn = report("rcnn", "--backbone", "vgg16", "--img-size", "224")  # fc6 on pool5 of a 224 warp
    assert _layers(rcnn)["pool"]["output"] == [512, 7, 7] and rcnn["params"] == 134_346_581
    small = report("faster-rcnn")
    assert small["params"] == 1_036_331 and "params" not in small["paper"]
    assert _layers(small)["rpn.conv.0"]["output"][0] == 128 and _layers(small)["head.fc.1"]["output"] == [256]
    sized = _layers(report("faster-rcnn", "--backbone", "vgg16", "--fc", "1024", "--rpn-channels", "256"))
    assert sized["head.fc.4"]["output"] == [1024] and sized["rpn.conv.0"]["output"][0] == 256
    one_clear_line(cli("summary", "faster-rcnn", "--anchors", "3"), "unknown option", "--anchors", "--backbone")


def test_pretrained_vgg16_fills_fc6_fc7_from_its_imagenet_classifier(tmp_path, monkeypatch):
    """`--backbone vgg16 --pretrained`: the trunk and fc6/fc7 come from the registry's VGG-16 file
    (here a random state dict in torchvision's layout, cached under the registry's file name)."""
    from published_files import place

    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.models.pretrained import load_entry
    from cnnkit.core.tasks.base import make_task
    from cnnkit.core.weights import fetch as weights

    load_plugins()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(3)
    source = models.get("vgg16").create(num_classes=1000).state_dict()
    place(monkeypatch, tmp_path / "torch" / "hub" / "checkpoints", "vgg16", source)  # its hash becomes the registry's
    task = make_task(models.get("faster-rcnn"), TrainConfig(model="faster-rcnn", pretrained=True,
                                                             options={"backbone": "vgg16"}))
    entry = weights.pretrained_entry(task.spec, task.config.options)
    model = task.build_model()
    assert not torch.equal(model.head.fc[1].weight, source["classifier.0.weight"])
    load_entry(task, model, entry)  # what the trainer's set-up step does
    assert torch.equal(model.trunk.body.features[28].weight, source["features.28.weight"])  # conv5_3
    assert torch.equal(model.head.fc[1].weight, source["classifier.0.weight"])  # fc6
    assert torch.equal(model.head.fc[1].bias, source["classifier.0.bias"])
    assert torch.equal(model.head.fc[4].weight, source["classifier.3.weight"])  # fc7
    fc6 = model.head.fc[1].weight.clone()
    model.load_state_dict(model.state_dict())  # a checkpoint carries no classifier: fc6 stays
    assert torch.equal(model.head.fc[1].weight, fc6)
