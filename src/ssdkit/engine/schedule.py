"""Learning-rate schedule: optional linear warmup, then GluonCV's step decay, stepped once per iteration."""

from __future__ import annotations

import bisect
from typing import Sequence

import torch

__all__ = ["step_decay_factor", "make_scheduler"]


def step_decay_factor(
    iteration: int, iters_per_epoch: int, decay_epochs: Sequence[int], decay: float, warmup_iters: int = 0
) -> float:
    """LR multiplier at ``iteration`` (0-based): linear warmup from 1/warmup_iters, then ``decay`` at each epoch
    of ``decay_epochs`` (applied from the first iteration of that epoch, as GluonCV's ``train_ssd.py``)."""
    epoch = iteration // max(1, iters_per_epoch)
    factor = decay ** bisect.bisect_right(sorted(decay_epochs), epoch)
    if warmup_iters > 0 and iteration < warmup_iters:
        factor *= (iteration + 1) / warmup_iters
    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    iters_per_epoch: int,
    decay_epochs: Sequence[int],
    decay: float,
    warmup_epochs: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration :func:`step_decay_factor` schedule. Its ``decay_epochs`` attribute is the list the schedule
    reads at every step: a time budget that shortens a run moves the decay points by changing it in place."""
    warmup_iters = int(round(warmup_epochs * iters_per_epoch))
    points = list(decay_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: step_decay_factor(it, iters_per_epoch, points, decay, warmup_iters)
    )
    scheduler.decay_epochs = points  # type: ignore[attr-defined]
    return scheduler
