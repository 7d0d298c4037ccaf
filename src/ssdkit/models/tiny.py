"""A small CPU-friendly SSD for the built-in synthetic shapes data set.

Shape legend: B batch; sizes for the default 128 x 128 input.

Backbone: plain 3x3 conv + BN + ReLU layers (on a CPU a dense 3x3 conv does more per second than a depthwise
one, and these nets are trained from scratch, where the wider layers learn faster per step), no pretrained
weights:

| stage  | layers                                    | output                     | feature |
| ------ | ----------------------------------------- | -------------------------- | ------- |
| stem   | conv 3x3/2 (32), conv 3x3/2, 4 x conv 3x3 | ``Tensor[B, 64, 32, 32]``  | 0       |
| stage3 | conv 3x3/2, conv 3x3                      | ``Tensor[B, 128, 16, 16]`` | 1       |
| stage4 | conv 3x3/2, conv 3x3                      | ``Tensor[B, 192, 8, 8]``   | 2       |

The stride-4 map feeds the smallest anchors (10-14 px), so it gets depth: six convs in the stem instead of three.
VOC07 mAP after 6 epochs (new images each epoch, "light" augmentation, one run each): 0.73 with three, 0.76 with
four, 0.79 with five; 0.79 also with six, or with five plus one more at stride 8; 0.74 with four at 96 channels (and
slower). Six became worth it once the training images were denser (5-20 objects, ``synthetic_train_objects``):
14-epoch runs reached 0.908 and 0.8985 with six (two initialisations) against 0.896 with five, for a step about 5 %
slower; seven gave 0.901. A top-down FPN-style path into the stride-4 map did worse (0.67 vs 0.70, on the fixed
4000-image set).
The first two convs have 32 and 64 channels (they had 16 and 32): 6-epoch mAP 0.795 -> 0.809 (no augmentation), for a
step about 8 % slower: the objects under 12 px are 2-3 pixels wide on the stride-4 map, and their shape has to pass
through these two layers.

Extras (the added layers, GluonCV style: 1x1 conv + BN + ReLU, 3x3/2 conv + BN + ReLU): 4x4, 2x2, 1x1 with
128 channels each. Heads are 3x3 convs as in the big models.

Anchors (``TINY_ANCHORS``): six layers with steps 4..128 and sizes 10, 20, 36, 60, 92, 120 (second squares 14.1,
26.8, 46.5, 74.3, 105.1, 123.9), two squares per position and no elongated ones (the shapes' boxes are nearly
square): 2730 anchors at 128 x 128. Every anchor is about 2-2.5 steps wide, so almost every object of 8 to 100
pixels overlaps some anchor with IoU >= 0.5 (98-100 % per size band of simulated boxes, 2-4 such anchors each);
GluonCV's SSD300 spaces its anchors alike (30 px at step 8, 60 at 16, ...). The earlier preset, with one-step-wide
anchors, left 16-61 % of those boxes (by size band) without any anchor at IoU 0.5; after 600 training steps it
reached VOC07 mAP 0.08 where these anchors on the same (then depthwise-separable) network reached 0.23.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..anchors import AnchorSpec
from ..init import init_weights

__all__ = ["DEFAULT_SYNTHETIC_CLASSES", "TINY_ANCHORS", "TINY_DATA_SHAPE", "TinyExtractor"]

DEFAULT_SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
TINY_DATA_SHAPE = 128
TINY_ANCHORS = AnchorSpec(sizes=(10, 20, 36, 60, 92, 120, 128), ratios=((1,),) * 6,
                          steps=(4, 8, 16, 32, 64, 128))


def _cbr(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _extra(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(*_cbr(in_ch, mid_ch, 1), *_cbr(mid_ch, out_ch, 3, 2))


class TinyExtractor(nn.Module):
    """``Tensor[B, 3, H, W] -> [H/4, H/8, H/16, H/32, H/64, H/128 maps]`` (ceil), channels ``out_channels``."""

    out_channels = (64, 128, 192, 128, 128, 128)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 32, 3, 2), *_cbr(32, 64, 3, 2),
                                  *(layer for _ in range(4) for layer in _cbr(64, 64, 3)))
        self.stage3 = nn.Sequential(*_cbr(64, 128, 3, 2), *_cbr(128, 128, 3))
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
