"""The YOLO losses on hand-built outputs whose correct loss values are known."""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.core.base import plugins
from cnnkit.core.base.registry import losses, resolve
from cnnkit.plugins.yolo.losses import YOLOv1Loss, YOLOv2Loss, YOLOv3Loss, grid_view

GT = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]  # centre (24, 24), 32 x 32


def test_losses_are_registered_by_name():
    """Each YOLO model names its loss; the registered factory build(model, task) makes it."""
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task

    plugins.load_plugins()
    for name, cls in (("yolov1", YOLOv1Loss), ("yolov2", YOLOv2Loss), ("yolov3", YOLOv3Loss)):
        spec = losses.get(name)
        assert spec.tasks == ("detect",) and models.get(name).loss == name
        task = make_task(models.get(name), TrainConfig(model=name, img_size=64), classes=["a", "b"])
        criterion = resolve(spec.build)(task.build_model(), task)
        assert type(criterion) is cls and criterion.num_classes == 2


def _v3_output(obj_logit_other: float = 3.0) -> torch.Tensor:
    """One 4x4 head (stride 16 at 64 px), anchors 32x32 and 16x16, 2 classes. Anchor 1 in the
    object's cell predicts the ground-truth box exactly but is not responsible."""
    out = torch.zeros(1, 2 * 7, 4, 4)
    p = grid_view(out, 2)
    p[..., :2] = 0.3  # centres off by 1.2 px everywhere: only the responsible one is corrected
    p[0, 1, 1, 1, 2:4] = math.log(2.0)  # 16 px anchor * e^log2 = 32 px
    p[0, 1, 1, 1, 4] = obj_logit_other
    return out.requires_grad_()


def test_v3_one_anchor_per_ground_truth_and_ignore_thresh():
    anchors = [torch.tensor([[32.0, 32.0], [16.0, 16.0]])]  # [yolo] anchors: input pixels
    out = _v3_output()
    ignoring = YOLOv3Loss(2, anchors, ignore_thresh=0.5)([out], GT, 64)
    not_ignoring = YOLOv3Loss(2, anchors, ignore_thresh=1.0)([out], GT, 64)
    # the exact-fit prediction of the non-responsible anchor loses its objectness loss: softplus(3)
    assert float((not_ignoring["obj"] - ignoring["obj"]).detach()) == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-5)
    # the responsible anchor (0, shape fits best) at cell (1, 1): BCE of two zero class logits
    assert float(ignoring["cls"].detach()) == pytest.approx(2 * math.log(2), rel=1e-5)
    ignoring["box"].backward()
    grad = grid_view(out.grad, 2)[..., :4].abs().sum(-1)
    assert grad.nonzero().tolist() == [[0, 0, 1, 1]]


def test_v3_images_without_objects_only_have_objectness_loss():
    out = torch.randn(2, 3 * 8, 2, 2)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    parts = YOLOv3Loss(3, [torch.tensor([[13.0, 13.0], [26.0, 26.0], [51.0, 51.0]])])([out], empty, 64)
    assert float(parts["box"]) == 0 and float(parts["cls"]) == 0
    expected = torch.nn.functional.softplus(grid_view(out, 3)[..., 4]).sum() / 2
    assert float(parts["obj"]) == pytest.approx(float(expected), rel=1e-5)


def test_v2_objectness_target_is_the_iou():
    anchors = [torch.tensor([[2.0, 2.0], [1.0, 1.0]])]  # [region] anchors: grid cells (16 px at 64 px, 4x4)
    out = torch.zeros(1, 2 * 7, 4, 4)
    p = grid_view(out, 2)
    p[..., 4] = -30.0  # no other prediction claims an object
    p[0, 0, 1, 1, 4] = 0.0  # responsible anchor: confidence 0.5, box exactly the ground truth
    exact = YOLOv2Loss(2, anchors)([out], GT, 64)
    assert float(exact["obj"]) == pytest.approx(5.0 * (0.5 - 1.0) ** 2, rel=1e-4)
    assert float(exact["box"]) == pytest.approx(0.0, abs=1e-8)
    p[0, 0, 1, 1, 2:4] = math.log(0.5)  # a 16x16 box inside the 32x32 ground truth: IoU 0.25
    half = YOLOv2Loss(2, anchors)([out], GT, 64)
    assert float(half["obj"]) == pytest.approx(5.0 * (0.5 - 0.25) ** 2, rel=1e-4)
    assert float(half["cls"]) == pytest.approx(math.log(2), rel=1e-5)  # softmax over 2 equal logits


def test_v1_highest_iou_predictor_is_responsible():
    # S=2 at 64 px (32 px cells); ground truth centre (16, 16), 16 x 16 -> cell (0, 0)
    gt = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]]), "labels": torch.tensor([0])}]
    out = torch.zeros(1, 2, 2, 2 * 5 + 3)
    out[0, 0, 0, 0:5] = torch.tensor([0.5, 0.5, 0.3, 0.3, 0.4])  # predictor 0: too small
    out[0, 0, 0, 5:10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0])  # predictor 1: exact (sqrt(16/64) = 0.5)
    out[0, 0, 0, 10] = 1.0  # class 0
    parts = YOLOv1Loss(3, boxes=2)(out, gt, 64)
    assert float(parts["box"]) == pytest.approx(0.0, abs=1e-10)
    assert float(parts["cls"]) == pytest.approx(0.0, abs=1e-10)
    assert float(parts["obj"]) == pytest.approx(0.5 * 0.4 ** 2, rel=1e-5)  # lambda_noobj on predictor 0
    out[0, 0, 0, 5:7] = torch.tensor([0.7, 0.5])  # shift predictor 1 by 0.2 cell: lambda_coord * 0.04
    assert float(YOLOv1Loss(3)(out, gt, 64)["box"]) == pytest.approx(5.0 * 0.04, rel=1e-5)


def test_v1_class_error_counts_once_per_object_cell():
    # two objects of class 0 in cell (0, 0) (S=2, 64 px): the class term is that cell's error once
    gt = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0], [10.0, 10.0, 26.0, 26.0]]), "labels": torch.tensor([0, 0])}]
    out = torch.zeros(1, 2, 2, 2 * 5 + 3)
    out[0, 0, 0, 10:13] = torch.tensor([0.6, 0.3, 0.1])
    once = (0.6 - 1) ** 2 + 0.3 ** 2 + 0.1 ** 2
    assert float(YOLOv1Loss(3)(out, gt, 64)["cls"]) == pytest.approx(once, rel=1e-5)
    # classes 0 and 2 in one cell: the target is Pr(class | object) = (1/2, 0, 1/2), still once
    gt[0]["labels"] = torch.tensor([0, 2])
    mixed = (0.6 - 0.5) ** 2 + 0.3 ** 2 + (0.1 - 0.5) ** 2
    assert float(YOLOv1Loss(3)(out, gt, 64)["cls"]) == pytest.approx(mixed, rel=1e-5)
    # objects in two different cells still count once each
    gt[0]["boxes"][1] = torch.tensor([40.0, 40.0, 56.0, 56.0])
    assert float(YOLOv1Loss(3)(out, gt, 64)["cls"]) == pytest.approx(once + 1.0, rel=1e-5)  # class 2 vs 0 there


def test_v2_rescore_class_scale_and_coord_scale_as_darknets_region_layer():
    """rescore=0 (yolov2-tiny.cfg): the objectness target is 1, not the IoU; class_scale and
    coord_scale multiply their terms (region_layer.c's deltas)."""
    anchors = [torch.tensor([[2.0, 2.0], [1.0, 1.0]])]
    out = torch.zeros(1, 2 * 7, 4, 4)
    p = grid_view(out, 2)
    p[..., 4] = -30.0
    p[0, 0, 1, 1, 4] = 0.0  # confidence 0.5
    p[0, 0, 1, 1, 2:4] = math.log(0.5)  # IoU 0.25 with the ground truth
    p[0, 0, 1, 1, :2] = 0.4  # off centre: a box error to scale
    base = YOLOv2Loss(2, anchors)([out], GT, 64)
    to_one = YOLOv2Loss(2, anchors, rescore=False)([out], GT, 64)
    assert float(base["obj"]) == pytest.approx(5.0 * (0.5 - 0.25) ** 2, rel=1e-4)
    assert float(to_one["obj"]) == pytest.approx(5.0 * (0.5 - 1.0) ** 2, rel=1e-4)
    scaled = YOLOv2Loss(2, anchors, class_scale=3.0, coord_scale=2.0)([out], GT, 64)
    assert float(base["box"]) > 0
    assert float(scaled["box"]) == pytest.approx(2.0 * float(base["box"]), rel=1e-6)
    assert float(scaled["cls"]) == pytest.approx(3.0 * float(base["cls"]), rel=1e-6)


def test_v1_rescore_object_scale_and_class_scale_as_darknets_detection_layer():
    gt = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]]), "labels": torch.tensor([0])}]
    out = torch.zeros(1, 2, 2, 2 * 5 + 3)
    out[0, 0, 0, 0:5] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.4])  # exact box (IoU 1), confidence 0.4
    out[0, 0, 0, 5:10] = torch.tensor([0.5, 0.5, 0.1, 0.1, 0.0])  # far too small, confidence 0
    out[0, 0, 0, 10:13] = torch.tensor([0.5, 0.3, 0.2])
    out[0, 0, 0, 2:4] = 0.4  # responsible box now 0.16 of the side: IoU (0.16 / 0.25)^2 = 0.41
    base = YOLOv1Loss(3)(out, gt, 64)
    iou = 0.16 ** 2 / 0.25 ** 2
    assert float(base["obj"]) == pytest.approx((0.4 - iou) ** 2, rel=1e-4)
    to_one = YOLOv1Loss(3, rescore=False, object_scale=2.0, class_scale=3.0)(out, gt, 64)
    assert float(to_one["obj"]) == pytest.approx(2.0 * (0.4 - 1.0) ** 2, rel=1e-4)
    assert float(to_one["cls"]) == pytest.approx(3.0 * float(base["cls"]), rel=1e-6)


def test_v3_truth_thresh_trains_close_predictions_as_positives():
    """yolo_layer.c: a prediction whose best IoU exceeds truth_thresh gets objectness target 1 and
    that truth's class and box; Darknet's cfgs set 1 (never), which is the registered default."""
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task

    plugins.load_plugins()
    task = make_task(models.get("yolov3-tiny"), TrainConfig(model="yolov3-tiny", img_size=64), classes=["a", "b"])
    registered = task.criterion(task.build_model()).truth_thresh  # what `cnnkit train yolov3-tiny` uses
    anchors = [torch.tensor([[32.0, 32.0], [16.0, 16.0]])]
    out = _v3_output(obj_logit_other=0.0)  # anchor 1 at (1, 1) fits the truth exactly, not responsible
    default = YOLOv3Loss(2, anchors, ignore_thresh=1.0, truth_thresh=registered)([out], GT, 64)
    # by hand: only the responsible anchor 0 at (1, 1) has a class term, BCE of 2 zero logits = 2 log 2
    assert default["cls"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    default["box"].backward()
    grad = grid_view(out.grad, 2)[..., :4].abs().sum(-1)
    assert grad.nonzero().tolist() == [[0, 0, 1, 1]]  # and only it gets a box gradient
    out.grad = None
    sure = YOLOv3Loss(2, anchors, ignore_thresh=1.0, truth_thresh=0.5)([out], GT, 64)
    # anchor 1's objectness target turns 0 -> 1 (same BCE at logit 0) and it adds its own class term
    assert sure["obj"].item() == pytest.approx(default["obj"].item(), rel=1e-6)
    assert sure["cls"].item() == pytest.approx(4 * math.log(2), rel=1e-5)
    sure["box"].backward()
    grad = grid_view(out.grad, 2)[..., :4].abs().sum(-1)
    assert grad.nonzero().tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
