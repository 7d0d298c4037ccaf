"""GluonCV's SSD augmentation as ``torchvision.transforms.v2`` transforms on tv_tensors.

Shape legend: C channels (3, RGB), H x W image, N boxes, S output size.

Every transform takes the sample format of :mod:`ssdkit.data`, ``(image, target)`` with ``image`` a
``tv_tensors.Image`` ``[C, H, W]`` and ``target["boxes"]`` a ``tv_tensors.BoundingBoxes`` (XYXY pixels), so they
compose with torchvision's own transforms. Randomness comes from torch's global RNG (seeded per DataLoader worker
by torch), so a run is reproducible from ``torch.manual_seed``; the pure functions take an optional
``torch.Generator``.

Modules:

- :mod:`.color`: GluonCV's colour distortion (:class:`RandomColorDistort`);
- :mod:`.geometry`: expand, constrained crop and resize (:class:`RandomExpand`, :class:`RandomIoUCrop`,
  :class:`ResizeCV`, :class:`RandomInterpolationResize`);
- :mod:`.opencv_resize`: OpenCV's resize kernels (:func:`resize_image_cv`);
- :mod:`.pipelines`: the composed SSD pipelines (:class:`SSDTrainTransform`, :class:`SSDValTransform`);
- :mod:`.presets.ssd`: GluonCV's names and call convention (``SSDDefaultTrainTransform``,
  ``SSDDefaultValTransform``, ``load_test``).
"""

from ...constants import IMAGENET_MEAN, IMAGENET_STD
from .color import RandomColorDistort, apply_color_affine, color_distort_affine
from .geometry import (
    DEFAULT_CROP_CONSTRAINTS,
    PER_BOX_KEYS,
    CropResult,
    RandomExpand,
    RandomInterpolationResize,
    RandomIoUCrop,
    ResizeCV,
    crop_boxes_xyxy,
    expand_image,
    filter_per_box,
    random_crop_with_constraints,
)
from .opencv_resize import OPENCV_INTERPOLATIONS, mxnet_auto_interpolation, resize_image_cv
from .pipelines import DivideBy255, SSDTrainTransform, SSDValTransform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENCV_INTERPOLATIONS",
    "DEFAULT_CROP_CONSTRAINTS",
    "PER_BOX_KEYS",
    "color_distort_affine",
    "apply_color_affine",
    "expand_image",
    "crop_boxes_xyxy",
    "random_crop_with_constraints",
    "CropResult",
    "filter_per_box",
    "resize_image_cv",
    "mxnet_auto_interpolation",
    "RandomColorDistort",
    "RandomExpand",
    "RandomIoUCrop",
    "RandomInterpolationResize",
    "ResizeCV",
    "DivideBy255",
    "SSDTrainTransform",
    "SSDValTransform",
]
