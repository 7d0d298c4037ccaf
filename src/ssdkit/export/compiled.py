"""A detector compiled for inference with TorchInductor (``torch.compile``), in-process and without export.

The network part (backbone, extras, heads, anchors) is compiled with Inductor's *freezing*: the weights become
constants, so convolutions get oneDNN's prepacked weight layouts and fused bias + activation, which eager PyTorch
re-derives on every call. At batch 1 on a CPU that is where eager mode loses most of its time. Decoding and NMS stay
eager (``torchvision.ops.batched_nms`` has no Inductor lowering; they are a small share of a call).

Compiling costs seconds to a minute at the first call of every batch size (shapes are static), so this pays for a
server or a long ``ssdkit predict`` run, not a one-off image. Freezing needs gradients off; calls run under
``torch.no_grad``. A CPU with native bfloat16 (AVX512-BF16 or AMX) runs the network in bfloat16 autocast by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..engine.builders.runtime import cpu_has_native_bf16
from .fuse import inference_copy

__all__ = ["CompiledDetector"]


class CompiledDetector:
    """``detector(x)`` equals ``net.detect(x)`` (to bfloat16 rounding where ``bf16``), compiled.

    Args:
        net: an :class:`~ssdkit.models.SSD`; a BatchNorm-folded, channels-last copy is compiled (``net`` is untouched).
        bf16: run the network in bfloat16 autocast (None: where the CPU has native bfloat16; CUDA: never).
        channels_last: NHWC activations (oneDNN's fastest convolution layout on CPUs).
    """

    def __init__(self, net: nn.Module, bf16: bool | None = None, channels_last: bool = True):
        self.net = inference_copy(net, channels_last=channels_last)
        self.device = next(self.net.parameters()).device
        if bf16 is None:
            bf16 = self.device.type == "cpu" and cpu_has_native_bf16()
        self.bf16 = bool(bf16)
        self.channels_last = channels_last
        self._forward = torch.compile(self.net.forward, dynamic=False)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``Tensor[B, 3, H, W]`` -> ``(ids Tensor[B, K, 1], scores Tensor[B, K, 1], bboxes_xyxy Tensor[B, K, 4])``."""
        import torch._inductor.config as inductor_config

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.no_grad(),
            inductor_config.patch(freezing=True),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            cls_preds, box_preds, anchors = self._forward(x)
        return self.net.postprocessor(cls_preds.float(), box_preds.float(), anchors.float())
