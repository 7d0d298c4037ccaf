"""Inference copies of a detector: BatchNorm folded into the conv before it, channels-last memory layout.

Folding is exact up to float rounding: in eval mode ``bn(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)``
and ``b' = (b - m) * g / sqrt(v + eps) + beta`` (``g = 1`` for MXNet-style fixed-gamma BatchNorm). Pairs are
found as neighbours inside ``nn.Sequential`` containers (MobileNet, the extra blocks); other BatchNorm layers stay.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm", "inference_copy"]


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    gamma = torch.ones_like(bn.running_var) if getattr(bn, "fix_gamma", False) or bn.weight is None else bn.weight
    beta = torch.zeros_like(bn.running_mean) if bn.bias is None else bn.bias
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + beta, requires_grad=False)
    return fused


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> int:
    """Fold every (Conv2d, BatchNorm2d) neighbour pair of the ``nn.Sequential`` containers of ``module`` (in eval
    mode) in place; the BatchNorm becomes ``nn.Identity``. Returns the number of pairs folded."""
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (running statistics)")
    count = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                seq._modules[first] = _folded(conv, bn)
                seq._modules[second] = nn.Identity()
                count += 1
    return count


def inference_copy(net: nn.Module, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``net`` without gradients, BatchNorm folded and (by default) channels-last weights;
    give it channels-last inputs (``x.contiguous(memory_format=torch.channels_last)``) for the fastest convs."""
    out = copy.deepcopy(net).eval().requires_grad_(False)
    if hasattr(out, "_anchor_cache"):
        out._anchor_cache = {}
    fold_batchnorm(out)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return out
