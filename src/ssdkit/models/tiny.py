"""Small CPU-friendly SSDs for the built-in synthetic shapes data set: ``ssd_tiny48_synthetic`` (the default model of
``ssdkit train``), ``ssd_tiny_synthetic`` and their ``*_custom`` twins.

Shape legend: B batch; C the stem's width (48 in ``ssd_tiny48_*``, 64 in ``ssd_tiny_*``); sizes for the 128 x 128
input.

Backbone: plain 3x3 conv + BN + ReLU layers, trained from scratch (no pretrained weights). On a CPU a dense 3x3 conv
does more work per second than a depthwise one, and oneDNN runs these shapes near the core's peak:

| stage  | layers                                    | output                     | feature |
| ------ | ----------------------------------------- | -------------------------- | ------- |
| stem   | conv 3x3/2 (32), conv 3x3/2, 4 x conv 3x3 | ``Tensor[B, C, 32, 32]``   | 0       |
| stage3 | conv 3x3/2, conv 3x3                      | ``Tensor[B, 128, 16, 16]`` | 1       |
| stage4 | conv 3x3/2, conv 3x3                      | ``Tensor[B, 192, 8, 8]``   | 2       |

The stride-4 map feeds the smallest anchors, so the stem is deep there: its objects under 12 px are 2-3 cells
wide, and their shape has to be told apart within these layers. The stem's four convs at 32 x 32 are about half
of the multiply-adds at C = 64 (290 M per image); C = 48 makes a training step 0.72x as long held to AVX2 in
float32 (a 10-minute budget trains 1.2-1.35x the images), for a little less learned per image: it wins where few
images fit in the budget (docs/synthetic-recipe.md).

Extras (the added layers, GluonCV style: 1x1 conv + BN + ReLU, 3x3/2 conv + BN + ReLU): 4x4, 2x2, 1x1 with
128 channels each. Heads are 3x3 convs as in the big models.

Anchors (``TINY_ANCHORS``): six layers with steps 4..128 and sizes 10, 20, 36, 60, 92, 120 (second squares 14.1,
26.8, 46.5, 74.3, 105.1, 123.9), two squares per position and no elongated ones (the shapes' boxes are nearly
square): 2730 anchors at 128 x 128. Every anchor is about 2-2.5 steps wide, as in GluonCV's SSD300 (30 px at
step 8, 60 at 16, ...), so almost every object of 8 to 100 pixels overlaps some anchor with IoU >= 0.5.
``TINY_MATCH_IOU`` (0.4, the presets' ``match_iou``) gives the smallest boxes about three positive anchors.

Why each of these choices, with the runs that measured it: ``docs/synthetic-recipe.md``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..anchors import AnchorSpec
from ..init import init_weights
from .strided_conv import StridedConv2d

__all__ = ["DEFAULT_SYNTHETIC_CLASSES", "TINY_ANCHORS", "TINY_DATA_SHAPE", "TINY_MATCH_IOU", "TinyExtractor"]

DEFAULT_SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
TINY_DATA_SHAPE = 128
TINY_ANCHORS = AnchorSpec(sizes=(10, 20, 36, 60, 92, 120, 128), ratios=((1,),) * 6, steps=(4, 8, 16, 32, 64, 128))
TINY_MATCH_IOU = 0.4


def _cbr(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    if stride > 1:  # a map may shrink to 1 x 1 under it (see StridedConv2d)
        conv: nn.Conv2d = StridedConv2d(in_ch, out_ch, kernel, stride)
    else:
        conv = nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _extra(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(*_cbr(in_ch, mid_ch, 1), *_cbr(mid_ch, out_ch, 3, 2))


class TinyExtractor(nn.Module):
    """``Tensor[B, 3, H, W] -> [H/4, H/8, H/16, H/32, H/64, H/128 maps]`` (ceil), channels ``out_channels``:
    ``(stem_channels, 128, 192, 128, 128, 128)``."""

    def __init__(self, stem_channels: int = 64):
        super().__init__()
        c = int(stem_channels)
        if c < 1:
            raise ValueError(f"stem_channels must be positive, got {stem_channels}")
        self.out_channels = (c, 128, 192, 128, 128, 128)
        self.stem = nn.Sequential(
            *_cbr(3, 32, 3, 2), *_cbr(32, c, 3, 2), *(layer for _ in range(4) for layer in _cbr(c, c, 3))
        )
        self.stage3 = nn.Sequential(*_cbr(c, 128, 3, 2), *_cbr(128, 128, 3))
        self.stage4 = nn.Sequential(*_cbr(128, 192, 3, 2), *_cbr(192, 192, 3))
        self.extras = nn.ModuleList([_extra(192, 64, 128), _extra(128, 64, 128), _extra(128, 64, 128)])
        init_weights(self, "kaiming_fan_out")

    def added_layers(self) -> list[nn.Module]:
        return list(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        f0 = self.stem(x)
        f1 = self.stage3(f0)
        y = self.stage4(f1)
        outputs = [f0, f1, y]
        for block in self.extras:
            y = block(y)
            outputs.append(y)
        return outputs
