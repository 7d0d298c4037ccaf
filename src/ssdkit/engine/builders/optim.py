"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..schedule import make_scheduler

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay on every parameter, as GluonCV (no exemptions for biases or BN);
    ``--optimizer adamw`` for recipes that train from scratch.

    Fused (one kernel for all parameters) where PyTorch has it, on CPU and CUDA. A fused step takes a
    ``found_inf`` flag on the device and skips the whole update when it is set, which is how the trainer's
    non-finite guard skips a step without reading the flag on the host. SGD's momentum buffers start at zero
    (the same first step as PyTorch's lazy buffers), so a skipped first step leaves nothing uninitialised.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd, fused=fused or None)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.wd, fused=fused or None)
    if cfg.momentum:
        for p in params:
            opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return opt


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int):
    """Warmup, then GluonCV's step decay, stepped every iteration."""
    return make_scheduler(optimizer, iters_per_epoch, cfg.lr_decay_epochs, cfg.lr_decay, cfg.warmup_epochs)
