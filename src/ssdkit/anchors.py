"""SSD anchor generation, in GluonCV's values and order.

Shape legend: A anchors, L feature layers, K anchors per position.
Anchors are centre form ``(cx, cy, w, h)`` in input pixels, not clipped, ordered
``(layer, y, x, anchor)``. Per position the order is: a square of side ``smin``, a square of side
``sqrt(smin * smax)``, then for each ratio ``r`` in ``ratios[1:]`` a box ``w = smin*sqrt(r), h = smin/sqrt(r)``.
``ratios[0]`` is taken to be 1, as GluonCV does.

:func:`ssd_anchor_grid` describes the same anchors as per-layer grids (:class:`AnchorGrid`), which lets target
generation compute the IoU separably (:func:`ssdkit.boxes.grid_gt_anchor_iou`).

GluonCV precomputes each layer on a 128x128 (then halving, at least 16) grid and crops it to the feature
size; generating directly on the feature grid gives the same values for every size that crop allows
and keeps working for larger inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AnchorSpec", "AnchorGrid", "layer_anchors", "ssd_anchors", "ssd_anchor_grid", "num_anchors_per_position"]


@dataclass(frozen=True)
class AnchorSpec:
    """Anchor preset of an SSD model.

    ``sizes`` has one entry more than there are layers; layer i uses ``(sizes[i], sizes[i+1])``.
    ``ratios`` is one list per layer (a flat list is repeated for every layer). ``steps`` in pixels.
    """

    sizes: tuple[float, ...]
    ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...]
    offsets: tuple[float, float] = (0.5, 0.5)

    def __post_init__(self) -> None:
        ratios = self.ratios
        if ratios and not isinstance(ratios[0], (list, tuple)):
            ratios = tuple(tuple(ratios) for _ in self.steps)  # type: ignore[arg-type]
        object.__setattr__(self, "ratios", tuple(tuple(float(r) for r in rr) for rr in ratios))
        object.__setattr__(self, "sizes", tuple(float(s) for s in self.sizes))
        object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        if len(self.sizes) != len(self.steps) + 1:
            raise ValueError(
                f"sizes needs {len(self.steps) + 1} entries for {len(self.steps)} layers, got {len(self.sizes)}"
            )
        if len(self.ratios) != len(self.steps):
            raise ValueError(f"ratios needs one list per layer ({len(self.steps)}), got {len(self.ratios)}")

    @property
    def num_layers(self) -> int:
        return len(self.steps)

    def anchors_per_position(self) -> list[int]:
        return [num_anchors_per_position(r) for r in self.ratios]


@dataclass(frozen=True)
class AnchorGrid:
    """Layout of a model's anchors as per-layer grids: ``layers[i] = (H, W, K)``.

    Layer i holds ``H * W * K`` anchors in ``(y, x, k)`` order, after the anchors of the layers before it; within a
    layer an anchor's ``x1, x2`` depend only on ``(x, k)`` and ``y1, y2`` only on ``(y, k)``.
    """

    layers: tuple[tuple[int, int, int], ...]

    @property
    def num_anchors(self) -> int:
        return sum(h * w * k for h, w, k in self.layers)


def num_anchors_per_position(ratios: Sequence[float]) -> int:
    """K = 2 + len(ratios) - 1: 4 for [1, 2, .5], 6 for [1, 2, .5, 3, 1/3]."""
    return len(ratios) + 1


def _shape_templates(smin: float, smax: float, ratios: Sequence[float]) -> list[tuple[float, float]]:
    big = math.sqrt(smin * smax)
    wh = [(smin, smin), (big, big)]
    for r in ratios[1:]:
        sr = math.sqrt(r)
        wh.append((smin * sr, smin / sr))
    return wh


def layer_anchors(
    feat_h: int,
    feat_w: int,
    smin: float,
    smax: float,
    ratios: Sequence[float],
    step: float,
    offsets: tuple[float, float] = (0.5, 0.5),
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchors of one layer: ``Tensor[feat_h * feat_w * K, 4]`` centre form, order (y, x, anchor)."""
    wh = torch.tensor(_shape_templates(smin, smax, ratios), dtype=torch.float64)  # [K, 2]
    cy = (torch.arange(feat_h, dtype=torch.float64) + offsets[0]) * step
    cx = (torch.arange(feat_w, dtype=torch.float64) + offsets[1]) * step
    gy, gx = torch.meshgrid(cy, cx, indexing="ij")  # [H, W]
    k = wh.shape[0]
    centers = torch.stack((gx, gy), dim=-1)[:, :, None, :].expand(feat_h, feat_w, k, 2)
    sizes = wh[None, None].expand(feat_h, feat_w, k, 2)
    anchors = torch.cat((centers, sizes), dim=-1).reshape(-1, 4)
    return anchors.to(device=device, dtype=dtype)


def ssd_anchors(
    spec: AnchorSpec, feature_shapes: Sequence[tuple[int, int]], device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """All anchors of a model: ``Tensor[1, A, 4]`` centre form in input pixels, GluonCV order."""
    if len(feature_shapes) != spec.num_layers:
        raise ValueError(
            f"anchor preset has {spec.num_layers} layers but the network gave {len(feature_shapes)} feature maps"
        )
    parts = [
        layer_anchors(
            h,
            w,
            spec.sizes[i],
            spec.sizes[i + 1],
            spec.ratios[i],
            spec.steps[i],
            spec.offsets,
            device=device,
            dtype=dtype,
        )
        for i, (h, w) in enumerate(feature_shapes)
    ]
    return torch.cat(parts, dim=0)[None]


def ssd_anchor_grid(spec: AnchorSpec, feature_shapes: Sequence[tuple[int, int]]) -> AnchorGrid:
    """The grid layout of :func:`ssd_anchors` ``(spec, feature_shapes)``."""
    if len(feature_shapes) != spec.num_layers:
        raise ValueError(
            f"anchor preset has {spec.num_layers} layers but the network gave {len(feature_shapes)} feature maps"
        )
    per_position = spec.anchors_per_position()
    return AnchorGrid(tuple((int(h), int(w), k) for (h, w), k in zip(feature_shapes, per_position)))
