"""Pure box math: format conversion, the IoU family, clipping and validation.

Shape legend: B batch, A anchors, G ground truths, N/M any box count, K box pairs.
Formats are in the names: ``*_xyxy`` corners (x1, y1, x2, y2), ``*_cxcywh`` centre form.
Widths follow GluonCV's network convention: ``w = x2 - x1`` (no +1). The VOC metric's +1
convention lives in :mod:`ssdkit.metrics.voc` and nowhere else.

Every IoU in ssdkit is one of these:

- :func:`box_iou` ``[N, 4] x [M, 4]`` (``torchvision.ops.box_iou``);
- :func:`batched_box_iou` ``[B, N, 4] x [B, M, 4]``, 0 where the union is empty (the SSD crop's IoU);
- :func:`gt_anchor_iou` ground truths ``[B, G, 4]`` x shared anchors ``[A, 4]`` (target generation, dense);
- :func:`grid_gt_anchor_iou` the same numbers computed separably on the anchors' per-layer grid;
- :func:`paired_box_iou_numpy` row i with row i, in NumPy with GluonCV's arithmetic (the VOC metric).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

if TYPE_CHECKING:
    from .anchors import AnchorGrid

__all__ = [
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_iou",
    "batched_box_iou",
    "gt_anchor_iou",
    "grid_gt_anchor_iou",
    "paired_box_iou_numpy",
    "clip_boxes_xyxy",
    "validate_gt",
]


def xyxy_to_cxcywh(boxes_xyxy: Tensor) -> Tensor:
    """``Tensor[..., 4]`` corners -> centre form, computed as GluonCV does (cx = x1 + w / 2)."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    w = x2 - x1
    h = y2 - y1
    return torch.stack((x1 + w / 2, y1 + h / 2, w, h), dim=-1)


def cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """``Tensor[..., 4]`` centre form -> corners."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    hw = w / 2
    hh = h / 2
    return torch.stack((cx - hw, cy - hh, cx + hw, cy + hh), dim=-1)


def box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """IoU of ``Tensor[N, 4]`` and ``Tensor[M, 4]`` -> ``Tensor[N, M]`` (torchvision.ops underneath)."""
    return _tv_box_iou(boxes1_xyxy, boxes2_xyxy)


def batched_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """IoU of ``Tensor[B, N, 4]`` and ``Tensor[B, M, 4]`` -> ``Tensor[B, N, M]``, per batch item.

    Zero-area boxes have IoU 0 with everything (no division by zero), as MXNet's ``box_iou``.
    """
    ax1, ay1, ax2, ay2 = (c.contiguous()[..., :, None] for c in boxes1_xyxy.unbind(-1))  # [B, N, 1]
    bx1, by1, bx2, by2 = (c.contiguous()[..., None, :] for c in boxes2_xyxy.unbind(-1))  # [B, 1, M]
    inter = torch.minimum(ax2, bx2)
    inter.sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    ih = torch.minimum(ay2, by2)
    ih.sub_(torch.maximum(ay1, by1)).clamp_(min=0)
    inter.mul_(ih)
    area1 = (ax2 - ax1).clamp_(min=0) * (ay2 - ay1).clamp_(min=0)
    area2 = (bx2 - bx1).clamp_(min=0) * (by2 - by1).clamp_(min=0)
    union = torch.add(area1, area2, out=ih).sub_(inter)
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def gt_anchor_iou(gt_boxes_xyxy: Tensor, anchors_xyxy: Tensor) -> Tensor:
    """IoU of per-image boxes ``Tensor[B, G, 4]`` with shared anchors ``Tensor[A, 4]`` -> ``Tensor[B, G, A]``.

    The same numbers as ``torchvision.ops.box_iou`` (tested), computed for the whole batch in place in the
    layout the matcher reduces over (anchors innermost): this is the hot loop of target generation.
    Zero-area boxes have IoU 0 with everything; anchors must have a positive area (SSD anchors always do).
    """
    gx1, gy1, gx2, gy2 = (c.contiguous()[..., None] for c in gt_boxes_xyxy.unbind(-1))  # [B, G, 1] each
    ax1, ay1, ax2, ay2 = (c.contiguous() for c in anchors_xyxy.unbind(-1))  # [A] each
    inter = torch.minimum(gx2, ax2)
    inter.sub_(torch.maximum(gx1, ax1)).clamp_(min=0)
    ih = torch.minimum(gy2, ay2)
    ih.sub_(torch.maximum(gy1, ay1)).clamp_(min=0)
    inter.mul_(ih)
    area_g = (gx2 - gx1).clamp_(min=0) * (gy2 - gy1).clamp_(min=0)  # [B, G, 1]
    area_a = (ax2 - ax1).clamp_(min=0) * (ay2 - ay1).clamp_(min=0)  # [A]
    union = torch.add(area_g, area_a, out=ih).sub_(inter)  # >= the anchor's area > 0: no zero division
    return inter.div_(union)


def _overlap(g1: Tensor, g2: Tensor, a1: Tensor, a2: Tensor) -> Tensor:
    """Overlap length of gt intervals ``[B, G, 1, 1]`` with anchor intervals ``[N, K]`` -> ``Tensor[B, G, N, K]``."""
    out = torch.minimum(g2, a2)
    return out.sub_(torch.maximum(g1, a1)).clamp_(min=0)


def grid_gt_anchor_iou(gt_boxes_xyxy: Tensor, anchors_xyxy: Tensor, grid: AnchorGrid) -> Tensor:
    """:func:`gt_anchor_iou` computed separably on anchors laid out as ``grid`` -> ``Tensor[B, G, A]``.

    In every layer of an SSD grid (:class:`ssdkit.anchors.AnchorGrid`, ``H * W * K`` anchors in ``(y, x, k)``
    order) an anchor's ``x1, x2`` depend only on its column and shape and ``y1, y2`` only on its row and shape, so
    the overlap widths ``Tensor[B, G, W, K]`` and heights ``Tensor[B, G, H, K]`` are small and the intersection is
    their outer product: the big ``Tensor[B, G, A]`` is touched four times instead of the dense version's thirteen.
    Every element is the same float expression in the same order as :func:`gt_anchor_iou`, so the two agree to the
    last bit (tested), which keeps the matcher's tie-breaking identical. ``anchors_xyxy Tensor[A, 4]`` must be the
    anchors that ``grid`` describes (as :func:`ssdkit.anchors.ssd_anchors` and :func:`ssdkit.anchors.ssd_anchor_grid`
    produce them from one preset).
    """
    a = anchors_xyxy.shape[0]
    if grid.num_anchors != a:
        raise ValueError(f"the anchor grid describes {grid.num_anchors} anchors but {a} were given")
    b, g = gt_boxes_xyxy.shape[:2]
    gx1, gy1, gx2, gy2 = (c.contiguous()[..., None, None] for c in gt_boxes_xyxy.unbind(-1))  # [B, G, 1, 1]
    inter = torch.empty(b, g, a, dtype=anchors_xyxy.dtype, device=gt_boxes_xyxy.device)
    start = 0
    for h, w, k in grid.layers:
        n = h * w * k
        block = anchors_xyxy[start : start + n].reshape(h, w, k, 4)
        iw = _overlap(gx1, gx2, block[0, :, :, 0].contiguous(), block[0, :, :, 2].contiguous())  # [B, G, W, K]
        ih = _overlap(gy1, gy2, block[:, 0, :, 1].contiguous(), block[:, 0, :, 3].contiguous())  # [B, G, H, K]
        torch.mul(iw[:, :, None], ih[:, :, :, None], out=inter[:, :, start : start + n].view(b, g, h, w, k))
        start += n
    ax1, ay1, ax2, ay2 = anchors_xyxy.unbind(-1)
    area_a = (ax2 - ax1).clamp_(min=0) * (ay2 - ay1).clamp_(min=0)  # [A]
    area_g = (gx2 - gx1).clamp_(min=0) * (gy2 - gy1).clamp_(min=0)  # [B, G, 1, 1]
    union = torch.add(area_g[..., 0], area_a).sub_(inter)  # >= the anchor's area > 0: no zero division
    return inter.div_(union)


def paired_box_iou_numpy(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """IoU of row i of ``boxes1_xyxy [K, 4]`` with row i of ``boxes2_xyxy [K, 4]`` -> ``[K]``, in NumPy.

    GluonCV's ``bbox_iou`` arithmetic (same operations in the same order, the inputs' dtype kept): callers that
    want the VOC +1 convention add 1 to ``x2, y2`` first, as GluonCV's VOC metric does. An empty union gives NaN or
    inf, as NumPy divides.
    """
    x1a, y1a, x2a, y2a = (boxes1_xyxy[:, i] for i in range(4))
    x1b, y1b, x2b, y2b = (boxes2_xyxy[:, i] for i in range(4))
    left, top = np.maximum(x1a, x1b), np.maximum(y1a, y1b)
    right, bottom = np.minimum(x2a, x2b), np.minimum(y2a, y2b)
    area_i = (right - left) * (bottom - top) * ((left < right) & (top < bottom))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return area_i / ((x2a - x1a) * (y2a - y1a) + (x2b - x1b) * (y2b - y1b) - area_i)


def clip_boxes_xyxy(boxes_xyxy: Tensor, width: float, height: float) -> Tensor:
    """Clip ``Tensor[..., 4]`` corners to ``[0, width] x [0, height]``."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack((x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), dim=-1)


def validate_gt(
    gt_boxes_xyxy: Tensor, gt_ids: Tensor, num_classes: int | None = None, name: str = "gt_boxes"
) -> tuple[Tensor, Tensor]:
    """Check a padded ground-truth batch and return ``(gt_boxes Tensor[B, G, 4], gt_ids Tensor[B, G])``.

    Rows whose id is negative are padding and may hold anything. Every other row must hold finite
    coordinates with ``x2 >= x1`` and ``y2 >= y1`` and, when ``num_classes`` is given, an id below it.
    ``gt_ids`` may be ``Tensor[B, G]`` or ``Tensor[B, G, 1]``. Raises ``ValueError`` naming the problem.
    """
    if gt_boxes_xyxy.dim() != 3 or gt_boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [B, G, 4], got {tuple(gt_boxes_xyxy.shape)}")
    if gt_ids.dim() == 3 and gt_ids.shape[-1] == 1:
        gt_ids = gt_ids[..., 0]
    if gt_ids.dim() != 2:
        raise ValueError(f"gt_ids must have shape [B, G] or [B, G, 1], got {tuple(gt_ids.shape)}")
    if gt_ids.shape != gt_boxes_xyxy.shape[:2]:
        raise ValueError(
            f"gt_ids {tuple(gt_ids.shape)} and {name} {tuple(gt_boxes_xyxy.shape)} disagree on batch size "
            "or number of boxes"
        )
    valid = gt_ids >= 0
    if gt_ids.is_floating_point():
        if not bool(torch.isfinite(gt_ids).all()):
            raise ValueError("gt_ids contains NaN or inf")
        if bool((valid & (gt_ids != gt_ids.round())).any()):
            raise ValueError("gt_ids contains non-integer class ids")
    if num_classes is not None and bool((gt_ids >= num_classes).any()):
        bad = int(gt_ids.max())
        raise ValueError(f"gt_ids has class id {bad}, out of range for {num_classes} classes (0..{num_classes - 1})")
    rows = gt_boxes_xyxy[valid]
    if rows.numel():
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(f"{name} contains NaN or inf in a non-padding row")
        if bool(((rows[:, 2] < rows[:, 0]) | (rows[:, 3] < rows[:, 1])).any()):
            raise ValueError(f"{name} has a box with xmax < xmin or ymax < ymin")
    return gt_boxes_xyxy, gt_ids
