"""VGG16-atrous feature extractor of GluonCV 0.10.5's SSD.

Shape legend: B batch; sizes for a 300 (512) input.

- The ImageNet-normalised input is multiplied by ``std * 255`` per channel, so the convs see
  ``pixel - mean * 255`` on a 0-255 scale, RGB.
- Stages of 2, 2, 3, 3, 3 3x3 convs (64, 128, 256, 512, 512 channels) with ReLU, no BN; 2x2/2 ceil-mode
  max-pools after stages 1-3 and 4. conv4_3 (``Tensor[B, 512, 38, 38]``, 64 at 512) is L2-normalised over
  channels (eps 1e-5 inside the square root) and scaled per channel (init 20): feature 0.
- pool5 3x3/1 pad 1, fc6 3x3 conv 1024 dilation 6 pad 6 + ReLU, fc7 1x1 conv 1024 + ReLU: feature 1
  (``Tensor[B, 1024, 19, 19]``, 32 at 512).
- Extras, pairs of (1x1 conv + ReLU, kxk conv + ReLU), each pair output a feature:
  300: 10, 5, 3, 1; 512: 16, 8, 4, 2, 1.

Module names equal GluonCV's parameter names (``stages.5.0`` is fc6, ``stages.5.2`` is fc7,
``norm4.scale``, ``extras.i.0`` / ``extras.i.2``). Every conv is initialised with Kaiming-normal fan_out
(= MXNet Xavier(gaussian, out, 2)), biases zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import IMAGENET_STD
from ..init import init_weights

__all__ = [
    "L2Norm",
    "VGGAtrousExtractor",
    "VGG16_LAYERS",
    "VGG16_FILTERS",
    "EXTRA_SPECS",
    "vgg16_atrous_300",
    "vgg16_atrous_512",
]

VGG16_LAYERS = (2, 2, 3, 3, 3)
VGG16_FILTERS = (64, 128, 256, 512, 512)

# (out channels, kernel, stride, pad) of the two convs of each extra block.
EXTRA_SPECS = {
    300: (
        ((256, 1, 1, 0), (512, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 3, 1, 0)),
        ((128, 1, 1, 0), (256, 3, 1, 0)),
    ),
    512: (
        ((256, 1, 1, 0), (512, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 3, 2, 1)),
        ((128, 1, 1, 0), (256, 4, 1, 1)),
    ),
}


class L2Norm(nn.Module):
    """``x / sqrt(sum_c x^2 + eps) * scale``; ``scale Tensor[C]`` learned, initialised to ``initial``.

    GluonCV keeps the scale as ``Tensor[1, C, 1, 1]``; a weight file or checkpoint in that shape loads unchanged.
    The scale is one-dimensional here because the compiled backward (``torch.compile`` under CUDA autocast, torch
    2.11) returns its gradient as ``Tensor[C]`` and then rejects it against a ``Tensor[1, C, 1, 1]`` parameter; a
    flat parameter also stays out of the channels-last conversion of the model.
    """

    def __init__(self, channels: int, initial: float = 20.0, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.initial = initial
        self.scale = nn.Parameter(torch.full((channels,), float(initial)))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + self.eps) * self.scale.view(1, -1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "scale"
        stored = state_dict.get(key)
        if stored is not None and stored.dim() == 4 and stored.numel() == self.scale.numel():
            state_dict[key] = stored.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _conv_relu(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation), nn.ReLU(inplace=True)]


class VGGAtrousExtractor(nn.Module):
    """VGG16-atrous backbone plus SSD extras: ``Tensor[B, 3, H, W] -> list of feature maps``."""

    def __init__(self, extras=EXTRA_SPECS[300], layers=VGG16_LAYERS, filters=VGG16_FILTERS):
        super().__init__()
        if len(layers) != 5 or len(filters) != 5:
            raise ValueError("VGG atrous needs 5 stages")
        self.register_buffer("init_scale", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1) * 255.0, persistent=False)
        stages = []
        in_ch = 3
        for n, f in zip(layers, filters):
            mods: list[nn.Module] = []
            for _ in range(n):
                mods += _conv_relu(in_ch, f, 3, padding=1)
                in_ch = f
            stages.append(nn.Sequential(*mods))
        # fc6 (dilated 3x3) and fc7 (1x1) as convs
        stages.append(nn.Sequential(*_conv_relu(in_ch, 1024, 3, padding=6, dilation=6), *_conv_relu(1024, 1024, 1)))
        self.stages = nn.ModuleList(stages)
        self.norm4 = L2Norm(filters[3], 20.0)
        extra_blocks = []
        in_ch = 1024
        for block in extras:
            mods = []
            for f, k, s, p in block:
                mods += _conv_relu(in_ch, f, k, s, p)
                in_ch = f
            extra_blocks.append(nn.Sequential(*mods))
        self.extras = nn.ModuleList(extra_blocks)
        self.out_channels = (filters[3], 1024) + tuple(b[-1][0] for b in extras)
        init_weights(self, "kaiming_fan_out")

    def added_layers(self) -> list[nn.Module]:
        """The extra blocks (fc6/fc7 belong to the converted ImageNet base, as in GluonCV)."""
        return list(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x * self.init_scale.to(x.dtype)
        for stage in self.stages[:3]:
            x = F.max_pool2d(stage(x), 2, 2, ceil_mode=True)
        x = self.stages[3](x)
        outputs = [self.norm4(x)]
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = self.stages[4](x)
        x = F.max_pool2d(x, 3, 1, 1, ceil_mode=True)
        x = self.stages[5](x)
        outputs.append(x)
        for extra in self.extras:
            x = extra(x)
            outputs.append(x)
        return outputs


def vgg16_atrous_300() -> VGGAtrousExtractor:
    return VGGAtrousExtractor(EXTRA_SPECS[300])


def vgg16_atrous_512() -> VGGAtrousExtractor:
    return VGGAtrousExtractor(EXTRA_SPECS[512])
