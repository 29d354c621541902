"""Triplet (with batch-hard / semi-hard / all mining), contrastive and learned-similarity losses."""

import itertools

import pytest
import torch
from torch.nn import functional as F

from cnnkit.core.base.errors import CnnkitError
from cnnkit.plugins.siamese.losses import ContrastiveLoss, SimilarityLoss, TripletLoss, squared_distances, triplet_loss
from cnnkit.plugins.siamese.models import SimilarityHead


def _batch(seed=0, p=4, k=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(p * k, dim, generator=g), dim=1)
    labels = torch.arange(p).repeat_interleave(k)
    return emb, labels


def _brute_force(emb, labels, alpha, mining):
    d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    n = len(labels)
    total = 0.0
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if mining == "batch-hard":
            total += max(max(d[a, p] for p in pos) - min(d[a, q] for q in neg) + alpha, 0.0)
            continue
        for p in pos:
            if mining == "all":
                total += sum(max(d[a, p] - d[a, q] + alpha, 0.0) for q in neg)
            else:  # semi-hard: closest negative farther than the positive, else the farthest one
                farther = [q for q in neg if d[a, q] > d[a, p]]
                q = min(farther, key=lambda q: d[a, q]) if farther else max(neg, key=lambda q: d[a, q])
                total += max(d[a, p] - d[a, q] + alpha, 0.0)
    return float(total)


def test_triplet_formula_with_squared_distances_and_alpha_0_2():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.1, 0.0]])  # ||A-P||^2 = 1.0 and 0.01
    n = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # ||A-N||^2 = 1.0 and 4.0
    # max(1 - 1 + 0.2, 0) + max(0.01 - 4 + 0.2, 0) = 0.2, summed over the batch
    assert triplet_loss(a, p, n).item() == pytest.approx(0.2)
    assert triplet_loss(a, p, n, alpha=0.5).item() == pytest.approx(0.5)
    assert TripletLoss().alpha == 0.2


@pytest.mark.parametrize("mining", ["batch-hard", "semi-hard", "all"])
def test_online_mining_matches_brute_force(mining):
    for seed in range(3):
        emb, labels = _batch(seed)
        out = TripletLoss(mining=mining)(emb, labels)
        assert out["loss"].item() == pytest.approx(_brute_force(emb.double(), labels, 0.2, mining), rel=1e-4, abs=1e-5)


def test_batch_hard_is_the_hardest_and_zero_when_separated():
    emb, labels = _batch()
    hard = TripletLoss(mining="batch-hard")(emb, labels)["loss"]
    # the hardest positive and negative per anchor bound every triplet of that anchor
    per_triplet_max = max(
        max(((emb[a] - emb[p]) ** 2).sum() - ((emb[a] - emb[n]) ** 2).sum() + 0.2, torch.tensor(0.0))
        for a, p, n in itertools.product(range(12), repeat=3)
        if a != p and labels[a] == labels[p] and labels[n] != labels[a])
    assert hard >= per_triplet_max
    # identities collapsed to four far-apart points: every margin is met
    centres = torch.eye(4)
    separated = centres[labels]
    assert TripletLoss(mining="batch-hard")(separated, labels)["loss"].item() == 0.0


def test_triplet_loss_has_gradients_and_unknown_mining_is_refused():
    emb, labels = _batch()
    emb.requires_grad_(True)
    TripletLoss(mining="semi-hard")(emb, labels)["loss"].backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    with pytest.raises(CnnkitError, match="mining"):
        TripletLoss(mining="hardest")


def test_squared_distances():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert squared_distances(x).tolist() == [[0.0, 25.0], [25.0, 0.0]]


def test_contrastive_loss_values():
    """Hadsell et al. eq. 4, averaged over the batch's 6 pairs (2 genuine, 4 impostor)."""
    labels = torch.tensor([0, 0, 1, 1])
    same_point = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # genuine pairs at distance 0; impostors at sqrt(2) > margin 1: no loss at all
    assert ContrastiveLoss()(same_point, labels)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    # everything at one point: genuine 0, impostors 1/2 (1 - 0)^2 each: 4 * 0.5 / 6
    assert ContrastiveLoss()(torch.ones(4, 2), labels)["loss"].item() == pytest.approx(2 / 6, rel=1e-5)
    # margin 2: impostors at sqrt(2) cost 1/2 (2 - sqrt(2))^2
    expected = 4 * 0.5 * (2 - 2 ** 0.5) ** 2 / 6
    assert ContrastiveLoss(margin=2.0)(same_point, labels)["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_loss_hand_computed_mixed_batch():
    # points on a line: 0, 3 (label 0) and 0.5, 4 (label 1); margin 1
    x = torch.tensor([[0.0], [3.0], [0.5], [4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # genuine (0,1): d=3 -> 4.5; (2,3): d=3.5 -> 6.125
    # impostors (0,2): d=0.5 -> 0.125; (0,3): d=4 -> 0; (1,2): d=2.5 -> 0; (1,3): d=1 -> 0
    parts = ContrastiveLoss(margin=1.0)(x, labels)
    assert parts["loss"].item() == pytest.approx((4.5 + 6.125 + 0.125) / 6, rel=1e-5)
    assert parts["genuine"].item() == pytest.approx((4.5 + 6.125) / 6, rel=1e-5)
    assert parts["impostor"].item() == pytest.approx(0.125 / 6, rel=1e-5)


def test_learned_similarity_is_sigmoid_of_weighted_abs_difference_and_learns():
    head = SimilarityHead(3)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        head.linear.bias.fill_(0.25)
    a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 4.0, 1.0]])
    expected = 1 * 1 + (-2) * 2 + 0.5 * 2 + 0.25
    assert head(a, b).item() == pytest.approx(expected)

    emb, labels = _batch(p=6, k=4, dim=16)
    emb = (emb + 0.8 * torch.eye(16)[labels]).detach()  # identities somewhat clustered
    head = SimilarityHead(16)
    loss_fn = SimilarityLoss(head)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = loss_fn(emb, labels)["loss"].item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(emb, labels)["loss"]
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.8


def _dlib_loss_metric(out, labels, margin=0.04, thresh=0.6):
    """dlib/dnn/loss.h loss_metric_::compute_loss_value_and_gradient, line for line in numpy:
    (the loss it reports, the gradient it back-propagates)."""
    import numpy as np

    n = len(labels)
    temp = out @ out.T
    num_pos = num_neg = 0.0001
    threshs = []
    for r in range(n):
        for c in range(r + 1, n):
            if labels[r] == labels[c]:
                num_pos += 1
            else:
                num_neg += 1
                threshs.append(max(temp[r, r] + temp[c, c] - 2 * temp[r, c], 0))
    scale = 0.5 / num_pos
    neg_thresh = np.sqrt(sorted(threshs)[int(min(num_pos, num_neg) - 1)])
    gm = np.zeros((n, n))
    loss = 0.0
    for r in range(n):
        for c in range(n):
            if r == c:
                continue
            d2 = temp[r, r] + temp[c, c] - 2 * temp[r, c]
            d2 = 0 if d2 <= 0 else np.sqrt(d2)
            if labels[r] == labels[c]:
                if d2 >= thresh - margin:
                    loss += scale * (d2 - (thresh - margin))
                    gm[r, r] += scale / d2
                    gm[r, c] = -scale / d2
            elif not (d2 > thresh + margin or d2 > neg_thresh):
                loss += scale * ((thresh + margin) - d2)
                d2 = max(d2, 0.001)
                gm[r, r] -= scale / d2
                gm[r, c] = scale / d2
    return loss, gm @ out


@pytest.mark.parametrize("seed,p,k", [(0, 4, 3), (1, 3, 4), (2, 6, 2)])
def test_dlib_metric_loss_is_dlibs_loss_metric(seed, p, k):
    """Against a line-for-line port of dlib's C++: dlib reports twice our value (it sums both orders
    of a pair) and back-propagates exactly our gradient; margins 0.04 around 0.6, as many hardest
    impostor pairs as genuine pairs."""
    from cnnkit.plugins.siamese.losses import DlibMetricLoss

    g = torch.Generator().manual_seed(seed)
    emb = (torch.randn(p * k, 128, generator=g) * 0.04).double()  # distances about 0.57 +- 0.05
    emb = emb.requires_grad_()
    labels = torch.arange(p).repeat_interleave(k)
    out = DlibMetricLoss()(emb, labels)
    out["loss"].backward()
    loss, grad = _dlib_loss_metric(emb.detach().numpy(), labels.tolist())
    assert loss > 0.01 and float(out["genuine"]) > 0 and float(out["impostor"]) > 0  # both hinges active
    assert float(out["loss"]) * 2 == pytest.approx(loss, rel=1e-4)
    assert torch.allclose(emb.grad, torch.from_numpy(grad), atol=1e-6)


def test_dlib_metric_loss_is_zero_past_the_margins():
    from cnnkit.plugins.siamese.losses import DlibMetricLoss

    # two people, two descriptors each: genuine distance 0.5 < 0.56, impostor distance >= 0.7 > 0.64
    emb = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.7], [0.5, 0.7]])
    labels = torch.tensor([0, 0, 1, 1])
    assert float(DlibMetricLoss()(emb, labels)["loss"]) == 0.0
    # genuine at 0.58 (0.02 past 0.56): each of the 2 genuine pairs adds 0.02 * 0.5 / 2
    emb = torch.tensor([[0.0, 0.0], [0.58, 0.0], [0.0, 0.7], [0.58, 0.7]])
    assert float(DlibMetricLoss()(emb, labels)["loss"]) == pytest.approx(0.02 * 0.5, abs=1e-6)
    with pytest.raises(CnnkitError, match="--margin"):
        DlibMetricLoss(margin=0.0)


def test_dlib_metric_is_face_resnets_default_loss_with_its_options():
    from cnnkit.core.base.config import TrainConfig
    from cnnkit.core.base.plugins import load_plugins
    from cnnkit.core.base.registry import models
    from cnnkit.core.tasks.base import make_task
    from cnnkit.plugins.siamese.losses import DlibMetricLoss

    load_plugins()
    task = make_task(models.get("face-resnet"), TrainConfig(model="face-resnet", options={"margin": 0.1,
                                                                                          "distance_threshold": 0.5}))
    loss = task.criterion(None)
    assert task.loss_spec.name == "dlib-metric" and isinstance(loss, DlibMetricLoss)
    assert (loss.margin, loss.threshold) == (0.1, 0.5)
    other = make_task(models.get("siamese-small"), TrainConfig(model="siamese-small"))
    assert other.loss_spec.name == "triplet"
