"""Siamese losses on a batch of L2-normalised embeddings with identity labels.

- :class:`TripletLoss` (FaceNet): ``max(||f(A)-f(P)||^2 - ||f(A)-f(N)||^2 + alpha, 0)`` summed over
  the batch's triplets, mined online from a P identities x K images batch: ``batch-hard``
  (hardest positive and negative per anchor), ``semi-hard`` (every anchor-positive pair with
  the closest negative farther than the positive) or ``all`` (every valid triplet).
- :class:`ContrastiveLoss` (Hadsell et al. 2006): ``1/2 d^2`` for genuine pairs, ``1/2 max(m - d, 0)^2``
  for impostors, averaged over all pairs of the batch.
- :class:`SimilarityLoss`: the learned ``sigmoid(sum_k w_k |f_i - f_j|_k + b)`` trained with
  binary cross-entropy on every pair of the batch.
- :class:`DlibMetricLoss` (dlib's ``loss_metric_``, which trained its face ResNet): a hinge on the
  Euclidean distance around a fixed threshold, so the threshold keeps its meaning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.api import CnnkitError, unwrap

MINING = ("batch-hard", "semi-hard", "all")


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 alpha: float = 0.2) -> torch.Tensor:
    """The lecture's formula for explicit triplets (rows), summed over them."""
    d_ap = (anchor - positive).pow(2).sum(1)
    d_an = (anchor - negative).pow(2).sum(1)
    return F.relu(d_ap - d_an + alpha).sum()


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances between the rows of ``x`` (exact zeros on the diagonal)."""
    sq = x.pow(2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp_min(0)
    return d * (1 - torch.eye(len(x), device=x.device, dtype=d.dtype))


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


class TripletLoss(nn.Module):
    """Triplet loss with online mining; ``alpha`` is the margin (0.2 in FaceNet)."""

    def __init__(self, margin: float | None = None, mining: str = "batch-hard") -> None:
        super().__init__()
        if mining not in MINING:
            raise CnnkitError(f"unknown --mining '{mining}' ({', '.join(MINING)})")
        self.alpha = 0.2 if margin is None else float(margin)
        self.mining = mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        d = squared_distances(embeddings.float())
        pos, neg = _masks(labels)
        if self.mining == "batch-hard":
            hardest_pos = (d * pos).amax(1)
            hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
            valid = pos.any(1) & neg.any(1)
            terms = F.relu(hardest_pos - hardest_neg + self.alpha)[valid]
        else:
            triplets = d[:, :, None] - d[:, None, :] + self.alpha  # [a, p, n]
            valid = self._semi_hard(d, pos, neg) if self.mining == "semi-hard" else \
                pos[:, :, None] & neg[:, None, :]
            terms = F.relu(triplets[valid])
        if terms.numel() == 0:
            zero = embeddings.sum() * 0
            return {"loss": zero, "active": zero.detach()}
        return {"loss": terms.sum(), "active": (terms > 0).float().mean().detach()}

    @staticmethod
    def _semi_hard(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """For each anchor-positive pair, the closest negative with ``d_an > d_ap`` (FaceNet's
        semi-hard negative); when there is none, the farthest negative (as TensorFlow Addons does)."""
        d_ap = d[:, :, None]
        d_an = d[:, None, :].expand(-1, d.shape[1], -1)
        negs = neg[:, None, :].expand_as(d_an)
        farther = negs & (d_an > d_ap)
        semi = d_an.masked_fill(~farther, float("inf")).argmin(2)
        easiest = d_an.masked_fill(~negs, float("-inf")).argmax(2)
        chosen = torch.where(farther.any(2), semi, easiest)
        valid = torch.zeros_like(negs)
        valid.scatter_(2, chosen[:, :, None], True)
        return valid & pos[:, :, None] & negs


class ContrastiveLoss(nn.Module):
    """Hadsell, Chopra & LeCun (2006), eq. 4: ``1/2 d^2`` for a genuine pair and
    ``1/2 max(margin - d, 0)^2`` for an impostor pair (Euclidean ``d``), averaged over every
    pair (i < j) of the batch."""

    def __init__(self, margin: float | None = None) -> None:
        super().__init__()
        self.margin = 1.0 if margin is None else float(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
        d2 = squared_distances(embeddings.float())[i, j]
        same = labels[i] == labels[j]
        d = (d2 + 1e-12).sqrt()
        terms = torch.where(same, 0.5 * d2, 0.5 * F.relu(self.margin - d).pow(2))
        if terms.numel() == 0:
            zero = embeddings.sum() * 0
            return {"loss": zero, "genuine": zero.detach(), "impostor": zero.detach()}
        n = terms.numel()
        return {"loss": terms.mean(), "genuine": (terms[same].sum() / n).detach(),
                "impostor": (terms[~same].sum() / n).detach()}


class SimilarityLoss(nn.Module):
    """Binary cross-entropy of the learned similarity on every pair (i < j) of the batch;
    genuine pairs are weighted so both kinds count equally."""

    def __init__(self, head: nn.Module, margin: float | None = None) -> None:
        super().__init__()
        self.head = head

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
        logits = self.head(embeddings[i].float(), embeddings[j].float())
        same = (labels[i] == labels[j]).float()
        n_pos = same.sum().clamp_min(1)
        weight = (len(same) - n_pos) / n_pos
        loss = F.binary_cross_entropy_with_logits(logits, same, pos_weight=weight)
        return {"loss": loss}


class DlibMetricLoss(nn.Module):
    """dlib's ``loss_metric_`` (dlib/dnn/loss.h) on unnormalised descriptors: over the pairs of a
    mini-batch, ``max(0, d - (threshold - margin))`` for a genuine pair and
    ``max(0, (threshold + margin) - d)`` for an impostor pair (Euclidean ``d``), where only the
    hardest impostor pairs count, as many as there are genuine pairs (dlib's hard negative mining);
    summed, times 1/2 over the number of genuine pairs: the gradient is dlib's (dlib reports twice this
    value: it sums both orders of each pair but back-propagates one). dlib's defaults: threshold 0.6,
    margin 0.04, so genuine pairs are pulled under 0.56 and impostors pushed past 0.64."""

    def __init__(self, margin: float | None = None, threshold: float = 0.6) -> None:
        super().__init__()
        self.margin = 0.04 if margin is None else float(margin)
        self.threshold = float(threshold)
        if self.margin <= 0 or self.threshold <= 0:
            raise CnnkitError(f"--loss dlib-metric needs --margin and --distance-threshold > 0 "
                              f"(got {self.margin}, {self.threshold})")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        i, j = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
        d = squared_distances(embeddings.float())[i, j].clamp_min(1e-6).sqrt()  # dlib: at least 0.001
        same = labels[i] == labels[j]
        n_pos, n_neg = int(same.sum()), int((~same).sum())
        if n_pos == 0 or n_neg == 0:  # dlib requires both; a P x K batch always has them
            zero = embeddings.sum() * 0
            return {"loss": zero, "genuine": zero.detach(), "impostor": zero.detach()}
        hardest = d[~same].detach().sort().values[min(n_pos, n_neg) - 1]  # the n_pos closest impostors
        scale = 0.5 / n_pos
        genuine = F.relu(d[same] - (self.threshold - self.margin)).sum() * scale
        impostor_d = d[~same]
        impostor = (F.relu(self.threshold + self.margin - impostor_d) * (impostor_d <= hardest)).sum() * scale
        return {"loss": genuine + impostor, "genuine": genuine.detach(), "impostor": impostor.detach()}


# ---------------------------------------------------------------- factories: build(model, task)
def triplet(model: nn.Module, task: Any) -> TripletLoss:
    """``--loss triplet [--margin A] [--mining batch-hard|semi-hard|all]``."""
    return TripletLoss(margin=task.option("margin"), mining=str(task.option("mining")))


def contrastive(model: nn.Module, task: Any) -> ContrastiveLoss:
    """``--loss contrastive [--margin M]``."""
    return ContrastiveLoss(margin=task.option("margin"))


def similarity(model: nn.Module, task: Any) -> SimilarityLoss:
    """``--loss similarity``: trains the model's own similarity head (``model.similarity``)."""
    head = getattr(unwrap(model), "similarity", None)
    if head is None:
        raise CnnkitError(f"--loss similarity needs a model with a similarity head; {task.spec.name} has none")
    return SimilarityLoss(head)


def dlib_metric(model: nn.Module, task: Any) -> DlibMetricLoss:
    """``--loss dlib-metric [--margin 0.04] [--distance-threshold 0.6]``: face-resnet's default."""
    return DlibMetricLoss(margin=task.option("margin"), threshold=float(task.option("distance_threshold")))
