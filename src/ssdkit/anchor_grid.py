"""Anchors as per-layer grids, and the ground-truth / anchor IoU computed separably on them.

Shape legend: B batch, G ground truths per image, A anchors; per layer H rows, W columns and K anchor shapes per
position, so a layer holds ``H * W * K`` anchors in ``(y, x, k)`` order.

SSD anchors are a grid: in every layer an anchor's corners ``x1, x2`` depend only on its column and shape, and
``y1, y2`` only on its row and shape. The overlap width of a box with an anchor then depends on ``(x, k)`` and the
overlap height on ``(y, k)``, and the intersection is their outer product. :func:`grid_gt_anchor_iou` computes the
widths ``Tensor[B, G, W, K]`` and heights ``Tensor[B, G, H, K]`` (tiny) and touches the big ``Tensor[B, G, A]`` only
four times (intersection, two for the union, the division), where the dense :func:`ssdkit.boxes.gt_anchor_iou`
needs thirteen passes. Every element is the same float expression in the same order as the dense version, so the
two agree to the last bit (tested), which keeps the matcher's tie-breaking identical.

:func:`factor_anchor_grid` finds the grid in any ``Tensor[A, 4]`` of anchors and checks it exactly; anchors that do
not factor (or a layer it cannot read) give ``None`` and callers fall back to the dense IoU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AnchorGrid", "factor_anchor_grid", "grid_gt_anchor_iou", "cached_anchor_grid"]


@dataclass(frozen=True)
class AnchorGrid:
    """Corners of a grid of anchors, one entry per layer.

    ``layers[i] = (start, H, W, K)``; ``x1[i], x2[i]: Tensor[W, K]``; ``y1[i], y2[i]: Tensor[H, K]``;
    ``area: Tensor[A]`` the anchors' areas (``(x2 - x1) * (y2 - y1)``, clamped at 0, as the dense IoU computes them).
    """

    layers: tuple[tuple[int, int, int, int], ...]
    x1: tuple[Tensor, ...]
    x2: tuple[Tensor, ...]
    y1: tuple[Tensor, ...]
    y2: tuple[Tensor, ...]
    area: Tensor

    @property
    def num_anchors(self) -> int:
        return int(self.area.shape[0])


def _leading_true(mask: Tensor) -> int:
    """Length of the run of True at the start of a 1-D bool tensor."""
    if mask.numel() == 0:
        return 0
    first_false = (~mask).nonzero()
    return int(first_false[0, 0]) if first_false.numel() else int(mask.numel())


def _read_layer(anchors_cxcywh: Tensor, start: int) -> tuple[int, int, int]:
    """``(H, W, K)`` of the layer that begins at ``start``, read from where the anchor centres change."""
    rest = anchors_cxcywh[start:]
    cx, cy = rest[:, 0], rest[:, 1]
    k = _leading_true((cx == cx[0]) & (cy == cy[0]))
    pos = rest[::k, :2]  # one centre per position, if the layer has k shapes per position
    w = _leading_true(pos[:, 1] == pos[0, 1])
    rows = pos[::w]
    increasing = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    increasing[1:] = rows[1:, 1] > rows[:-1, 1]
    h = _leading_true((rows[:, 0] == rows[0, 0]) & increasing)
    return h, w, k


def factor_anchor_grid(anchors_cxcywh: Tensor, anchors_xyxy: Tensor) -> AnchorGrid | None:
    """Factor anchors ``Tensor[A, 4]`` (the same anchors in both forms) into per-layer grids, or ``None``.

    The layer sizes are read from the centres; the factorisation is then checked exactly on the corners
    (``x1, x2`` equal down every column, ``y1, y2`` equal along every row), so a wrong reading is never used.
    """
    a = int(anchors_xyxy.shape[0])
    if a == 0 or anchors_cxcywh.shape != anchors_xyxy.shape:
        return None
    layers, xs1, xs2, ys1, ys2 = [], [], [], [], []
    start = 0
    while start < a:
        h, w, k = _read_layer(anchors_cxcywh, start)
        n = h * w * k
        if n == 0 or start + n > a:
            return None
        block = anchors_xyxy[start:start + n].reshape(h, w, k, 4)
        x1, y1, x2, y2 = block.unbind(-1)  # [H, W, K] each
        if not (torch.equal(x1, x1[:1].expand_as(x1)) and torch.equal(x2, x2[:1].expand_as(x2))
                and torch.equal(y1, y1[:, :1].expand_as(y1)) and torch.equal(y2, y2[:, :1].expand_as(y2))):
            return None
        layers.append((start, h, w, k))
        xs1.append(x1[0].contiguous())
        xs2.append(x2[0].contiguous())
        ys1.append(y1[:, 0].contiguous())
        ys2.append(y2[:, 0].contiguous())
        start += n
    ax1, ay1, ax2, ay2 = anchors_xyxy.unbind(-1)
    area = (ax2 - ax1).clamp_(min=0) * (ay2 - ay1).clamp_(min=0)
    return AnchorGrid(tuple(layers), tuple(xs1), tuple(xs2), tuple(ys1), tuple(ys2), area.contiguous())


_CACHE: list[tuple[Tensor, Tensor, AnchorGrid | None]] = []
_CACHE_SIZE = 4


def cached_anchor_grid(anchors_cxcywh: Tensor, anchors_xyxy: Tensor) -> AnchorGrid | None:
    """:func:`factor_anchor_grid`, remembered for the last few anchor sets (looked up by exact equality)."""
    for cxcywh, xyxy, grid in _CACHE:
        if (cxcywh.shape == anchors_cxcywh.shape and cxcywh.device == anchors_cxcywh.device
                and cxcywh.dtype == anchors_cxcywh.dtype and xyxy.dtype == anchors_xyxy.dtype
                and torch.equal(cxcywh, anchors_cxcywh) and torch.equal(xyxy, anchors_xyxy)):
            return grid
    grid = factor_anchor_grid(anchors_cxcywh, anchors_xyxy)
    _CACHE.insert(0, (anchors_cxcywh.clone(), anchors_xyxy.clone(), grid))
    del _CACHE[_CACHE_SIZE:]
    return grid


def _overlap(g1: Tensor, g2: Tensor, a1: Tensor, a2: Tensor) -> Tensor:
    """Overlap length of gt intervals ``[B, G, 1, 1]`` with anchor intervals ``[N, K]`` -> ``Tensor[B, G, N, K]``."""
    out = torch.minimum(g2, a2)
    return out.sub_(torch.maximum(g1, a1)).clamp_(min=0)


def grid_gt_anchor_iou(gt_boxes_xyxy: Tensor, grid: AnchorGrid) -> Tensor:
    """IoU of per-image boxes ``Tensor[B, G, 4]`` with grid anchors -> ``Tensor[B, G, A]``, bit-equal to the dense
    :func:`ssdkit.boxes.gt_anchor_iou` on the same anchors."""
    b, g = gt_boxes_xyxy.shape[:2]
    gx1, gy1, gx2, gy2 = (c.contiguous()[..., None, None] for c in gt_boxes_xyxy.unbind(-1))  # [B, G, 1, 1]
    inter = torch.empty(b, g, grid.num_anchors, dtype=grid.area.dtype, device=gt_boxes_xyxy.device)
    for (start, h, w, k), x1, x2, y1, y2 in zip(grid.layers, grid.x1, grid.x2, grid.y1, grid.y2):
        iw = _overlap(gx1, gx2, x1, x2)  # [B, G, W, K]
        ih = _overlap(gy1, gy2, y1, y2)  # [B, G, H, K]
        torch.mul(iw[:, :, None], ih[:, :, :, None], out=inter[:, :, start:start + h * w * k].view(b, g, h, w, k))
    area_g = (gx2 - gx1).clamp_(min=0) * (gy2 - gy1).clamp_(min=0)  # [B, G, 1, 1]
    union = torch.add(area_g[..., 0], grid.area).sub_(inter)  # >= the anchor's area > 0: no zero division
    return inter.div_(union)
