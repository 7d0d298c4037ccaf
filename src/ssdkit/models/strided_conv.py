"""``StridedConv2d``: the extras' 3x3 stride-2 convolution, taking a 1x1 input as the 1x1 convolution of its centre
tap.

Shape legend: B batch, C / K input / output channels.

A 3x3 conv with padding 1 and stride 2 on a 1 x 1 map sees only padding through its eight outer taps: the output is
the centre tap's 1x1 convolution, and the outer taps' weight gradient is exactly 0. oneDNN's bfloat16
backward-weights kernel for this case (PyTorch 2.14 on CPUs with AMX, e.g. Intel Xeon 4th generation and later)
returns garbage for those taps instead, NaN in about one call in ten, which wrecks a run within steps (checked
here: 55-57 wrong gradients in 60 calls at batch 2 and 8; stride 1 and 2 x 2 inputs are right). The extras reach a
1 x 1 map where the input is small (the tiny models below 96 px, the 512 px models below 256 px), so they take it
this way: the same output, the right gradient, on every CPU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StridedConv2d"]


class StridedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (odd square kernel, padding ``kernel // 2``, no dilation, zero padding) whose 1x1 inputs go
    through the centre tap alone; ``Tensor[B, C, H, W] -> Tensor[B, K, H', W']``. Its parameters and state dict
    are the plain conv's."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = False):
        if kernel_size % 2 != 1:
            raise ValueError(f"StridedConv2d needs an odd kernel, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] == 1 and x.shape[-2] == 1:
            c = self.kernel_size[0] // 2
            return F.conv2d(x, self.weight[:, :, c : c + 1, c : c + 1], self.bias, 1, 0, 1, self.groups)
        return super().forward(x)
