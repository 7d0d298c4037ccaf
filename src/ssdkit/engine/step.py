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

__all__ = ["train_step", "step_memory_format", "zero_momentum_buffers", "match_state_layouts"]


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


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor of the parameter's shape (momentum buffers) the parameter's layout.

    A checkpoint keeps the layout its tensors had when saved, and ``Optimizer.load_state_dict`` keeps it too; a run
    resumed where the weights take the other memory format (another device, or a CPU where the model trains in
    NCHW) would pair NCHW weights with NHWC momentum. Fused SGD walks the two as flat memory (on CPU as on CUDA),
    so such a pair mixes up the elements instead of failing.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def step_memory_format(
    device: torch.device, amp_dtype: torch.dtype | None, nchw_fp32_cpu: bool = False
) -> torch.memory_format:
    """NHWC on CPU and under autocast: oneDNN's convolutions (fp32 and bf16 / AMX) and CUDA's tensor-core ones
    run fastest in it; NCHW for float32 on CUDA, and for float32 on CPU when ``nchw_fp32_cpu`` (VGG on a CPU
    without AVX-512: there oneDNN has no brgemm kernel for an NHWC convolution's weight gradient, and at VGG's
    wide full-resolution layers the fallback takes 2-4x the blocked NCHW kernel's time; see
    :func:`.builders.runtime.run_memory_format`)."""
    if amp_dtype is not None:
        return torch.channels_last
    if device.type == "cpu" and not nchw_fp32_cpu:
        return torch.channels_last
    return torch.contiguous_format


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
    pos_weights: Tensor | None = None,
) -> Tensor:
    """Train ``net`` on one batch; returns ``Tensor[3]`` float32 on the device: (loss, cls_loss, box_loss) of
    the batch, detached.

    ``images`` ``Tensor[B, 3, H, W]``, ``cls_targets`` ``Tensor[B, A]``, ``box_targets`` ``Tensor[B, A, 4]``, all
    on ``net``'s device. ``amp_dtype``: autocast dtype (None: off); ``scaler``: a ``GradScaler`` for float16.
    ``world`` > 1 under ``DistributedDataParallel``: DDP averages gradients over the processes while each one's
    loss is its share of the global batch's loss (normalized by the positives of all processes), so the loss
    that is back-propagated is scaled by the process count to get their sum. ``memory_format`` of the images
    (None: :func:`step_memory_format`); the model's weights should be in the same one. ``pos_weights``
    ``Tensor[B, A]``: the positives' loss weights (the batch's ``pos_weights``; None: 1 each).
    """
    images = images.contiguous(memory_format=memory_format or step_memory_format(images.device, amp_dtype))
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        cls_preds, box_preds, _ = net(images)
    sum_loss, cls_loss, box_loss = loss_fn(cls_preds, box_preds, cls_targets, box_targets, pos_weights)
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
