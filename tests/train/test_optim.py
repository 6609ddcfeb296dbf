"""The learning-rate schedule at its edges, from its formula, and a real optimiser driven through it."""

from __future__ import annotations

import math

import pytest
import torch

from contrasphere.train.config import OptimConfig
from contrasphere.train.optim import build_optimizer, build_scheduler, lr_factor


def _config(**change) -> OptimConfig:
    return OptimConfig(**{"name": "sgd", "lr": 0.4, "schedule": "cosine", "warmup_steps": 0, **change})


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
def test_warm_up_ramps_linearly_to_one(schedule):
    optim = _config(schedule=schedule, warmup_steps=8, milestones=(0.5,))
    assert lr_factor(optim, 0, 100) == pytest.approx(1 / 8)  # the first step is not at lr 0
    for step in range(8):
        assert lr_factor(optim, step, 100) == pytest.approx((step + 1) / 8)
    assert lr_factor(optim, 7, 100) == 1.0  # the last warm-up step reaches the full rate
    assert lr_factor(optim, 8, 100) == 1.0  # and the schedule proper starts there, at 1


def test_cosine_after_warm_up():
    warmup, total = 10, 110  # 100 steps after warm-up
    optim = _config(warmup_steps=warmup)
    assert lr_factor(optim, warmup, total) == 1.0
    assert lr_factor(optim, warmup + 50, total) == pytest.approx(0.5, abs=1e-12)  # half way: cos(pi / 2)
    assert lr_factor(optim, warmup + 25, total) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_factor(optim, total - 1, total) == pytest.approx((1 + math.cos(math.pi * 99 / 100)) / 2)
    assert 0 < lr_factor(optim, total - 1, total) < 1e-3  # the last step is close to 0, not at it
    assert lr_factor(optim, total, total) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor(optim, s, total) for s in range(warmup, total)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing


def test_cosine_without_warm_up_starts_at_one():
    optim = _config(warmup_steps=0)
    assert lr_factor(optim, 0, 40) == 1.0
    assert lr_factor(optim, 20, 40) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(optim, 39, 40) == pytest.approx((1 + math.cos(math.pi * 39 / 40)) / 2)


def test_step_schedule_multiplies_by_gamma_exactly_at_each_milestone():
    warmup, total = 4, 104  # 100 steps after warm-up: milestone fraction m is step warmup + 100 m
    optim = _config(schedule="step", warmup_steps=warmup, milestones=(0.5, 0.75), gamma=0.2)
    assert lr_factor(optim, warmup, total) == 1.0
    assert lr_factor(optim, warmup + 49, total) == 1.0  # just before the first milestone: not yet
    assert lr_factor(optim, warmup + 50, total) == pytest.approx(0.2)
    assert lr_factor(optim, warmup + 74, total) == pytest.approx(0.2)
    assert lr_factor(optim, warmup + 75, total) == pytest.approx(0.04)
    assert lr_factor(optim, total - 1, total) == pytest.approx(0.04)
    # the paper's STL-10 milestones (epochs 155, 170, 185 of 200), one step per epoch, no warm-up
    paper = _config(schedule="step", milestones=(155 / 200, 170 / 200, 185 / 200), gamma=0.1)
    factors = [lr_factor(paper, s, 200) for s in range(200)]
    assert factors[154] == 1.0 and factors[155] == pytest.approx(0.1)
    assert factors[169] == pytest.approx(0.1) and factors[170] == pytest.approx(0.01)
    assert factors[184] == pytest.approx(0.01) and factors[185] == pytest.approx(0.001)
    # no milestones: a constant rate
    assert {lr_factor(_config(schedule="step"), s, 50) for s in range(50)} == {1.0}


def test_constant_stays_at_one():
    optim = _config(schedule="constant")
    assert {lr_factor(optim, s, 30) for s in range(30)} == {1.0}
    warm = _config(schedule="constant", warmup_steps=3)
    assert [lr_factor(warm, s, 10) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])


def test_warm_up_longer_than_the_run_does_not_divide_by_zero():
    optim = _config(warmup_steps=20)
    assert lr_factor(optim, 9, 10) == pytest.approx(0.5)  # still warming up at the last step
    assert lr_factor(optim, 20, 20) == 1.0  # no steps after warm-up: progress 0


@pytest.mark.parametrize(
    ("change", "total"),
    [
        ({"schedule": "cosine", "warmup_steps": 5}, 25),
        ({"schedule": "step", "warmup_steps": 2, "milestones": (0.25, 0.5), "gamma": 0.5}, 18),
        ({"schedule": "constant", "warmup_steps": 3}, 10),
    ],
)
def test_the_scheduler_drives_the_optimisers_rate_through_lr_factor(change, total):
    optim = _config(lr=0.4, **change)
    model = torch.nn.Linear(3, 1)
    optimizer = build_optimizer(model.parameters(), optim)
    scheduler = build_scheduler(optimizer, optim, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])  # the rate this step uses
        model(torch.randn(4, 3)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    assert seen == pytest.approx([0.4 * lr_factor(optim, s, total) for s in range(total)], rel=1e-12)
    assert seen[0] == pytest.approx(0.4 / optim.warmup_steps)


def test_build_optimizer_follows_the_config():
    params = list(torch.nn.Linear(3, 2).parameters())
    sgd = build_optimizer(params, _config(momentum=0.8, weight_decay=1e-3))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.4, 0.8, 1e-3)
    assert type(build_optimizer(params, _config(name="adam"))) is torch.optim.Adam
    adamw = build_optimizer(params, _config(name="adamw", weight_decay=0.05))
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["weight_decay"] == 0.05
