"""Box and class encoders/decoders with GluonCV semantics (``gluoncv.nn.coder``).

Shape legend: B batch, A anchors, G ground truths, C foreground classes (``num_classes``; heads have C+1
outputs, index 0 is background).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from .constants import BOX_STDS

__all__ = [
    "NormalizedBoxCenterEncoder",
    "NormalizedBoxCenterDecoder",
    "MultiClassEncoder",
    "MultiClassDecoder",
    "MultiPerClassDecoder",
    "gather_matched",
]


def gather_matched(refs: Tensor, matches: Tensor) -> Tensor:
    """Pick per-anchor rows of ``refs`` (``Tensor[B, G, ...]``) by ``matches`` (``Tensor[B, A]``, -1 unmatched).

    Unmatched anchors pick row 0 (MXNet's ``pick`` in clip mode); callers mask them out.
    Returns ``Tensor[B, A, ...]``.
    """
    idx = matches.long().clamp(min=0)
    if refs.dim() == 2:
        return torch.gather(refs, 1, idx)
    expand = idx.reshape(*idx.shape, *([1] * (refs.dim() - 2))).expand(*idx.shape, *refs.shape[2:])
    return torch.gather(refs, 1, expand)


class NormalizedBoxCenterEncoder(nn.Module):
    """Encode matched ground truths as normalised centre offsets (SSD/Faster R-CNN "box coding").

    ``t_x = ((g_cx - a_cx) / a_w - m0) / s0``, ``t_w = (log(g_w / a_w) - m2) / s2``; targets and masks are 0
    where ``samples <= 0.5`` (not a positive).
    """

    def __init__(self, stds: Sequence[float] = BOX_STDS, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0)):
        super().__init__()
        if len(stds) != 4 or len(means) != 4:
            raise ValueError("stds and means need 4 values each")
        self.stds = tuple(float(s) for s in stds)
        self.means = tuple(float(m) for m in means)

    def encode_matched(self, gt_xyxy: Tensor, anchors_cxcywh: Tensor) -> Tensor:
        """Offsets of already-matched boxes: ``Tensor[..., 4]`` corners against ``Tensor[..., 4]`` centre anchors."""
        g = xyxy_to_cxcywh(gt_xyxy)
        a = anchors_cxcywh
        t0 = ((g[..., 0] - a[..., 0]) / a[..., 2] - self.means[0]) / self.stds[0]
        t1 = ((g[..., 1] - a[..., 1]) / a[..., 3] - self.means[1]) / self.stds[1]
        t2 = (torch.log(g[..., 2] / a[..., 2]) - self.means[2]) / self.stds[2]
        t3 = (torch.log(g[..., 3] / a[..., 3]) - self.means[3]) / self.stds[3]
        return torch.stack((t0, t1, t2, t3), dim=-1)

    def forward(
        self, samples: Tensor, matches: Tensor, anchors_xyxy: Tensor, refs_xyxy: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(samples Tensor[B,A], matches Tensor[B,A], anchors_xyxy Tensor[1|B,A,4], refs_xyxy Tensor[B,G,4])``
        -> ``(targets Tensor[B,A,4], masks Tensor[B,A,4])``. Only the positives are encoded (a few percent of the
        anchors); the rest stay 0."""
        b, a = matches.shape
        pos = samples > 0.5
        bi, ai = pos.nonzero(as_tuple=True)
        matched = refs_xyxy[bi, matches[bi, ai].long().clamp(min=0)]  # [P, 4]
        anchors = anchors_xyxy[bi if anchors_xyxy.shape[0] > 1 else torch.zeros_like(bi), ai]  # [P, 4]
        codes = self.encode_matched(matched, xyxy_to_cxcywh(anchors))
        targets = codes.new_zeros(b, a, 4)
        targets[bi, ai] = codes
        masks = pos[..., None].expand(b, a, 4).to(codes.dtype)
        return targets, masks


class NormalizedBoxCenterDecoder(nn.Module):
    """Inverse of :class:`NormalizedBoxCenterEncoder` on centre-form anchors; no clamp on ``dw``/``dh``
    unless ``clip`` is given (GluonCV's SSD uses none)."""

    def __init__(
        self, stds: Sequence[float] = BOX_STDS, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0), clip: float | None = None
    ):
        super().__init__()
        self.stds = tuple(float(s) for s in stds)
        self.means = tuple(float(m) for m in means)
        self.clip = clip

    def forward(self, box_preds: Tensor, anchors_cxcywh: Tensor) -> Tensor:
        """``(box_preds Tensor[B,A,4], anchors_cxcywh Tensor[1|B,A,4]) -> boxes_xyxy Tensor[B,A,4]``."""
        p = box_preds
        a = anchors_cxcywh
        ox = (p[..., 0] * self.stds[0] + self.means[0]) * a[..., 2] + a[..., 0]
        oy = (p[..., 1] * self.stds[1] + self.means[1]) * a[..., 3] + a[..., 1]
        dw = p[..., 2] * self.stds[2] + self.means[2]
        dh = p[..., 3] * self.stds[3] + self.means[3]
        if self.clip is not None:
            dw = dw.clamp(max=self.clip)
            dh = dh.clamp(max=self.clip)
        w = torch.exp(dw) * a[..., 2]
        h = torch.exp(dh) * a[..., 3]
        return cxcywh_to_xyxy(torch.stack((ox, oy, w, h), dim=-1))


class MultiClassEncoder(nn.Module):
    """Class targets from sampler output: positives ``gt_id + 1``, negatives 0, ignored ``ignore_label``."""

    def __init__(self, ignore_label: int = -1):
        super().__init__()
        self.ignore_label = ignore_label

    def forward(self, samples: Tensor, matches: Tensor, refs: Tensor) -> Tensor:
        """``(samples Tensor[B,A], matches Tensor[B,A], refs (gt ids) Tensor[B,G])`` -> ``cls_targets Tensor[B,A]``
        (int64)."""
        if refs.dim() == 3:
            refs = refs[..., 0]
        ids = gather_matched(refs, matches).long() + 1
        out = torch.where(samples > 0.5, ids, torch.full_like(ids, self.ignore_label))
        return torch.where(samples < -0.5, torch.zeros_like(out), out)


class MultiClassDecoder(nn.Module):
    """Argmax decoding: the best foreground class per anchor (method 1 of the seed tutorial's tip 3).

    ``(probs Tensor[B,A,C+1]) -> (ids Tensor[B,A], scores Tensor[B,A])``; ids are 0-based foreground ids,
    -1 (score 0) where the best score is not above ``thresh``.
    """

    def __init__(self, axis: int = -1, thresh: float = 0.01):
        super().__init__()
        if axis not in (-1, 2):
            raise ValueError("only the last axis is supported as the class axis")
        self.thresh = thresh

    def forward(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        scores, ids = probs[..., 1:].max(dim=-1)
        keep = scores > self.thresh
        return torch.where(keep, ids, torch.full_like(ids, -1)), torch.where(keep, scores, torch.zeros_like(scores))


class MultiPerClassDecoder(nn.Module):
    """Per-class decoding: every foreground class of every anchor is a candidate (method 2, the default).

    ``num_class`` counts background, as in GluonCV. ``(probs Tensor[B,A,C+1]) -> (ids Tensor[B,A,C], scores
    Tensor[B,A,C])``; below-threshold entries get id -1 and score 0.
    """

    def __init__(self, num_class: int, axis: int = -1, thresh: float = 0.01):
        super().__init__()
        if axis not in (-1, 2):
            raise ValueError("only the last axis is supported as the class axis")
        self.num_fg = num_class - 1
        self.thresh = thresh

    def forward(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        scores = probs[..., 1:]
        if scores.shape[-1] != self.num_fg:
            raise ValueError(f"expected {self.num_fg + 1} class scores, got {probs.shape[-1]}")
        keep = scores > self.thresh
        ids = torch.arange(self.num_fg, device=probs.device).expand_as(scores)
        return torch.where(keep, ids, torch.full_like(ids, -1)), torch.where(keep, scores, torch.zeros_like(scores))
