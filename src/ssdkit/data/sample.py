"""The common target dict of :mod:`ssdkit.data` (``boxes``, ``labels``, ``difficult`` + extras)."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors

__all__ = ["make_target"]


def make_target(boxes_xyxy, labels, difficult, height: int, width: int, **extra) -> dict:
    """Build a target in the common format (see :mod:`ssdkit.data`).

    ``boxes_xyxy`` array-like ``[G, 4]`` pixels, ``labels`` ``[G]``, ``difficult`` ``[G]``;
    ``extra`` (``image_id``, ``path`` ...) is copied as is.
    """
    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4))
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(int(height), int(width))),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
        "difficult": torch.as_tensor(np.asarray(difficult, dtype=np.uint8).reshape(-1)),
    }
    target.update(extra)
    return target
