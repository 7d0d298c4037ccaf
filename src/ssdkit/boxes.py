"""Pure box math: format conversion, IoU, clipping and validation.

Shape legend: B batch, A anchors, G ground truths, N/M any box count.
Formats are in the names: ``*_xyxy`` corners (x1, y1, x2, y2), ``*_cxcywh`` centre form.
Widths follow GluonCV's network convention: ``w = x2 - x1`` (no +1). The VOC metric's +1
convention lives in :mod:`ssdkit.metrics.voc` and nowhere else.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

__all__ = [
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_iou",
    "batched_box_iou",
    "gt_anchor_iou",
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


def clip_boxes_xyxy(boxes_xyxy: Tensor, width: float, height: float) -> Tensor:
    """Clip ``Tensor[..., 4]`` corners to ``[0, width] x [0, height]``."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), dim=-1
    )


def validate_gt(gt_boxes_xyxy: Tensor, gt_ids: Tensor, num_classes: int | None = None,
                name: str = "gt_boxes") -> tuple[Tensor, Tensor]:
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
