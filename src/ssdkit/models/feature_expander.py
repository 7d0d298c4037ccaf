"""ImageNet backbones tapped at two strides plus GluonCV's four extra blocks (``FeatureExpander``, spec §1.3).

Shape legend: B batch; sizes for a 512 input.

- ``ResNet50V1Body``: GluonCV ResNet-50 **v1** (stride in the first 1x1 conv of each down-sampling
  bottleneck), built from torchvision's resnet50 (v1.5, stride in the 3x3 conv) by moving that stride.
  Weight shapes and names equal torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``).
  Taps: end of ``layer3`` (GluonCV ``stage3_activation5``, ``Tensor[B, 1024, 32, 32]``) and of ``layer4``
  (``stage4_activation2``, ``Tensor[B, 2048, 16, 16]``).
- ``MobileNetV1Body``: GluonCV ``mobilenet1.0``, one flat ``features`` sequence of (conv, BN, ReLU) triples
  exactly as Gluon lays it out, so a converted Gluon state dict (``gamma``/``beta`` renamed to
  ``weight``/``bias``) loads by name. Taps: ``relu22`` (``features[68]``, ``Tensor[B, 512, 32, 32]``) and
  ``relu26`` (``features[80]``, ``Tensor[B, 1024, 16, 16]``). torchvision has no MobileNet v1, so its
  pretrained base is a state dict in these names.
- ``FeatureExpander``: a body plus extra blocks, each (1x1 conv no bias, BN, ReLU, 3x3/2 pad 1 conv no bias,
  BN, ReLU) with 512, 512, 256, 256 channels: maps 8, 4, 2, 1. The extras' BN is MXNet's symbol BatchNorm:
  eps 1e-3, momentum 0.9 (PyTorch 0.1), gamma fixed at 1 (``FixedGammaBatchNorm2d``).

Backbone layers keep torchvision-style initialisation (Kaiming-normal fan_out convs, BN 1/0); the extras
get GluonCV's effective initialisation (``init_weights(extra, "uniform")``) in the model builders.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..init import init_weights
from .strided_conv import StridedConv2d

__all__ = ["FixedGammaBatchNorm2d", "ResNet50V1Body", "MobileNetV1Body", "FeatureExpander", "EXPANDER_FILTERS"]

EXPANDER_FILTERS = (512, 512, 256, 256)


class FixedGammaBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with gamma fixed at 1 (MXNet ``fix_gamma=True``): only beta is learned.

    The ``weight`` parameter exists (value 1, ``requires_grad=False``) so the layer looks like any
    BatchNorm2d to tools such as ``convert_sync_batchnorm``, but the forward ignores it, as MXNet does.
    """

    fix_gamma = True

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.weight.requires_grad_(False)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        with torch.no_grad():  # a stored gamma (e.g. GluonCV's Uniform-initialised one) is meaningless
            self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            None,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )


class ResNet50V1Body(nn.Module):
    """GluonCV ResNet-50 v1 up to ``layer4``: ``Tensor[B, 3, H, W] -> [Tensor[B, 1024, H/16, W/16],
    Tensor[B, 2048, H/32, W/32]]``.

    Gluon's ``BottleneckV1`` gives its two 1x1 convs (``conv1``, ``conv3``) a bias; so does this body
    (``bottleneck_bias=True``; initialised to zero, absent from torchvision files, and numerically inert
    because a BatchNorm follows). ``stride_in_1x1=False`` keeps torchvision's v1.5 stride placement.
    """

    out_channels = (1024, 2048)

    def __init__(self, stride_in_1x1: bool = True, bottleneck_bias: bool = True):
        super().__init__()
        tv = torchvision.models.resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(tv, name))
        if stride_in_1x1:
            for layer in (self.layer2, self.layer3, self.layer4):
                first = layer[0]
                stride = first.conv2.stride
                first.conv1.stride, first.conv2.stride = stride, (1, 1)
        if bottleneck_bias:
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in layer:
                    block.conv1 = _with_bias(block.conv1)
                    block.conv3 = _with_bias(block.conv3)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        c4 = self.layer3(x)
        c5 = self.layer4(c4)
        return [c4, c5]


def _with_bias(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of ``conv`` with a zero bias (same weight tensor, stride and padding)."""
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    new.weight = conv.weight
    nn.init.zeros_(new.bias)
    return new


# (depthwise channels, pointwise channels, stride) of the 13 depthwise-separable blocks of MobileNet 1.0
_MOBILENET_BLOCKS = tuple(
    zip(
        (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024),
        (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024),
        (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1),
    )
)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class MobileNetV1Body(nn.Module):
    """GluonCV MobileNet 1.0 up to its last ReLU: ``Tensor[B, 3, H, W] -> [Tensor[B, 512, H/16, W/16],
    Tensor[B, 1024, H/32, W/32]]``."""

    out_channels = (512, 1024)
    tap_indices = (68, 80)  # relu22, relu26

    def __init__(self):
        super().__init__()
        mods = _conv_bn_relu(3, 32, 3, 2, 1)
        for dw, pw, s in _MOBILENET_BLOCKS:
            mods += _conv_bn_relu(dw, dw, 3, s, 1, groups=dw)
            mods += _conv_bn_relu(dw, pw, 1, 1, 0)
        self.features = nn.Sequential(*mods)
        init_weights(self, "kaiming_fan_out")

    def forward(self, x: Tensor) -> list[Tensor]:
        a, b = self.tap_indices
        c4 = self.features[: a + 1](x)
        c5 = self.features[a + 1 : b + 1](c4)
        return [c4, c5]


def _extra_block(in_ch: int, filters: int, trans_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, trans_ch, 1, bias=False),
        FixedGammaBatchNorm2d(trans_ch),
        nn.ReLU(inplace=True),
        StridedConv2d(trans_ch, filters, 3, 2),  # GluonCV's 3x3/2 conv, padding 1; a 1 x 1 map takes its centre tap
        FixedGammaBatchNorm2d(filters),
        nn.ReLU(inplace=True),
    )


class FeatureExpander(nn.Module):
    """``body`` taps followed by extra blocks: ``Tensor[B, 3, H, W] -> list of len(taps) + len(filters) maps``."""

    def __init__(
        self,
        body: nn.Module,
        filters: Sequence[int] = EXPANDER_FILTERS,
        min_depth: int = 128,
        reduce_ratio: float = 1.0,
    ):
        super().__init__()
        self.body = body
        in_ch = body.out_channels[-1]
        blocks = []
        for f in filters:
            blocks.append(_extra_block(in_ch, f, max(min_depth, int(round(f * reduce_ratio)))))
            in_ch = f
        self.extras = nn.ModuleList(blocks)
        self.out_channels = tuple(body.out_channels) + tuple(filters)

    def added_layers(self) -> list[nn.Module]:
        return list(self.extras)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = list(self.body(x))
        y = outputs[-1]
        for block in self.extras:
            y = block(y)
            outputs.append(y)
        return outputs
