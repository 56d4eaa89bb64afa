"""Optimiser and learning-rate schedule, by name."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .._utils import choice

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


def make_optimizer(params, name: str, lr: float, momentum: float, weight_decay: float):
    """SGD (Nesterov when ``momentum > 0``) or AdamW."""
    choice("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_schedule(
    opt,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    milestones: Iterable[float] = (0.5, 0.75),
    gamma: float = 0.1,
):
    """Per-step LR multiplier: linear warm-up, then cosine / step (at fractions of training) / constant."""
    choice("schedule", name, SCHEDULES)
    total = max(1, epochs * steps_per_epoch)
    warm = int(warmup_epochs * steps_per_epoch)
    marks = [int(m * total) for m in milestones]

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if name == "cosine":
            p = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
        if name == "step":
            return gamma ** sum(step >= m for m in marks)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
