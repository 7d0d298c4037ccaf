"""GluonCV 0.10.5's SSD transform names and call convention (``gluoncv.data.transforms.presets.ssd``), for porting.

Shape legend: H x W input image, N boxes, L label columns (``x1, y1, x2, y2, class, ...``), A anchors.

The transforms take GluonCV's inputs, ``(src, label)`` with ``src`` an HWC uint8 RGB image (NumPy array or
tensor) and ``label`` ``[N, L >= 5]`` (corners in pixels, then the class id and any extra columns), and return
tensors where GluonCV returns NDArrays or NumPy arrays. They run ssdkit's pipelines
(:class:`ssdkit.data.transforms.SSDTrainTransform` / :class:`~ssdkit.data.transforms.SSDValTransform`), so the
randomness is torch's (``torch.manual_seed``), not NumPy's. Differences from GluonCV: ``cls_targets`` are int64
(GluonCV: float32), and resizes of uint8 images may differ from OpenCV's 8-bit fixed point by one grey level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ....anchors import AnchorGrid
from ....constants import BOX_STDS, IMAGENET_MEAN, IMAGENET_STD
from ..opencv_resize import resize_image_cv
from ..pipelines import DivideBy255, SSDTrainTransform, SSDValTransform

__all__ = ["SSDDefaultTrainTransform", "SSDDefaultValTransform", "load_test", "transform_test"]


def _image_chw(src: Any) -> tv_tensors.Image:
    """HWC uint8 image (NumPy array or tensor) -> ``tv_tensors.Image`` ``[3, H, W]``."""
    image = torch.as_tensor(np.asarray(src) if not isinstance(src, Tensor) else src)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"src must be an HWC RGB image [H, W, 3], got shape {tuple(image.shape)}")
    return tv_tensors.Image(image.permute(2, 0, 1).contiguous())


def _sample(src: Any, label: Any) -> tuple[tv_tensors.Image, dict]:
    """GluonCV's ``(src, label [N, L])`` -> the ``(image, target)`` sample of :mod:`ssdkit.data`.

    The boxes stay in float64 (GluonCV scales them as float64); the other columns ride along as ``labels``, so
    that transforms which drop boxes drop them too.
    """
    image = _image_chw(src)
    rows = np.asarray(label, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 5:
        raise ValueError(f"label must be [N, 5+] (x1, y1, x2, y2, class, ...), got shape {rows.shape}")
    boxes = tv_tensors.BoundingBoxes(
        torch.from_numpy(rows[:, :4].copy()), format="XYXY", canvas_size=tuple(image.shape[-2:])
    )
    return image, {"boxes": boxes, "labels": torch.from_numpy(rows[:, 4:].copy())}


def _label(target: dict) -> Tensor:
    """The target back to GluonCV's ``label`` layout, float32 ``[N, L]``."""
    return torch.cat([target["boxes"].as_subclass(Tensor), target["labels"]], dim=1).to(torch.float32)


class SSDDefaultTrainTransform:
    """GluonCV's ``SSDDefaultTrainTransform(width, height, anchors=None, mean, std, iou_thresh, box_norm)``.

    ``(src, label)`` -> ``(image float32 [3, height, width], label float32 [N, L])``; with ``anchors``
    (``Tensor[1, A, 4]`` centre form, e.g. ``net.anchors_for_input(height, width)``) -> ``(image,
    cls_targets int64 [A], box_targets float32 [A, 4])`` from :class:`ssdkit.targets.SSDTargetGenerator` without
    sampling (``negative_mining_ratio=-1``), as GluonCV's. ``anchor_grid`` (``net.anchor_grid_for_input(...)``)
    makes the targets faster, with the same values; other keyword arguments go to the target generator.
    """

    def __init__(
        self,
        width: int,
        height: int,
        anchors: Tensor | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        iou_thresh: float = 0.5,
        box_norm: Sequence[float] = BOX_STDS,
        anchor_grid: AnchorGrid | None = None,
        **kwargs: Any,
    ):
        self._pipeline = SSDTrainTransform((int(height), int(width)), mean, std)
        self._anchors = None if anchors is None else torch.as_tensor(anchors).reshape(1, -1, 4).float()
        self._anchor_grid = anchor_grid
        self._target_generator = None
        if anchors is not None:
            from ....targets import SSDTargetGenerator

            self._target_generator = SSDTargetGenerator(
                iou_thresh=iou_thresh, stds=tuple(box_norm), negative_mining_ratio=-1, **kwargs
            )

    def __call__(self, src: Any, label: Any) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        image, target = self._pipeline(*_sample(src, label))
        image = image.as_subclass(Tensor)
        bbox = _label(target)
        if self._target_generator is None:
            return image, bbox
        cls_targets, box_targets, _ = self._target_generator(
            self._anchors, None, bbox[None, :, :4], bbox[None, :, 4], anchor_grid=self._anchor_grid
        )
        return image, cls_targets[0], box_targets[0]


class SSDDefaultValTransform:
    """GluonCV's ``SSDDefaultValTransform(width, height, mean, std)``: ``(src, label)`` -> ``(image float32
    [3, height, width], label float32 [N, L])``, resized with MXNet's ``interp=9`` rule, ``/255``, normalised."""

    def __init__(
        self, width: int, height: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ):
        self._pipeline = SSDValTransform((int(height), int(width)), mean, std)

    def __call__(self, src: Any, label: Any) -> tuple[Tensor, Tensor]:
        image, target = self._pipeline(*_sample(src, label))
        return image.as_subclass(Tensor), _label(target)


def resize_short_within(image: Tensor, short: int, max_size: int, mult_base: int = 1, interp: int = 2) -> Tensor:
    """GluonCV's ``resize_short_within`` on ``image [C, H, W]``: the short side to ``short``, the long side at most
    ``max_size``, aspect kept (sizes rounded to ``mult_base``), with OpenCV interpolation ``interp`` (2: cubic)."""
    h, w = image.shape[-2:]
    size_min, size_max = (h, w) if w > h else (w, h)
    scale = float(short) / float(size_min)
    if np.round(scale * size_max / mult_base) * mult_base > max_size:
        scale = float(np.floor(max_size / mult_base) * mult_base) / float(size_max)
    new_w = int(np.round(w * scale / mult_base) * mult_base)
    new_h = int(np.round(h * scale / mult_base) * mult_base)
    return resize_image_cv(image, new_h, new_w, interp)


def transform_test(
    images: Any,
    short: int = 512,
    max_size: int = 1024,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[Any, Any]:
    """GluonCV's ``transform_test``: HWC uint8 image(s) -> ``(x float32 [1, 3, H', W'], orig uint8 [H', W', 3])``.

    The short side is resized to ``short`` (long side at most ``max_size``, aspect kept, cubic). One image gives
    one pair; a list gives ``(list of x, list of orig)``.
    """
    single = isinstance(images, (np.ndarray, Tensor))
    normalize = v2.Compose([DivideBy255(), v2.Normalize(mean=list(mean), std=list(std))])
    tensors, origs = [], []
    for src in [images] if single else images:
        resized = resize_short_within(_image_chw(src).as_subclass(Tensor), short, max_size)
        origs.append(resized.permute(1, 2, 0).numpy())
        tensors.append(normalize(resized)[None])
    if len(tensors) == 1:
        return tensors[0], origs[0]
    return tensors, origs


def load_test(
    filenames: str | Sequence[str],
    short: int = 512,
    max_size: int = 1024,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[Any, Any]:
    """GluonCV's ``load_test``: read image file(s), then :func:`transform_test`.

    Returns ``(x float32 Tensor[1, 3, H', W'], orig uint8 ndarray [H', W', 3])`` for one file name, or two lists
    for several: the network input and the resized image for drawing (``ssdkit.load_test`` is this function).
    """
    from ...image_io import read_image

    names = [filenames] if isinstance(filenames, str) else list(filenames)
    images = [read_image(name).permute(1, 2, 0) for name in names]
    return transform_test(images, short, max_size, mean, std)
