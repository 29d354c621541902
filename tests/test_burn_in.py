"""Darknet's burn_in warm-up (core/optim.py): lr x (step / burn_in)^4, then the schedule's own rate."""

from __future__ import annotations

import pytest
import torch

from cnnkit.core.train.optim import add_burn_in


def _rates(optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """The learning rate each step used (read from an SGD step on a unit gradient, no momentum)."""
    param = optimizer.param_groups[0]["params"][0]
    used = []
    for _ in range(steps):
        before = param.detach().clone()
        param.grad = torch.ones_like(param)
        optimizer.step()
        used.append(float((before - param.detach()).mean()))
    return used


def test_burn_in_scales_the_rate_by_the_fourth_power_then_leaves_it():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([param], lr=0.1)
    add_burn_in(opt, 4)
    used = _rates(opt, 6)
    assert used == pytest.approx([0.1 * (k / 4) ** 4 for k in (1, 2, 3, 4)] + [0.1, 0.1])
    assert opt.param_groups[0]["lr"] == 0.1  # the schedule sees its own rate between steps


def test_burn_in_count_survives_the_optimizer_state_dict():
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([param], lr=1.0)
    add_burn_in(opt, 2)
    _rates(opt, 1)
    again = torch.optim.SGD([param], lr=1.0)
    again.load_state_dict(opt.state_dict())
    add_burn_in(again, 2)
    assert _rates(again, 2) == pytest.approx([1.0, 1.0])
