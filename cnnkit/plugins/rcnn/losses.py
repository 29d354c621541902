"""The R-CNN family's losses: Fast R-CNN's multi-task loss and the RPN's loss, registered as
``fast-rcnn`` and ``faster-rcnn`` (factories ``build(model, task)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

RPN_LOSSES = ("paper", "pyfaster")


def fast_rcnn_loss(cls_logits: torch.Tensor, box_deltas: torch.Tensor, labels: torch.Tensor,
                   target_deltas: torch.Tensor, box_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """L = L_cls(p, u) + lambda [u >= 1] smooth_L1(t^u - v), v the normalised targets of each RoI
    (``target_deltas``); the box term is averaged over all sampled RoIs (the paper's implementation)."""
    cls = F.cross_entropy(cls_logits.float(), labels)
    fg = torch.nonzero(labels > 0).flatten()
    if len(fg):
        deltas = box_deltas.float().view(len(labels), -1, 4)[fg, labels[fg] - 1]
        box = F.smooth_l1_loss(deltas, target_deltas[fg].float(), beta=1.0, reduction="sum") / max(len(labels), 1)
    else:
        box = box_deltas.sum() * 0.0
    return {"cls": cls, "box": box_weight * box}


def rpn_loss(logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor, target_deltas: torch.Tensor,
             locations: int, mode: str = "paper", batch: int = 256, weight: float = 10.0) -> dict[str, torch.Tensor]:
    """The RPN's loss over (B, A) anchors of B images (labels 1/0, -1 not sampled).

    ``paper`` (Ren et al. eq. 1): L = 1/N_cls sum L_cls + lambda/N_reg sum p* smooth_L1(beta=1),
    N_cls = ``batch`` (the mini-batch of each image), N_reg = ``locations`` (anchor positions of
    each image), lambda = ``weight``. ``pyfaster`` (py-faster-rcnn): both terms divided by the
    number sampled, lambda = 1, beta = 1/9."""
    images = labels.shape[0] if labels.dim() > 1 else 1
    logits, deltas = logits.reshape(-1, 2).float(), deltas.reshape(-1, 4).float()
    labels, target_deltas = labels.reshape(-1), target_deltas.reshape(-1, 4)
    sampled, pos = labels >= 0, labels == 1
    if mode == "paper":
        n_cls, n_reg, beta = batch * images, locations * images / weight, 1.0
    else:
        n_cls = n_reg = max(int(sampled.sum()), 1)
        beta = 1 / 9
    obj = (F.cross_entropy(logits[sampled], labels[sampled], reduction="sum") / n_cls if sampled.any()
           else logits.sum() * 0.0)
    if pos.any():
        box = F.smooth_l1_loss(deltas[pos], target_deltas[pos].float(), beta=beta, reduction="sum") / n_reg
    else:
        box = deltas.sum() * 0.0
    return {"rpn_obj": obj, "rpn_box": box}


@dataclass
class RegionLoss:
    """The chosen loss of an R-CNN detector: ``head`` for the Fast R-CNN head's RoIs, ``rpn``
    (Faster R-CNN) for the anchors; each returns named terms."""

    head: Callable[..., dict[str, torch.Tensor]]
    rpn: Callable[..., dict[str, torch.Tensor]] | None = None


def build_fast_rcnn(model: nn.Module, task: Any) -> RegionLoss:
    """Fast R-CNN's multi-task loss with ``--box-weight`` (lambda)."""
    weight = float(task.option("box_weight"))
    return RegionLoss(lambda *a: fast_rcnn_loss(*a, box_weight=weight))


def build_faster_rcnn(model: nn.Module, task: Any) -> RegionLoss:
    """The head's multi-task loss plus the RPN loss chosen by ``--rpn-loss`` (paper or pyfaster)."""
    mode = str(task.option("rpn_loss"))
    if mode not in RPN_LOSSES:
        from cnnkit.api import CnnkitError

        raise CnnkitError(f"--rpn-loss {mode}: choose {' or '.join(RPN_LOSSES)}")
    weight, batch = float(task.option("rpn_lambda")), int(model.rpn.batch)
    head = build_fast_rcnn(model, task).head
    return RegionLoss(head, lambda *a: rpn_loss(*a, mode=mode, batch=batch, weight=weight))
