"""``ssdkit::class_nms``: per-class greedy NMS as one operator, and its ONNX translation.

In PyTorch it runs ``postprocess.batched_class_nms`` (what ``net.detect`` runs). In ONNX it becomes
``NonMaxSuppression`` with the class as its class axis: each candidate scores ``K - position`` in its own class
(and nothing in the others), so the operator visits candidates in the given order, ties included, and never lets
two classes suppress each other. Its selected ``(image, class, candidate)`` triples are scattered back into a
``keep Tensor[N, K]`` mask, so the operator's output has a fixed shape.
"""

import torch
from torch import Tensor

__all__ = ["class_nms", "onnx_translation"]


@torch.library.custom_op("ssdkit::class_nms", mutates_args=())
def class_nms(
    boxes_xyxy: Tensor, ids: Tensor, valid: Tensor, iou_thresh: float, num_classes: int, max_per_class: int
) -> Tensor:
    """``boxes_xyxy Tensor[N, K, 4]``, ``ids Tensor[N, K]`` (0..C-1), ``valid Tensor[N, K]`` bool, candidates in
    score order -> keep ``Tensor[N, K]`` bool. ``max_per_class`` bounds the survivors of each class and image
    (the first ones in order are the same with any bound)."""
    from ..postprocess import batched_class_nms

    k = ids.shape[1]
    rank = torch.arange(k, 0, -1, dtype=torch.float32, device=ids.device).expand(ids.shape[0], k)
    keep = batched_class_nms(boxes_xyxy, rank, ids, valid, iou_thresh)
    if max_per_class > 0:
        per_class = torch.zeros_like(ids)
        for c in range(num_classes):
            mine = keep & (ids == c)
            per_class = torch.where(mine, mine.long().cumsum(dim=1), per_class)
        keep = keep & (per_class <= max_per_class)
    return keep


@class_nms.register_fake
def _(boxes_xyxy, ids, valid, iou_thresh, num_classes, max_per_class):
    return torch.empty_like(valid)


def onnx_translation():
    """``{torch.ops.ssdkit.class_nms.default: function}`` for ``torch.onnx.export(custom_translation_table=...)``."""
    from onnxscript import FLOAT, INT64
    from onnxscript import opset18 as op

    def class_nms_onnx(boxes_xyxy: FLOAT, ids: INT64, valid, iou_thresh: float, num_classes: int, max_per_class: int):
        shape = op.Shape(ids)  # [N, K]
        k = op.Shape(ids, start=1, end=2)
        classes = op.Reshape(
            op.Range(op.Constant(value_int=0), op.Constant(value_int=num_classes), op.Constant(value_int=1)),
            op.Constant(value_ints=[1, -1, 1]),
        )
        mine = op.And(op.Equal(op.Unsqueeze(ids, [1]), classes), op.Unsqueeze(valid, [1]))  # [N, C, K]
        rank = op.Cast(
            op.Range(op.Squeeze(k, [0]), op.Constant(value_int=0), op.Constant(value_int=-1)), to=1
        )  # K .. 1 as float
        scores = op.Where(mine, rank, op.Constant(value_float=-1.0))
        selected = op.NonMaxSuppression(
            boxes_xyxy,
            scores,
            op.Constant(value_ints=[max_per_class if max_per_class > 0 else 1 << 30]),
            op.Constant(value_floats=[iou_thresh]),
            op.Constant(value_floats=[0.0]),
        )  # [M, 3]
        where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [M, 2]: image, candidate
        hits = op.Expand(op.Constant(value_int=1), op.Shape(selected, start=0, end=1))
        keep = op.ScatterND(op.Expand(op.Constant(value_int=0), shape), where, hits)
        return op.Cast(keep, to=9)  # bool

    return {torch.ops.ssdkit.class_nms.default: class_nms_onnx}
