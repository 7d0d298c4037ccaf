"""A small CPU-friendly SSD for the built-in synthetic shapes data set.

Shape legend: B batch; sizes for the default 128 x 128 input.

Backbone: two 3x3/2 conv + BN + ReLU layers, then depthwise-separable blocks (3x3 depthwise conv + BN + ReLU,
1x1 conv + BN + ReLU), all with BatchNorm and no pretrained weights (plain convs where the maps are large,
because depthwise convs are slow per FLOP on CPU):

| stage | layers                                  | output                     | feature |
| ----- | --------------------------------------- | -------------------------- | ------- |
| stem  | conv 3x3/2, conv 3x3/2, dw-sep          | ``Tensor[B, 64, 32, 32]``  |         |
| 3     | dw-sep /2, dw-sep                       | ``Tensor[B, 128, 16, 16]`` | 0       |
| 4     | dw-sep /2, dw-sep                       | ``Tensor[B, 192, 8, 8]``   | 1       |

Extras (the added layers, GluonCV style: 1x1 conv + BN + ReLU, 3x3/2 conv + BN + ReLU): 4x4, 2x2, 1x1 with
128 channels each. Heads are 3x3 convs as in the big models. Anchors (``TINY_ANCHORS``): steps 8..128,
``smin`` 8, 16, 32, 56, 88 (second square 11.3, 22.6, 42.3, 70.2, 102.8), ratios (1, 2, 1/2) on every layer,
covering objects of ~8 to ~110 pixels; 1364 anchors at 128 x 128.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..anchors import AnchorSpec
from ..init import init_weights

__all__ = ["DEFAULT_SYNTHETIC_CLASSES", "TINY_ANCHORS", "TINY_DATA_SHAPE", "TinyExtractor"]

DEFAULT_SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
TINY_DATA_SHAPE = 128
TINY_ANCHORS = AnchorSpec(sizes=(8, 16, 32, 56, 88, 120), ratios=((1, 2, 0.5),) * 5,
                          steps=(8, 16, 32, 64, 128))


def _cbr(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _dw_sep(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return _cbr(in_ch, in_ch, 3, stride, groups=in_ch) + _cbr(in_ch, out_ch, 1)


def _extra(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(*_cbr(in_ch, mid_ch, 1), *_cbr(mid_ch, out_ch, 3, 2))


class TinyExtractor(nn.Module):
    """``Tensor[B, 3, H, W] -> [H/8, H/16, H/32, H/64, H/128 maps]`` (ceil), channels ``out_channels``."""

    out_channels = (128, 192, 128, 128, 128)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 16, 3, 2), *_cbr(16, 32, 3, 2), *_dw_sep(32, 64, 1))
        self.stage3 = nn.Sequential(*_dw_sep(64, 128, 2), *_dw_sep(128, 128, 1))
        self.stage4 = nn.Sequential(*_dw_sep(128, 192, 2), *_dw_sep(192, 192, 1))
        self.extras = nn.ModuleList([_extra(192, 96, 128), _extra(128, 64, 128), _extra(128, 64, 128)])
        init_weights(self, "kaiming_fan_out")

    def added_layers(self) -> list[nn.Module]:
        return list(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        f0 = self.stage3(self.stem(x))
        y = self.stage4(f0)
        outputs = [f0, y]
        for block in self.extras:
            y = block(y)
            outputs.append(y)
        return outputs
