"""Optimizers and per-epoch learning-rate schedules, as the papers' recipes name them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.core.base.config import TrainConfig
from cnnkit.core.base.errors import CnnkitError

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "adagrad", "rmsprop", "rmsprop-tf")
SCHEDULERS = ("cosine", "step", "multistep", "plateau", "poly", "none")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (the VGG recipe), ``nesterov`` (SGD with Nesterov momentum,
    DenseNet's), Adam/AdamW, Adagrad (FaceNet's), or RMSProp: ``rmsprop``
    (PyTorch's: g / (sqrt(v) + eps), v from 0) or ``rmsprop-tf`` (TensorFlow's, which trained
    Inception-v3: g / sqrt(v + eps), v from 1, learning rate inside the momentum; timm's RMSpropTF)."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = config.optimizer.lower()
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=name == "nesterov")
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "rmsprop":  # PyTorch's form: epsilon (1.0) added outside the square root
        return torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    if name == "rmsprop-tf":  # Inception-v3 as trained (TensorFlow): decay 0.9, epsilon 1.0 inside the root
        from timm.optim import RMSpropTF

        return RMSpropTF(params, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    raise CnnkitError(f"unknown optimizer '{config.optimizer}' ({', '.join(OPTIMIZERS)})")


def add_burn_in(optimizer: torch.optim.Optimizer, steps: int, power: float = 4.0) -> None:
    """Darknet's ``burn_in``: for the first ``steps`` optimizer steps the learning rate is
    ``lr * (step / steps) ** power`` (``policy`` in ``src/network.c``'s ``get_current_rate``). Each
    step scales the groups' rates and puts them back after, so the per-epoch schedule is untouched;
    the count is kept in the first param group (``burn_in_step``), saved with the optimizer's state."""
    if steps <= 0:
        return
    group0 = optimizer.param_groups[0]
    group0.setdefault("burn_in_step", 0)

    def scale(opt: torch.optim.Optimizer, *_: Any) -> None:
        group0["burn_in_step"] += 1
        factor = min(group0["burn_in_step"] / steps, 1.0) ** power
        for group in opt.param_groups:
            group["burn_in_lr"], group["lr"] = group["lr"], group["lr"] * factor

    def restore(opt: torch.optim.Optimizer, *_: Any) -> None:
        for group in opt.param_groups:
            group["lr"] = group.pop("burn_in_lr")

    optimizer.register_step_pre_hook(scale)
    optimizer.register_step_post_hook(restore)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, key_mode: str) -> Any:
    """Per-epoch schedule, stepped after each epoch: ``cosine``; ``step`` (x ``gamma`` every
    ``step_size`` epochs: GoogLeNet's 4% every 8 is gamma 0.96, step_size 8); ``multistep`` (x
    ``gamma`` after each epoch in ``milestones``: the papers' iteration counts in epochs of their
    data); ``plateau`` (x ``gamma`` when the key metric stops improving for 2 epochs: AlexNet's and
    VGG's /10); ``poly`` (lr x (1 - epoch/epochs)^``power``: Darknet's); or ``none``."""
    name = config.scheduler.lower()
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    if name == "step":
        step = config.step_size or max(config.epochs // 3, 1)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.gamma)
    if name == "multistep":
        if not config.milestones:
            raise CnnkitError("scheduler multistep needs milestones: the epochs after which lr x gamma (e.g. [30, 60])")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.gamma)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=key_mode, factor=config.gamma, patience=2)
    if name == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(config.epochs, 1), power=config.power)
    if name == "none":
        return None
    raise CnnkitError(f"unknown scheduler '{config.scheduler}' ({', '.join(SCHEDULERS)})")
