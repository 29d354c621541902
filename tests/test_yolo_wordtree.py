"""YOLO9000's WordTree on a hand-made tree (probabilities, descent, inner-node labels), its loss,
and joint detection/classification training through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import one_clear_line

from cnnkit.core.base import plugins
from cnnkit.core.base.errors import CnnkitError
from cnnkit.core.data.images import write_image
from cnnkit.core.weights.checkpoint import load_checkpoint
from cnnkit.plugins.yolo.losses import YOLOv2Loss
from cnnkit.plugins.yolo.synthetic import TREE, Figures
from cnnkit.plugins.yolo.wordtree import WordTree

#        0 animal   1 vehicle        (roots: group 0)
#   2 dog  3 cat    4 car  5 bus     (groups 1 and 2)
# 6 terrier 7 poodle                 (group 3)
HAND = "animal -1\nvehicle -1\ndog 0\ncat 0\ncar 1\nbus 1\nterrier 2\npoodle 2\n"


@pytest.fixture(autouse=True)
def _plugins():
    plugins.load_plugins()


@pytest.fixture
def tree(tmp_path) -> WordTree:
    (tmp_path / "hand.tree").write_text(HAND)
    (tmp_path / "hand.names").write_text("\n".join(n.title() for n in HAND.split()[::2]) + "\n")
    return WordTree.read(tmp_path / "hand.tree")


def _logits(**conditional: float) -> torch.Tensor:
    """Logits whose group softmaxes give the named conditionals (the rest of a pair gets 1 - p)."""
    pairs = {"animal": "vehicle", "dog": "cat", "car": "bus", "terrier": "poodle"}
    names = HAND.split()[::2]
    x = torch.zeros(len(names))
    for first, second in pairs.items():
        p = conditional.get(first, 0.5)
        x[names.index(first)], x[names.index(second)] = torch.logit(torch.tensor(p)), 0.0
    return x


def test_darknet_tree_format_groups_and_names(tree):
    assert tree.names[6] == "terrier" and tree.labels[6] == "Terrier" and tree.parents == [-1, -1, 0, 0, 1, 1, 2, 2]
    assert tree.group.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # runs of one parent, as Darknet's read_tree
    assert tree.child_group == [1, 2, 3, -1, -1, -1, -1, -1]
    assert tree.index("poodle") == tree.index("Poodle") == 7
    with pytest.raises(CnnkitError, match="'wolf' is not a node"):
        tree.index("wolf")


@pytest.mark.parametrize("text,message", [("a -1\nb 5\n", "parent 5"), ("a -1\nb\n", "expected 'name parent_index'")])
def test_bad_tree_files_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "bad.tree").write_text(text)
    with pytest.raises(CnnkitError, match=message):
        WordTree.read(tmp_path / "bad.tree")


def test_conditionals_are_softmaxes_per_sibling_group_and_absolutes_multiply_down(tree):
    x = torch.randn(5, len(tree))
    cond = tree.log_conditionals(x).exp()
    for members in ([0, 1], [2, 3], [4, 5], [6, 7]):
        assert torch.allclose(cond[:, members], x[:, members].softmax(-1), atol=1e-6)
    absolute = tree.log_absolute(x).exp()
    assert torch.allclose(absolute[:, 6], cond[:, 0] * cond[:, 2] * cond[:, 6], atol=1e-6)
    assert torch.allclose(absolute[:, [0, 1]].sum(1), torch.ones(5))  # the roots share all the mass
    assert torch.allclose(absolute[:, [6, 7]].sum(1), absolute[:, 2], atol=1e-6)  # children split their parent


@pytest.mark.parametrize("threshold,expected", [(0.4, "terrier"), (0.5, "dog"), (0.8, "animal"), (0.95, "animal")])
def test_descent_takes_the_best_child_while_the_product_stays_above_the_threshold(tree, threshold, expected):
    x = _logits(animal=0.9, dog=0.8, terrier=0.6)  # products along the path: 0.9, 0.72, 0.432
    node, prob = tree.descend(x[None], threshold)
    assert tree.names[node.item()] == expected
    assert prob.item() == pytest.approx({"terrier": 0.432, "dog": 0.72, "animal": 0.9}[expected], abs=1e-5)
    vehicle = _logits(animal=0.2, car=0.3)  # vehicle 0.8 -> bus 0.56
    assert tree.names[tree.descend(vehicle[None], 0.5)[0].item()] == "bus"


def test_a_label_at_an_inner_node_teaches_nothing_below_it(tree):
    x = torch.randn(2, len(tree), requires_grad=True)
    tree.path_nll(x, torch.tensor([tree.index("dog"), tree.index("terrier")])).sum().backward()
    dog, terrier = x.grad
    assert torch.all(dog[[6, 7]] == 0) and torch.all(dog[[0, 1, 2, 3]] != 0)
    assert torch.all(terrier[[0, 1, 2, 3, 6, 7]] != 0)
    assert torch.all(x.grad[:, [4, 5]] == 0)  # the vehicle group is never on these paths
    nll = tree.path_nll(x.detach(), torch.tensor([6]))
    assert torch.allclose(nll, -tree.log_absolute(x.detach())[:1, 6])


def test_predictions_count_at_the_level_the_data_labels(tree):
    """Evaluating on data labelled {animal, car}: a 'terrier' box is an 'animal' box; 'bus' has no
    labelled ancestor and stays itself."""
    from cnnkit.plugins.yolo.joint import label_levels

    level = label_levels(tree, np.array([tree.index("animal"), tree.index("car")]))
    assert [tree.names[i] for i in level] == ["animal", "vehicle", "animal", "animal", "car", "bus", "animal", "animal"]


def test_yolov2_loss_on_a_classification_image_trains_only_the_best_box(tree):
    """One image, no boxes, image label 'cat': class loss only at the prediction with the highest
    objectness x P(cat), whose objectness is pushed up to 0.3; nothing else is touched."""
    anchors = [torch.tensor([[0.2, 0.2], [0.5, 0.5]])]
    raw = torch.zeros(1, 2 * (5 + len(tree)), 2, 2)
    view = raw.view(1, 2, 5 + len(tree), 2, 2)
    view[0, :, 4] = -3.0  # low objectness everywhere...
    view[0, 1, 4, 1, 0] = 1.0  # ...but anchor 1 at row 1, col 0
    view[0, 1, 5 + 3, 1, 0] = 2.0  # which also favours cat
    raw.requires_grad_(True)
    loss = YOLOv2Loss(len(tree), anchors, tree=tree)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "image_label": torch.tensor(tree.index("cat"))}
    parts = loss([raw], [target], 64)
    parts["loss"].backward()
    grad = raw.grad.view(1, 2, 5 + len(tree), 2, 2)
    touched = grad.abs().sum(2).nonzero().tolist()
    assert touched == [[0, 1, 1, 0]]
    assert parts["box"].item() == 0 and parts["obj"].item() == 0  # objectness sigmoid(1) = 0.73 > 0.3


def test_joint_training_runs_and_names_tree_nodes(cli, tmp_path):
    (tmp_path / "fig.tree").write_text(TREE)
    r = cli("train", "yolov2-tiny", "--data", "synthetic:figures?n=8&size=64&labels=coarse",
            "--cls-data", "synthetic:figure-crops?n=8&size=64", "--tree", tmp_path / "fig.tree",
            "--img-size", "64", "--epochs", "1", "--batch-size", "8", "--burn-in", "5", "--no-track", "--out", "joint",
            # [region] anchors are 32-px grid cells at every input size, so yolov2's (made for 416) reach 5x a
            # 64-px image; these are the same shapes scaled to 64 px (the figures below were measured with them)
            "--anchors", "2.82,3.33 9.23,10.15 16.44,26.95 38.81,17.37 48.1,45.11")
    assert r.code == 0, r.stderr
    ck = load_checkpoint("joint/weights/last.pt")
    recipe = {k: ck["config"][k] for k in ("optimizer", "lr", "burn_in", "batch_size")}
    assert recipe == {"optimizer": "adam", "lr": 2e-3, "burn_in": 5, "batch_size": 8}  # the recipe, then flags
    assert ck["config"]["options"]["multi_scale"] is False
    assert ck["optimizer_state"]["param_groups"][0]["burn_in_step"] == 2  # 16 images, batches of 8
    assert ck["classes"] == ["shape", "ring", "cross", "bar"]
    assert ck["task_state"]["tree"]["parents"] == [-1, 0, 0, 0]
    r = cli("eval", "joint/weights/last.pt", "--data", "synthetic:figures?n=8&size=64&labels=fine", "--json")
    assert r.code == 0, r.stderr
    # no floor here: on 8 images the coarse val map50 is 0.0089 untrained (--lr 0) and 0.0107 after 3 or 6
    # epochs (fine labels: 0.0 both); tests/test_paper_fidelity3.py's joint-training test has the floor.
    # Here `eval` of the training data repeats training's validation.
    r = cli("eval", "joint/weights/last.pt", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["map50"] == pytest.approx(ck["metrics"]["val_map50"], abs=1e-12)
    write_image(tmp_path / "img.png", Figures("val", n=8, size=64)[0].image)
    r = cli("detect", "joint/weights/last.pt", tmp_path / "img.png", "--conf", "0.0", "--json")
    assert r.code == 0, r.stderr
    assert {d["class"] for d in json.loads(r.stdout)[0]["detections"]} <= {"shape", "ring", "cross", "bar"}
    r = cli("eval", "joint/weights/last.pt", "--data", "synthetic:shapes?n=8&size=64")
    assert r.code == 2 and "class 'circle' is not a node of the tree" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["yolov3-tiny", "--tree", "T"], "needs a YOLOv2-family model"),
    (["yolov2-tiny", "--cls-data", "synthetic:figure-crops"], "--cls-data needs --tree"),
    (["yolov2-tiny", "--tree", "T", "--cls-data", "synthetic:textures?n=4"], "--cls-data synthetic:textures"),
])
def test_joint_training_errors_are_one_line(cli, tmp_path, args, message):
    (tmp_path / "T").write_text(TREE)
    r = cli("train", *args, "--data", "synthetic:figures?n=4&size=64&labels=coarse", "--img-size", "64",
            "--epochs", "1", "--no-track")
    assert r.code == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_darknet_objectness_on_a_classification_image_pushes_the_others_to_zero(tree):
    """``--cls-objectness darknet`` (region_layer.c): every prediction but the chosen one is pushed
    towards objectness 0 (noobject_scale); the chosen one gets the class loss and no objectness
    gradient."""
    anchors = [torch.tensor([[0.2, 0.2], [0.5, 0.5]])]
    raw = torch.zeros(1, 2 * (5 + len(tree)), 2, 2)
    view = raw.view(1, 2, 5 + len(tree), 2, 2)
    view[0, 1, 4, 1, 0] = 1.0
    view[0, 1, 5 + 3, 1, 0] = 2.0
    raw.requires_grad_(True)
    loss = YOLOv2Loss(len(tree), anchors, tree=tree, cls_objectness="darknet")
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "image_label": torch.tensor(tree.index("cat"))}
    parts = loss([raw], [target], 64)
    parts["loss"].backward()
    assert parts["obj"].item() == pytest.approx(7 * 0.5 ** 2)  # seven others at sigmoid(0) = 0.5
    grad = raw.grad.view(1, 2, 5 + len(tree), 2, 2)
    obj_grad = grad[0, :, 4]
    assert obj_grad[1, 1, 0].item() == 0.0
    assert (obj_grad.flatten().gt(0).sum().item(), obj_grad.abs().sum().item() > 0) == (7, True)
    assert obj_grad[0, 0, 0].item() == pytest.approx(2 * 0.5 * 0.25)  # d(sigmoid^2)/dx at 0
    assert grad[0, 1, 5:, 1, 0].abs().sum() > 0 and grad[0, 0, 5:].abs().sum() == 0


def test_a_bad_cls_objectness_is_one_line(cli, tmp_path):
    (tmp_path / "T").write_text(TREE)
    r = cli("train", "yolov2-tiny", "--tree", tmp_path / "T", "--cls-objectness", "both",
            "--data", "synthetic:figures?n=4&size=64&labels=coarse", "--img-size", "64", "--epochs", "1", "--no-track")
    assert r.code == 2 and "--cls-objectness 'both'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag,value", [("--cls-ratio", "abc"), ("--cls-ratio", "-1"), ("--cls-ratio", ".nan"),
                                        ("--cls-zoom", "abc"), ("--cls-zoom", "0"), ("--cls-zoom", "1.5")])
def test_a_bad_cls_ratio_or_zoom_is_one_line(cli, tmp_path, flag, value):
    (tmp_path / "T").write_text(TREE)
    r = cli("train", "yolov2-tiny", "--tree", tmp_path / "T", flag, value,
            "--cls-data", "synthetic:figure-crops?n=4&size=64",
            "--data", "synthetic:figures?n=4&size=64&labels=coarse", "--img-size", "64", "--epochs", "1", "--no-track")
    one_clear_line(r, flag)


def test_cls_ratio_draws_classification_images_evenly_and_reproducibly():
    """``--cls-ratio 2.5`` with 4 detection and 3 classification images: 10 classification
    samples an epoch, each image 3 or 4 times, the same order for the same (seed, epoch)."""
    from cnnkit.core.tasks.base import MappedDataset
    from cnnkit.plugins.yolo.joint import JointDataset

    det = MappedDataset(list(range(4)), lambda x: ("det", x))
    det.classes = ["shape"]
    cls = MappedDataset([10, 11, 12], lambda x: ("cls", x))
    joint = JointDataset(det, cls, cls_count=round(2.5 * 4))
    assert len(joint) == 14
    drawn = [joint[i][1] for i in range(4, 14)]
    assert sorted(np.bincount(drawn)[10:].tolist()) == [3, 3, 4]
    again = JointDataset(det, cls, cls_count=10)
    assert [again[i][1] for i in range(4, 14)] == drawn
    joint.epoch = 1
    assert [joint[i][1] for i in range(4, 14)] != drawn
    assert [joint[i] for i in range(4)] == [("det", i) for i in range(4)]


def test_hyponyms_no_label_reaches_stay_uniform_so_predictions_stop_at_the_coarse_node(tree):
    """Detection boxes labelled "dog" train the animal and dog groups only. The class rows of the
    output conv start at zero (zero_class_logits), so the untrained terrier/poodle group stays
    exactly 0.5/0.5 and the descent stops at "dog" (a random init lets one of them win by chance)."""
    from cnnkit.plugins.yolo.models import yolov2_tiny
    from cnnkit.plugins.yolo.task import zero_class_logits

    torch.manual_seed(0)
    anchors = [[0.5, 0.5], [1.0, 1.0]]
    model, random_init = yolov2_tiny(num_classes=len(tree), anchors=anchors, tree=tree), None
    random_init = {k: v.clone() for k, v in model.state_dict().items()}
    zero_class_logits(model)
    loss = YOLOv2Loss(len(tree), model.anchors, tree=tree)
    opt = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=5e-4)
    images = torch.rand(4, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[17.0, 17.0, 47.0, 47.0]]), "labels": torch.tensor([tree.index("dog")])}] * 4
    for _ in range(3):
        opt.zero_grad()
        loss(model(images), targets, 64)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(images)[0].view(4, 2, 5 + len(tree), 2, 2)[:, :, 5:].movedim(2, -1).reshape(-1, len(tree))
    cond = tree.log_conditionals(logits).exp()
    assert torch.equal(cond[:, 6], torch.full_like(cond[:, 6], 0.5)) and torch.equal(cond[:, 7], cond[:, 6])
    assert cond[:, 2].max() > 0.55  # the dog/cat group did learn (where the box is)
    node, _ = tree.descend(logits, 0.3)
    assert set(node.tolist()) <= {0, 2}  # animal or dog, never terrier/poodle
    model.load_state_dict(random_init)
    with torch.no_grad():
        logits = model(images)[0].view(4, 2, 5 + len(tree), 2, 2)[:, :, 5:].movedim(2, -1).reshape(-1, len(tree))
    assert not torch.equal(logits[:, 6], logits[:, 7])  # the default init is not uniform


def _content_area(image: torch.Tensor) -> float:
    """Fraction of the image that is not the letterbox's grey (114)."""
    return (image.mul(255).round() != 114).any(0).float().mean().item()


def test_cls_zoom_shrinks_classification_images_to_a_random_size_at_a_random_spot():
    from cnnkit.core.tasks.base import MappedDataset
    from cnnkit.plugins.yolo.joint import ClassificationTransform

    white = [(np.full((64, 64, 3), 255, np.uint8), 3)] * 40
    areas = {}
    for zoom in (1.0, 0.3):
        ds = MappedDataset(white, ClassificationTransform(64, zoom))
        samples = [ds[i] for i in range(len(white))]
        assert all(t["image_label"].item() == 3 and len(t["boxes"]) == 0 for _, t in samples)
        areas[zoom] = [_content_area(x) for x, _ in samples]
    assert min(areas[1.0]) > 0.5  # the detection pipeline's own jitter only (scale >= 0.75)
    assert min(areas[0.3]) < 0.2 and max(areas[0.3]) > 0.5 and min(areas[0.3]) > 0.3 ** 2 * 0.75 ** 2 * 0.8


@pytest.mark.parametrize("pick,trained", [("class", (0, 0, 1)), ("objectness", (1, 1, 0))])
def test_cls_box_chooses_the_prediction_a_classification_image_trains(tree, pick, trained):
    """Prediction (anchor 0, cell 0,1) is sure of "cat" with middling objectness; (anchor 1, cell 1,0)
    has the highest objectness and no opinion. ``class`` (the paper) trains the first, whose class
    the position alone can satisfy; ``objectness`` the second."""
    anchors = [torch.tensor([[0.2, 0.2], [0.5, 0.5]])]
    raw = torch.zeros(1, 2 * (5 + len(tree)), 2, 2)
    view = raw.view(1, 2, 5 + len(tree), 2, 2)
    view[0, 0, 4, 0, 1], view[0, 0, 5 + tree.index("cat"), 0, 1] = 0.0, 6.0
    view[0, 1, 4, 1, 0] = 2.0
    raw.requires_grad_(True)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
              "image_label": torch.tensor(tree.index("cat"))}
    YOLOv2Loss(len(tree), anchors, tree=tree, cls_box=pick)([raw], [target], 64)["cls"].backward()
    class_grad = raw.grad.view(1, 2, 5 + len(tree), 2, 2)[0, :, 5:].abs().sum(1)  # (anchor, row, col)
    (a, j, i), = class_grad.nonzero().tolist()
    assert (a, j, i) == (trained[0], trained[1], trained[2])


def test_a_bad_cls_box_is_one_line(cli, tmp_path):
    (tmp_path / "T").write_text(TREE)
    r = cli("train", "yolov2-tiny", "--tree", tmp_path / "T", "--cls-box", "random",
            "--data", "synthetic:figures?n=4&size=64&labels=coarse", "--img-size", "64", "--epochs", "1", "--no-track")
    one_clear_line(r, "--cls-box 'random'")
