"""Helpers shared by the transforms: tv_tensors sample access, XYXY box round trips and torch's RNG draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F


def is_image(x: Any) -> bool:
    """True for a ``tv_tensors.Image`` or a plain tensor (torchvision's rule for the image of a sample)."""
    return isinstance(x, tv_tensors.Image) or type(x) is torch.Tensor


def rewrap(out: Tensor, like: Any) -> Any:
    """``out`` as a ``tv_tensors.Image`` when ``like`` is one, else the plain tensor."""
    return tv_tensors.wrap(out, like=like) if isinstance(like, tv_tensors.Image) else out


def uniform(low: float, high: float, generator: torch.Generator | None = None) -> float:
    """One draw of ``U(low, high)`` from torch's RNG (float64)."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def randint(low: int, high_exclusive: int, generator: torch.Generator | None = None) -> int:
    """One integer in ``[low, high_exclusive)`` from torch's RNG."""
    return int(torch.randint(low, high_exclusive, (), generator=generator))


def as_xyxy(boxes: tv_tensors.BoundingBoxes) -> Tensor:
    """The boxes as a plain XYXY ``Tensor[N, 4]``, whatever their format."""
    plain = boxes.as_subclass(Tensor)
    if boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
        plain = F.convert_bounding_box_format(
            plain, old_format=boxes.format, new_format=tv_tensors.BoundingBoxFormat.XYXY
        )
    return plain


def wrap_xyxy(xyxy: Tensor, like: tv_tensors.BoundingBoxes, canvas_size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    """XYXY ``Tensor[N, 4]`` back to ``BoundingBoxes`` in the format and dtype of ``like`` on a new canvas."""
    if like.format != tv_tensors.BoundingBoxFormat.XYXY:
        xyxy = F.convert_bounding_box_format(xyxy, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=like.format)
    return tv_tensors.wrap(xyxy.to(like.dtype), like=like, canvas_size=(int(canvas_size[0]), int(canvas_size[1])))


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An int (square) or ``(height, width)`` as ``(height, width)``."""
    if isinstance(size, int):
        return size, size
    pair = tuple(int(s) for s in size)
    if len(pair) != 2:
        raise ValueError(f"size must be an int or (height, width), got {pair}")
    return pair[0], pair[1]
