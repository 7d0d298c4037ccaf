"""Detection post-processing: decode boxes, decode classes (tip 3), top-k, per-class NMS, pad.

Shape legend: B batch, A anchors, C foreground classes, N candidates per image (C*A per-class, A argmax),
K kept after the global top-k (``nms_topk``), P output rows (``post_nms``).

GluonCV's inference path: softmax; per-class (default) or argmax class decoding with score > 0.01; candidates laid
out class-major; the top 400 over all classes (stable, by score); greedy NMS within each class at IoU > 0.45;
survivors compacted in score order; first 100 rows kept; missing rows padded with -1.

Class decoding and the top-k are batched over images and classes (one top-k over ``B x C*A`` scores); only the
K winners are materialised, so per-class decoding costs little more than argmax. NMS is torchvision's, one call
per image with the classes kept apart by coordinate shifts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor, nn

from .coder import NormalizedBoxCenterDecoder
from .constants import BOX_STDS

__all__ = ["PostProcessor", "batched_class_nms", "DECODERS"]

DECODERS = ("per_class", "argmax")


def batched_class_nms(
    boxes_xyxy: Tensor, scores: Tensor, ids: Tensor, valid: Tensor, iou_thresh: float, force_suppress: bool = False
) -> Tensor:
    """Greedy NMS on score-sorted candidates of every image.

    ``boxes_xyxy Tensor[B,K,4]``, ``scores``/``ids``/``valid`` ``Tensor[B,K]`` sorted by descending score (stable).
    A box is suppressed by an earlier kept box of the same id (any id when ``force_suppress``) with IoU >
    ``iou_thresh``. Returns keep ``Tensor[B,K]`` bool.

    One ``torchvision.ops.nms`` call per image; classes are kept apart by shifting each class's boxes by a
    multiple of the largest coordinate, in float64 so that the shift costs no precision, and the given order is
    passed as the score so that equal scores keep their order.
    """
    b, k, _ = boxes_xyxy.shape
    keep = torch.zeros_like(valid)
    if k == 0:
        return keep
    boxes64 = boxes_xyxy.double()
    span = (boxes64.abs().amax() * 2 + 1) if boxes64.numel() else boxes64.new_tensor(1.0)
    shift = torch.zeros_like(ids, dtype=torch.float64) if force_suppress else ids.double() * span
    boxes64 = boxes64 + shift[..., None]
    rank = torch.arange(k, 0, -1, device=boxes_xyxy.device, dtype=torch.float64)
    counts = valid.sum(dim=1).tolist()  # valid candidates are a prefix: invalid ones scored lowest
    for i, n in enumerate(counts):
        if n:
            kept = torchvision.ops.nms(boxes64[i, :n], rank[:n], iou_thresh)
            keep[i, kept] = True
    return keep & valid


class PostProcessor(nn.Module):
    """``(cls_preds Tensor[B,A,C+1] logits, box_preds Tensor[B,A,4], anchors_cxcywh Tensor[1,A,4])`` ->
    ``(ids Tensor[B,P,1], scores Tensor[B,P,1], bboxes_xyxy Tensor[B,P,4])`` in input pixels, -1 padded.

    ``decoder``: ``"per_class"`` (every class of every anchor is a candidate) or ``"argmax"`` (only each anchor's
    best class). ``nms_thresh`` outside (0, 1) disables suppression; ``nms_topk <= 0`` keeps every candidate;
    ``post_nms <= 0`` returns all ``K`` rows.
    """

    def __init__(
        self,
        num_classes: int,
        decoder: str = "per_class",
        nms_thresh: float = 0.45,
        nms_topk: int = 400,
        post_nms: int = 100,
        score_thresh: float = 0.01,
        stds: Sequence[float] = BOX_STDS,
        force_suppress: bool = False,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.decoder = decoder
        self.nms_thresh = nms_thresh
        self.nms_topk = nms_topk
        self.post_nms = post_nms
        self.score_thresh = score_thresh
        self.force_suppress = force_suppress
        self.box_decoder = NormalizedBoxCenterDecoder(stds)

    @property
    def decoder(self) -> str:
        return self._decoder

    @decoder.setter
    def decoder(self, name: str) -> None:
        if name not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")
        self._decoder = name

    def set_nms(self, nms_thresh: float = 0.45, nms_topk: int = 400, post_nms: int = 100) -> None:
        self.nms_thresh, self.nms_topk, self.post_nms = nms_thresh, nms_topk, post_nms

    def top_candidates(self, probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Class decoding and the global top-k, in the order of a stable descending sort of the class-major
        candidate list. ``probs Tensor[B,A,C+1]`` -> ``(scores, ids, anchor_index, valid)`` each ``Tensor[B,K]``.

        Only the K winners are materialised: per-class decoding costs one top-k over ``A*C`` scores.
        """
        b, a, c1 = probs.shape
        c = c1 - 1
        fg = probs[..., 1:]
        if self._decoder == "per_class":
            flat = fg.reshape(b, a * c)  # anchor-major
            k = min(k, flat.shape[1]) if k > 0 else flat.shape[1]
            scores, top = flat.topk(k, dim=1, sorted=False)
            anchor_index = torch.div(top, c, rounding_mode="floor")
            ids = top - anchor_index * c
            class_major = ids * a + anchor_index
        else:
            best, arg = fg.max(dim=-1)  # [B, A]
            k = min(k, a) if k > 0 else a
            scores, anchor_index = best.topk(k, dim=1, sorted=False)
            ids = arg.gather(1, anchor_index)
            class_major = anchor_index
        order = class_major.argsort(dim=1)
        order = order.gather(1, scores.gather(1, order).argsort(dim=1, descending=True, stable=True))
        scores, ids, anchor_index = scores.gather(1, order), ids.gather(1, order), anchor_index.gather(1, order)
        return scores, ids, anchor_index, scores > self.score_thresh

    @torch.no_grad()
    def forward(self, cls_preds: Tensor, box_preds: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if cls_preds.dim() != 3 or cls_preds.shape[-1] != self.num_classes + 1:
            raise ValueError(f"cls_preds must be Tensor[B, A, {self.num_classes + 1}], got {tuple(cls_preds.shape)}")
        if box_preds.shape != (*cls_preds.shape[:2], 4):
            raise ValueError(f"box_preds must be Tensor[B, A, 4] matching cls_preds, got {tuple(box_preds.shape)}")
        b = cls_preds.shape[0]
        probs = torch.softmax(cls_preds.float(), dim=-1)
        scores, ids, anchor_index, valid = self.top_candidates(probs, self.nms_topk)
        k = scores.shape[1]
        sel = anchor_index[..., None].expand(b, k, 4)
        anchors = anchors.reshape(1, -1, 4).float().expand(b, -1, 4)
        boxes = self.box_decoder(box_preds.float().gather(1, sel), anchors.gather(1, sel))  # [B, K, 4]
        if 0 < self.nms_thresh < 1:
            keep = batched_class_nms(boxes, scores, ids, valid, self.nms_thresh, self.force_suppress)
        else:
            keep = valid
        # compact survivors to the front, preserving score order
        order = (~keep).to(torch.int8).argsort(dim=1, stable=True)
        keep = keep.gather(1, order)
        out_ids = torch.where(keep, ids.gather(1, order).to(torch.float32), -1.0)
        out_scores = torch.where(keep, scores.gather(1, order), -1.0)
        out_boxes = torch.where(keep[..., None], boxes.gather(1, order[..., None].expand(b, k, 4)), -1.0)

        p = k if self.post_nms <= 0 else self.post_nms
        if p > k:
            pad = p - k
            out_ids = torch.cat((out_ids, out_ids.new_full((b, pad), -1.0)), dim=1)
            out_scores = torch.cat((out_scores, out_scores.new_full((b, pad), -1.0)), dim=1)
            out_boxes = torch.cat((out_boxes, out_boxes.new_full((b, pad, 4), -1.0)), dim=1)
        return out_ids[:, :p, None], out_scores[:, :p, None], out_boxes[:, :p]
