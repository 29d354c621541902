"""R-CNN's post-training classifiers (Girshick et al. 2014, sec. 2.3 and appendix C): one linear
SVM a class (hinge loss, C = 0.001 on features scaled to mean norm 20) with hard negative mining
on the fc features, and class-specific ridge box regression on the pooled conv features, both
with scikit-learn."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from cnnkit.api import box_iou
from cnnkit.plugins.rcnn.matching import UNIT_CODER
from cnnkit.plugins.rcnn.roi_heads import per_image, with_index


def train_svm(pos: torch.Tensor, neg: torch.Tensor, c: float, rounds: int = 4,
              pos_weight: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's linear SVM (rcnn_train.m: liblinear ``-s 3 -w1 2 -c C -B 10``): hinge loss,
    ``1/2 |w|^2 + C sum_i c_i max(0, 1 - y_i (w.x_i + b))`` with positives weighted 2 and the bias
    a feature of value 10, with hard negative mining: start from a random set of negatives, add
    every negative inside the margin (score > -1), refit."""
    from sklearn.svm import LinearSVC

    gen = np.random.default_rng(0)
    p, n = pos.double().numpy(), neg.double().numpy()
    active = gen.permutation(len(n))[: max(4 * len(p), 1000)]
    w, b = np.zeros(p.shape[1]), 0.0
    for _ in range(rounds):
        x = np.concatenate([p, n[active]])
        y = np.concatenate([np.ones(len(p)), -np.ones(len(active))])
        svm = LinearSVC(C=c, loss="hinge", dual=True, class_weight={1: pos_weight, -1: 1.0}, intercept_scaling=10.0,
                        max_iter=20000, tol=1e-5).fit(x, y)
        w, b = svm.coef_[0], float(svm.intercept_[0])
        hard = np.flatnonzero(n @ w + b > -1.0)
        new = np.setdiff1d(hard, active)
        if len(new) == 0:
            break
        active = np.concatenate([active, new])
    return torch.from_numpy(w).float(), torch.tensor(b, dtype=torch.float32)


def feature_scale(features: torch.Tensor, norm: float = 20.0) -> float:
    """The factor that brings the features' mean L2 norm to ``norm`` (R-CNN's 20, before the SVMs)."""
    return norm / max(float(features.norm(dim=1).mean()), 1e-12)


def ridge(x: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression with an unshrunk bias: (D + 1, 4) weights minimising |[x 1] W - t|^2 + lam |W|^2."""
    from sklearn.linear_model import Ridge

    fit = Ridge(alpha=lam).fit(x.double().numpy(), t.double().numpy())
    return torch.from_numpy(np.concatenate([fit.coef_.T, fit.intercept_[None]])).float()


Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any, list[torch.Tensor]]]) -> Features:
    """From ``(images, targets, proposals)`` batches (ground-truth boxes join the candidates):
    fc features, each candidate's best IoU with each class's boxes, its ground-truth class (1..K;
    0 for a proposal) and, for candidates with IoU >= 0.6, pooled features, box targets and class."""
    k = model.num_classes
    fcs, ious, gt_rows, reg_x, reg_t, reg_c = [], [], [], [], [], []
    for images, targets, found in batches:
        device = images.device
        cands = [torch.cat([t["boxes"].to(device), p]) for t, p in zip(targets, found)]
        pooled, fc = model.region_features(images, with_index(cands).to(device))
        for (c, p, f), t in zip(per_image(cands, pooled, fc), targets):
            gt, gl = t["boxes"].to(device), t["labels"].to(device)
            iou = torch.zeros(len(c), k, device=device)
            if len(gt):
                overlaps = box_iou(c, gt)
                for j in gl.unique().tolist():
                    iou[:, j] = overlaps[:, gl == j].max(1).values
                best, match = overlaps.max(1)
                sel = best >= 0.6
                reg_x.append(p[sel].float().cpu())
                reg_t.append(UNIT_CODER.encode_single(gt[match[sel]], c[sel]).cpu())
                reg_c.append(gl[match[sel]].cpu())
            is_gt = torch.zeros(len(c), dtype=torch.long, device=device)
            is_gt[: len(gt)] = gl + 1
            fcs.append(f.float().cpu())
            ious.append(iou.cpu())
            gt_rows.append(is_gt.cpu())
    empty = torch.zeros(0)
    return (torch.cat(fcs), torch.cat(ious), torch.cat(gt_rows), torch.cat(reg_x) if reg_x else empty,
            torch.cat(reg_t) if reg_t else empty, torch.cat(reg_c) if reg_c else empty.long())


@torch.no_grad()
def fit_classifiers(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any, list[torch.Tensor]]],
                    svm_c: float, ridge_lambda: float) -> None:
    """Fill ``model``'s SVM and regressor buffers: SVMs take ground-truth boxes as positives and
    proposals with IoU < 0.3 as negatives, on fc features scaled to a mean norm of 20 (the scale is
    folded into the stored weights); regressors learn from IoU >= 0.6 (the paper's)."""
    fc, iou, gt_cls, reg_x, reg_t, reg_c = collect(model, batches)
    scale = feature_scale(fc)
    fc = fc * scale
    weight, bias = torch.zeros(model.num_classes, fc.shape[1]), torch.zeros(model.num_classes)
    for j in range(model.num_classes):
        pos, neg = fc[gt_cls == j + 1], fc[(gt_cls == 0) & (iou[:, j] < 0.3)]
        if len(pos) and len(neg):
            weight[j], bias[j] = train_svm(pos, neg, svm_c)
    weight *= scale
    reg = torch.zeros_like(model.reg_weight).cpu()
    for j in reg_c.unique().tolist():
        reg[j] = ridge(reg_x[reg_c == j], reg_t[reg_c == j], ridge_lambda)
    model.svm_weight.copy_(weight)
    model.svm_bias.copy_(bias)
    model.reg_weight.copy_(reg)
    model.svm_ready.fill_(True)
