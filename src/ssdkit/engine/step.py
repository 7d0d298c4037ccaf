"""One SSD training step (forward, loss, backward, optimizer) that never waits for the device.

Shape legend: B batch, A anchors, C foreground classes.

The step reads nothing back to the host: no ``.item()``, no Python ``bool`` of a tensor. Under float16 autocast a
``GradScaler`` scales the loss; with a fused optimizer (``fused=True``, as :func:`.builders.build_optimizer`
makes) the scaler hands its inf check to the optimizer's kernel instead of reading it on the host, so the step
stays asynchronous on CUDA. The caller reads the returned losses when it logs (every N steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["train_step", "step_memory_format", "zero_momentum_buffers"]


def zero_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Give a fused SGD's parameters zero momentum buffers before its first step.

    PyTorch's fused SGD allocates the buffers uninitialized (``empty_like``) on its first step and lets the
    kernel fill them; when a ``GradScaler`` finds inf gradients on that step (usual while the scale settles at the
    start of float16 training) the kernel skips the step and the buffers keep garbage, which the next steps read
    as momentum. Zero buffers give exactly the first-step update ``buf = grad`` (with dampening 0). Other
    optimizers and SGD with dampening are left alone.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if not group.get("fused") or group["momentum"] == 0 or group["dampening"] != 0:
            continue
        for p in group["params"]:
            optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p, memory_format=torch.preserve_format))


def step_memory_format(device: torch.device, amp_dtype: torch.dtype | None) -> torch.memory_format:
    """NHWC on CPU and under autocast: oneDNN's convolutions (fp32 and bf16 / AMX) and CUDA's tensor-core ones
    run fastest in it; NCHW for float32 on CUDA."""
    return torch.channels_last if amp_dtype is not None or device.type == "cpu" else torch.contiguous_format


def train_step(
    net,
    loss_fn,
    optimizer,
    images: Tensor,
    cls_targets: Tensor,
    box_targets: Tensor,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    world: int = 1,
    memory_format: torch.memory_format | None = None,
) -> Tensor:
    """Train ``net`` on one batch; returns ``Tensor[3]`` float32 on the device: (loss, cls_loss, box_loss) of
    the batch, detached.

    ``images`` ``Tensor[B, 3, H, W]``, ``cls_targets`` ``Tensor[B, A]``, ``box_targets`` ``Tensor[B, A, 4]``, all
    on ``net``'s device. ``amp_dtype``: autocast dtype (None: off); ``scaler``: a ``GradScaler`` for float16.
    ``world`` > 1 under ``DistributedDataParallel``: DDP averages gradients over the processes while each one's
    loss is its share of the global batch's loss (normalized by the positives of all processes), so the loss
    that is back-propagated is scaled by the process count to get their sum. ``memory_format`` of the images
    (None: :func:`step_memory_format`); the model's weights should be in the same one.
    """
    images = images.contiguous(memory_format=memory_format or step_memory_format(images.device, amp_dtype))
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        cls_preds, box_preds, _ = net(images)
    sum_loss, cls_loss, box_loss = loss_fn(cls_preds, box_preds, cls_targets, box_targets)
    loss = sum_loss.sum()
    backprop = loss * world if world > 1 else loss
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(backprop).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        backprop.backward()
        optimizer.step()
    return torch.stack((loss.detach(), cls_loss.detach().sum(), box_loss.detach().sum())).float()
