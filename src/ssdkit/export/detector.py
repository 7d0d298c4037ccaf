"""A self-contained detector for export: network, constant anchors, box and class decoding, per-class NMS.

Shape legend: N batch, A anchors, C foreground classes, K candidates after the global top-k (``nms_topk``),
P output rows (``post_nms``).

``DeployDetector(net)(images Tensor[N, 3, H, W])`` returns ``(ids Tensor[N, P], scores Tensor[N, P],
boxes_xyxy Tensor[N, P, 4])`` in input pixels, -1 padded: the rows of ``net.detect`` without its trailing axis of
size 1. Every step is written with operators that ONNX and TorchScript both hold (top-k, gather, where); the one
data-dependent step, NMS, is the method ``suppress``: a greedy loop over an IoU matrix in plain torch in
``DeployDetector`` (TorchScript files that load without ssdkit), the ``ssdkit::class_nms`` operator in
``OnnxDetector`` (exported as ONNX's ``NonMaxSuppression``).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from . import nms_op  # noqa: F401  (registers ssdkit::class_nms)

__all__ = ["DeployDetector", "OnnxDetector", "RawHeads", "greedy_class_nms", "check_input_size"]


def check_input_size(images: Tensor, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``images`` is ``Tensor[N, 3, height, width]``: the exported anchors are made for
    one input size, and another size would silently decode boxes against the wrong anchors (or index past them).
    Written in the subset of Python that TorchScript compiles, so the check travels inside the exported file."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != height or images.shape[3] != width:
        raise ValueError(
            "this detector was exported for images of shape [N, 3, "
            + str(height)
            + ", "
            + str(width)
            + "], got "
            + str(list(images.shape))
            + "; resize the images to that size or export again at another size"
        )


class RawHeads(nn.Module):
    """``images Tensor[N, 3, H, W] -> (cls_preds Tensor[N, A, C+1], box_preds Tensor[N, A, 4])`` of ``net``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        cls_preds, box_preds, _ = self.net(images)
        return cls_preds, box_preds


def greedy_class_nms(boxes_xyxy: Tensor, ids: Tensor, valid: Tensor, iou_thresh: float) -> Tensor:
    """Greedy NMS in candidate order within each class: ``boxes_xyxy Tensor[N, K, 4]``, ``ids``/``valid``
    ``Tensor[N, K]`` -> keep ``Tensor[N, K]`` bool. A candidate is dropped when an earlier kept candidate of the
    same id overlaps it with IoU > ``iou_thresh`` (computed in float64, as ``PostProcessor``)."""
    b = boxes_xyxy.double()
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(b[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(b[:, :, None, 2:], b[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    k = ids.shape[1]
    later = torch.ones(k, k, dtype=torch.bool, device=ids.device).triu(1)
    suppress = (iou > iou_thresh) & (ids[:, :, None] == ids[:, None, :]) & later
    keep = valid.clone()
    count = int(valid.sum(dim=1).max()) if k > 0 else 0  # valid candidates are a prefix
    for i in range(count):
        keep = keep & ~(suppress[:, i, :] & keep[:, i : i + 1])
    return keep


class DeployDetector(nn.Module):
    """``net.detect`` as one module with fixed input size ``(height, width)`` and batch size free.

    Args:
        net: an ``SSD`` in eval mode; its postprocessor's settings (decoder, thresholds, top-k) are copied.
        height, width: the input size the anchors are made for (default ``net.data_shape``).
    """

    def __init__(self, net: nn.Module, height: int | None = None, width: int | None = None):
        super().__init__()
        pp = net.postprocessor
        height = int(height or net.data_shape)
        width = int(width or height)
        self.height, self.width = height, width
        self.heads = RawHeads(net)
        self.register_buffer("anchors", net.anchors_for_input(height, width).reshape(-1, 4).float().clone())
        self.num_classes = int(net.num_classes)
        self.per_class = pp.decoder == "per_class"
        self.score_thresh = float(pp.score_thresh)
        self.nms_thresh = float(pp.nms_thresh)
        self.do_nms = 0 < pp.nms_thresh < 1
        a = self.anchors.shape[0]
        cands = a * self.num_classes if self.per_class else a
        self.topk = min(int(pp.nms_topk), cands) if pp.nms_topk > 0 else cands
        self.post_nms = int(pp.post_nms) if pp.post_nms > 0 else self.topk
        self.box_decoder = copy.deepcopy(pp.box_decoder)

    def candidates(self, cls_preds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Class decoding and the global top-k in the order of a stable descending sort of the class-major
        candidate list: ``cls_preds Tensor[N, A, C+1] -> (scores, ids, anchor_index)`` each ``Tensor[N, K]``."""
        probs = torch.softmax(cls_preds.float(), dim=-1)
        fg = probs[:, :, 1:]
        a = fg.shape[1]
        if self.per_class:
            flat = fg.transpose(1, 2).reshape(fg.shape[0], -1)  # class-major [N, C*A]
            scores, top = flat.topk(self.topk, dim=1)
            ids = torch.div(top, a, rounding_mode="floor")
            anchor_index = top - ids * a
            class_major = top
        else:
            best, arg = fg.max(dim=-1)
            scores, anchor_index = best.topk(self.topk, dim=1)
            ids = arg.gather(1, anchor_index)
            class_major = anchor_index
        # equal scores in class-major order (top-k does not promise an order among ties): each candidate's place
        # is the count of candidates before it, by score then class-major index (distinct places)
        s_i, s_j = scores[:, :, None], scores[:, None, :]
        before = (s_j > s_i) | ((s_j == s_i) & (class_major[:, None, :] < class_major[:, :, None]))
        order = before.sum(dim=2).argsort(dim=1)
        return scores.gather(1, order), ids.gather(1, order), anchor_index.gather(1, order)

    def decode(self, box_preds: Tensor, anchor_index: Tensor) -> Tensor:
        """Box decoding of the candidates: ``Tensor[N, A, 4]`` offsets -> ``boxes_xyxy Tensor[N, K, 4]``."""
        p = box_preds.float().gather(1, anchor_index[..., None].expand(-1, -1, 4))
        return self.box_decoder(p, self.anchors[anchor_index])

    def suppress(self, boxes_xyxy: Tensor, ids: Tensor, valid: Tensor) -> Tensor:
        """Per-class NMS of the candidates: keep ``Tensor[N, K]`` bool."""
        return greedy_class_nms(boxes_xyxy, ids, valid, self.nms_thresh)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input_size(images, self.height, self.width)
        cls_preds, box_preds = self.heads(images)
        scores, ids, anchor_index = self.candidates(cls_preds)
        boxes = self.decode(box_preds, anchor_index)
        valid = scores > self.score_thresh
        if not self.do_nms:
            keep = valid
        else:
            keep = self.suppress(boxes, ids, valid)
        # survivors first, in candidate (score) order; every key is distinct
        k = scores.shape[1]
        rank = torch.arange(k, 0, -1, device=scores.device, dtype=torch.float32)
        key = keep.to(torch.float32) * (2 * k) + rank
        p = min(self.post_nms, k)
        _, order = key.topk(p, dim=1)
        kept = keep.gather(1, order)
        out_ids = torch.where(kept, ids.gather(1, order).to(torch.float32), -1.0)
        out_scores = torch.where(kept, scores.gather(1, order), -1.0)
        out_boxes = torch.where(kept[..., None], boxes.gather(1, order[..., None].expand(-1, -1, 4)), -1.0)
        if self.post_nms > k:
            pad = self.post_nms - k
            n = out_ids.shape[0]
            out_ids = torch.cat((out_ids, out_ids.new_full((n, pad), -1.0)), dim=1)
            out_scores = torch.cat((out_scores, out_scores.new_full((n, pad), -1.0)), dim=1)
            out_boxes = torch.cat((out_boxes, out_boxes.new_full((n, pad, 4), -1.0)), dim=1)
        return out_ids, out_scores, out_boxes


class OnnxDetector(DeployDetector):
    """``DeployDetector`` whose NMS is the ``ssdkit::class_nms`` operator (ONNX ``NonMaxSuppression``)."""

    def suppress(self, boxes_xyxy: Tensor, ids: Tensor, valid: Tensor) -> Tensor:
        return torch.ops.ssdkit.class_nms(boxes_xyxy, ids, valid, self.nms_thresh, self.num_classes, self.post_nms)


def preprocessing_info(net: nn.Module, height: int, width: int, mean: Sequence[float], std: Sequence[float]) -> dict:
    """What a consumer of an exported file needs besides the file: classes and the input preprocessing."""
    pp = net.postprocessor
    return {
        "model": net.name,
        "classes": list(net.classes),
        "input_size": [int(height), int(width)],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "scale": 1 / 255,
        "preprocessing": "RGB resized to input_size ignoring aspect (MXNet interp=9: bicubic when enlarging both "
        "sides, area when shrinking both, else bilinear; rounded to uint8), times scale, minus "
        "mean, divided by std, NCHW float32",
        "decoder": pp.decoder,
        "score_thresh": float(pp.score_thresh),
        "nms_thresh": float(pp.nms_thresh),
        "nms_topk": int(pp.nms_topk),
        "post_nms": int(pp.post_nms),
    }
