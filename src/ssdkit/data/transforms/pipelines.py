"""The SSD pipelines as ``v2.Compose`` of the transforms: GluonCV's train augmentation (without targets) and its
validation resize.

``SSDTrainTransform`` is GluonCV's ``SSDDefaultTrainTransform`` without targets (see
:class:`ssdkit.data.collate.TargetCollate` for those, or :mod:`ssdkit.data.transforms.presets.ssd` for GluonCV's
names and call convention):

1. :class:`RandomColorDistort`: float32, never clipped; brightness first, then contrast -> saturation -> hue or
   saturation -> hue -> contrast (p 1/2), each step with p 0.5.
2. :class:`RandomExpand`: p 0.5, ratio U(1, 4) on both axes, canvas filled with ``mean * 255``.
3. :class:`RandomIoUCrop`: GluonCV's ``random_crop_with_constraints`` (every gt must meet the minimum IoU; not
   torchvision's ``RandomIoUCrop``, which asks it of any one box).
4. :class:`RandomInterpolationResize`: to S x S ignoring aspect, one of OpenCV's five interpolations at random.
5. ``v2.RandomHorizontalFlip`` (torchvision maps ``x1' = W - x2``, as GluonCV).
6. :class:`DivideBy255` then ``v2.Normalize(mean, std)``.

``SSDValTransform`` resizes to S x S with MXNet's ``interp=9`` rule (cubic when enlarging both sides, area when
shrinking both, else linear), quantised to uint8 like OpenCV on a uint8 image, then normalises.
``interpolation="bilinear"`` uses ``v2.Resize`` (antialiased, a different filter) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ...constants import IMAGENET_MEAN, IMAGENET_STD
from ._tv import is_image, rewrap, size_pair
from .color import RandomColorDistort
from .geometry import RandomExpand, RandomInterpolationResize, RandomIoUCrop, ResizeCV

__all__ = ["DivideBy255", "SSDTrainTransform", "SSDValTransform"]


class DivideBy255(v2.Transform):
    """Image -> float32 ``x / 255`` (MXNet's ``to_tensor``; also for float images, which
    ``v2.ToDtype(scale=True)`` would leave unscaled)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not is_image(inpt):
            return inpt
        return rewrap(inpt.as_subclass(Tensor).to(torch.float32) / 255.0, inpt)


class SSDTrainTransform(v2.Compose):
    """GluonCV's ``SSDDefaultTrainTransform(size, size)`` (without targets) as a ``v2.Compose``.

    ``(image uint8 [3, H, W], target)`` -> ``(image float32 [3, S, S] normalised, target)`` with the
    boxes in S x S pixels; ``labels``/``difficult`` follow the boxes. ``self.transforms`` lists the
    steps, so a custom pipeline can reuse or replace them. ``expand_max_ratio`` (GluonCV: 4) bounds
    the zoom-out; 1 disables it (useful when objects are already small, e.g. synthetic data at 128).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        expand_max_ratio: float = 4.0,
    ):
        size, mean, std = size_pair(size), tuple(mean), tuple(std)
        super().__init__(
            [
                RandomColorDistort(),
                RandomExpand(max_ratio=expand_max_ratio, fill=[m * 255 for m in mean], p=0.5),
                RandomIoUCrop(),
                RandomInterpolationResize(size),
                v2.RandomHorizontalFlip(p=0.5),
                DivideBy255(),
                v2.Normalize(mean=list(mean), std=list(std)),
            ]
        )
        self.size, self.mean, self.std = size, mean, std


class SSDValTransform(v2.Compose):
    """GluonCV's ``SSDDefaultValTransform(size, size)``: resize to S x S, ``/255``, normalise.

    ``interpolation="auto"`` (default) follows MXNet's ``interp=9`` as GluonCV does; ``"bilinear"``
    uses torchvision's antialiased bilinear ``v2.Resize`` instead. Boxes are scaled; labels and
    ``difficult`` kept.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str | int = "auto",
    ):
        size, mean, std = size_pair(size), tuple(mean), tuple(std)
        if interpolation == "bilinear":
            resize = v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        else:
            resize = ResizeCV(size, interpolation)
        super().__init__([resize, DivideBy255(), v2.Normalize(mean=list(mean), std=list(std))])
        self.size, self.mean, self.std = size, mean, std

    def forward(self, *inputs: Any) -> Any:
        """As ``v2.Compose``; an ``(image, target)`` pair whose uint8 image is already S x S (e.g. synthetic images
        drawn at the input size) takes a shortcut with the same result: the resize would give the image and boxes
        back unchanged, and three passes of torchvision's per-transform dispatch over the sample cost several times
        the arithmetic of a small image."""
        if len(inputs) != 2 or not self._sized_pair(inputs[0], inputs[1]):
            return super().forward(*inputs)
        image, target = inputs
        # DivideBy255's division, then Normalize's own kernel: the values are identical
        scaled = image.as_subclass(Tensor).to(torch.float32) / 255.0
        return rewrap(F.normalize(scaled, list(self.mean), list(self.std)), image), dict(target)

    def _sized_pair(self, image: Any, target: Any) -> bool:
        if not isinstance(self.transforms[0], ResizeCV):  # v2.Resize (bilinear) is not checked to be the identity
            return False
        if not (isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.dim() == 3):
            return False
        if image.shape[0] != len(self.mean) or tuple(image.shape[-2:]) != self.size or not isinstance(target, dict):
            return False
        # another image (or video) in the target would be transformed too: leave such samples to Compose
        return not any(isinstance(leaf, (tv_tensors.Image, tv_tensors.Video)) for leaf in tree_flatten(target)[0])
