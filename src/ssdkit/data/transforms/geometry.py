"""GluonCV's SSD geometry augmentations on ``(image, target)`` samples: expand, constrained crop, resize.

Shape legend: C channels, H x W image, N boxes. Boxes are ``tv_tensors.BoundingBoxes`` (XYXY pixels in the
transforms, ``boxes_xyxy Tensor[N, 4]`` in the pure functions). Transforms that drop boxes (:class:`RandomIoUCrop`)
drop the matching entries of ``labels``, ``difficult``, ``iscrowd`` and ``area`` of the same dict too.

``torchvision.transforms.v2.RandomIoUCrop`` and ``SanitizeBoundingBoxes`` are not used: the former asks the IoU of
any one box and the latter drops boxes thinner than 1 pixel, where GluonCV keeps every box of positive size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...boxes import batched_box_iou
from ...constants import IMAGENET_MEAN
from ._tv import as_xyxy, is_image, randint, rewrap, size_pair, uniform, wrap_xyxy
from .opencv_resize import OPENCV_INTERPOLATIONS, resize_image_cv

__all__ = [
    "DEFAULT_CROP_CONSTRAINTS",
    "PER_BOX_KEYS",
    "expand_image",
    "RandomExpand",
    "CropResult",
    "crop_boxes_xyxy",
    "random_crop_with_constraints",
    "filter_per_box",
    "RandomIoUCrop",
    "ResizeCV",
    "RandomInterpolationResize",
]

DEFAULT_CROP_CONSTRAINTS = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1.0))
PER_BOX_KEYS = ("labels", "difficult", "iscrowd", "area")


# ------------------------------------------------------------------------------------------------
# expand
# ------------------------------------------------------------------------------------------------


def expand_image(
    image: Tensor, out_height: int, out_width: int, off_x: int, off_y: int, fill: Sequence[float]
) -> Tensor:
    """Place ``image [C, H, W]`` at ``(off_x, off_y)`` on a ``[C, out_height, out_width]`` canvas of ``fill``.

    The canvas keeps the image dtype (a fractional fill is cast, as GluonCV's ``nd.array(fill, dtype)``).
    """
    x = image.as_subclass(Tensor)
    c, h, w = x.shape[-3:]
    if len(fill) != c:
        raise ValueError(f"fill has {len(fill)} values for a {c}-channel image")
    if not (0 <= off_x <= out_width - w and 0 <= off_y <= out_height - h):
        raise ValueError(f"offset ({off_x}, {off_y}) does not fit a {w}x{h} image in {out_width}x{out_height}")
    canvas = torch.empty(x.shape[:-2] + (out_height, out_width), dtype=x.dtype)
    canvas.copy_(torch.tensor(fill, dtype=torch.float64).to(x.dtype).view(c, 1, 1).expand_as(canvas))
    canvas[..., off_y : off_y + h, off_x : off_x + w] = x
    return canvas


def _shift_boxes(
    boxes: tv_tensors.BoundingBoxes, dx: float, dy: float, canvas_size: tuple[int, int]
) -> tv_tensors.BoundingBoxes:
    xyxy = as_xyxy(boxes)
    shifted = xyxy + torch.tensor([dx, dy, dx, dy], dtype=xyxy.dtype)
    return wrap_xyxy(shifted, boxes, canvas_size)


class RandomExpand(v2.Transform):
    """GluonCV's ``random_expand`` with probability ``p``: ratio ``U(1, max_ratio)`` for both axes,
    canvas ``(int(H * r), int(W * r))`` filled with ``fill``, offsets ``randint`` inclusive; boxes shifted."""

    def __init__(
        self, max_ratio: float = 4.0, fill: Sequence[float] = tuple(m * 255 for m in IMAGENET_MEAN), p: float = 0.5
    ):
        super().__init__()
        self.max_ratio = max_ratio
        self.fill = tuple(float(f) for f in fill)
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if float(torch.rand(())) >= self.p or self.max_ratio <= 1:
            return dict(apply=False)
        h, w = v2.query_size(flat_inputs)
        ratio = uniform(1.0, self.max_ratio)
        oh, ow = int(h * ratio), int(w * ratio)
        return dict(apply=True, height=oh, width=ow, off_y=randint(0, oh - h + 1), off_x=randint(0, ow - w + 1))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _shift_boxes(inpt, params["off_x"], params["off_y"], (params["height"], params["width"]))
        if is_image(inpt):
            out = expand_image(inpt, params["height"], params["width"], params["off_x"], params["off_y"], self.fill)
            return rewrap(out, inpt)
        return inpt


# ------------------------------------------------------------------------------------------------
# crop
# ------------------------------------------------------------------------------------------------


class CropResult(NamedTuple):
    """``crop_xywh`` = (left, top, width, height) in input pixels; ``boxes_xyxy [M, 4]`` in crop pixels;
    ``keep [N]`` bool marks the input boxes that survived; ``constraint`` the (min_iou, max_iou) the
    crop was sampled under, or None for the whole image."""

    crop_xywh: tuple[int, int, int, int]
    boxes_xyxy: Tensor
    keep: Tensor
    constraint: tuple[float | None, float | None] | None


def crop_boxes_xyxy(
    boxes_xyxy: Tensor, crop_xywh: Sequence[int], allow_outside_center: bool = False
) -> tuple[Tensor, Tensor]:
    """GluonCV's ``bbox.crop``: ``boxes [N, 4]`` -> ``(boxes [M, 4] in crop pixels, keep [N])``.

    Keeps boxes whose centre lies in ``[left, right) x [top, bottom)`` (unless
    ``allow_outside_center``), clips them to the crop, translates, and drops boxes left with
    non-positive width or height.
    """
    left, top, w, h = (float(v) for v in crop_xywh)
    lo = torch.tensor([left, top], dtype=boxes_xyxy.dtype)
    hi = torch.tensor([left + w, top + h], dtype=boxes_xyxy.dtype)
    if allow_outside_center:
        keep = torch.ones(boxes_xyxy.shape[0], dtype=torch.bool)
    else:
        centers = (boxes_xyxy[:, :2] + boxes_xyxy[:, 2:4]) / 2
        keep = ((lo <= centers) & (centers < hi)).all(dim=1)
    out = torch.cat([torch.maximum(boxes_xyxy[:, :2], lo) - lo, torch.minimum(boxes_xyxy[:, 2:4], hi) - lo], dim=1)
    keep = keep & (out[:, :2] < out[:, 2:4]).all(dim=1)
    return out[keep], keep


def random_crop_with_constraints(
    boxes_xyxy: Tensor,
    width: int,
    height: int,
    min_scale: float = 0.3,
    max_scale: float = 1.0,
    max_aspect_ratio: float = 2.0,
    constraints: Sequence[tuple[float | None, float | None]] | None = None,
    max_trial: int = 50,
    generator: torch.Generator | None = None,
) -> CropResult:
    """GluonCV's ``random_crop_with_constraints`` on ``boxes_xyxy [N, 4]`` in a ``width x height`` image.

    For each ``(min_iou, max_iou)`` constraint, up to ``max_trial`` crops are drawn (side scale
    ``U(min_scale, max_scale)``, aspect ``U(max(1/max_ar, s^2), min(max_ar, 1/s^2))``, size
    ``int(H s / sqrt(a)) x int(W s sqrt(a))``, top-left ``randrange``); the first whose IoU with
    *every* box lies in ``[min_iou, max_iou]`` (IoU without +1) joins the candidates, which start
    as the whole image. A candidate is then drawn at random and the boxes cropped with
    :func:`crop_boxes_xyxy`; a candidate that keeps no box is discarded and another drawn. With no
    candidate left, the whole image and the unchanged boxes are returned. Without boxes the first
    random crop is returned. All ``len(constraints) x max_trial`` trials are drawn as one tensor
    and the first accepted trial of each constraint is used, which has the same distribution as
    GluonCV's sequential loop (only the number of random draws differs).
    One deviation: when a crop spans a whole side, GluonCV's ``randrange(0)`` raises; here the
    offset is 0.
    """
    if constraints is None:
        constraints = DEFAULT_CROP_CONSTRAINTS
    boxes = torch.as_tensor(boxes_xyxy).reshape(-1, 4)
    n = boxes.shape[0]
    candidates: list[tuple[tuple[int, int, int, int], Any]] = [((0, 0, int(width), int(height)), None)]
    if len(constraints) == 0:
        t = torch.zeros(0, max_trial, 4, dtype=torch.float64)
    else:
        t = torch.rand(len(constraints), max_trial, 4, generator=generator, dtype=torch.float64)
    scale = min_scale + (max_scale - min_scale) * t[..., 0]  # [K, T]
    ar_lo = torch.clamp(scale * scale, min=1.0 / max_aspect_ratio)
    ar_hi = torch.clamp(1.0 / (scale * scale), max=max_aspect_ratio)
    aspect = ar_lo + (ar_hi - ar_lo) * t[..., 1]
    crop_h = torch.floor(height * scale / aspect.sqrt())
    crop_w = torch.floor(width * scale * aspect.sqrt())
    crop_t = torch.floor(t[..., 2] * (height - crop_h))  # randrange(H - h): 0 .. H - h - 1
    crop_l = torch.floor(t[..., 3] * (width - crop_w))
    crops = torch.stack([crop_l, crop_t, crop_w, crop_h], dim=-1)  # [K, T, 4] xywh
    if n == 0 and len(constraints):
        c = tuple(int(v) for v in crops[0, 0])
        return CropResult(c, boxes.clone(), torch.zeros(0, dtype=torch.bool), tuple(constraints[0]))
    if len(constraints):
        crops_xyxy = torch.cat([crops[..., :2], crops[..., :2] + crops[..., 2:]], dim=-1).reshape(-1, 4)
        iou = batched_box_iou(boxes.to(torch.float64)[None], crops_xyxy[None])[0]  # [N, K * T], no +1
        iou = iou.reshape(n, len(constraints), max_trial)
        lo_iou = torch.tensor([-math.inf if c[0] is None else float(c[0]) for c in constraints], dtype=torch.float64)
        hi_iou = torch.tensor([math.inf if c[1] is None else float(c[1]) for c in constraints], dtype=torch.float64)
        ok = (iou.amin(dim=0) >= lo_iou[:, None]) & (iou.amax(dim=0) <= hi_iou[:, None])  # [K, T]
        has_hit = ok.any(dim=1)
        first = ok.to(torch.int8).argmax(dim=1)
        for k in has_hit.nonzero().flatten().tolist():
            c = tuple(int(v) for v in crops[k, int(first[k])])
            candidates.append((c, tuple(constraints[k])))
    while candidates:
        crop, constraint = candidates.pop(randint(0, len(candidates), generator))
        new_boxes, keep = crop_boxes_xyxy(boxes, crop, allow_outside_center=False)
        if new_boxes.shape[0] < 1:
            continue
        return CropResult(crop, new_boxes, keep, constraint)
    return CropResult((0, 0, int(width), int(height)), boxes.clone(), torch.ones(n, dtype=torch.bool), None)


def filter_per_box(sample: Any, keep: Tensor) -> Any:
    """Index the per-box entries (``PER_BOX_KEYS``) of every dict in ``sample`` with ``keep``."""
    if isinstance(sample, dict):
        out = {}
        for key, value in sample.items():
            if (
                key in PER_BOX_KEYS
                and isinstance(value, Tensor)
                and value.ndim >= 1
                and value.shape[0] == keep.shape[0]
                and not isinstance(value, tv_tensors.BoundingBoxes)
            ):
                value = value[keep]
            elif isinstance(value, (dict, list, tuple)):
                value = filter_per_box(value, keep)
            out[key] = value
        return out
    if isinstance(sample, (list, tuple)) and not hasattr(sample, "_fields"):
        return type(sample)(filter_per_box(v, keep) for v in sample)
    return sample


class RandomIoUCrop(v2.Transform):
    """GluonCV's SSD crop (:func:`random_crop_with_constraints`), applied to the image and the boxes.

    Unlike ``torchvision.transforms.v2.RandomIoUCrop`` (any box meets the IoU, boxes marked for a
    later ``SanitizeBoundingBoxes``), every box must meet the minimum IoU, and dropped boxes are
    removed here together with their ``labels``/``difficult``/``iscrowd``/``area``.
    """

    def __init__(
        self,
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        max_aspect_ratio: float = 2.0,
        constraints: Sequence[tuple[float | None, float | None]] | None = None,
        max_trial: int = 50,
    ):
        super().__init__()
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.max_aspect_ratio = max_aspect_ratio
        self.constraints = tuple(constraints) if constraints is not None else DEFAULT_CROP_CONSTRAINTS
        self.max_trial = max_trial

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        if not any(isinstance(x, tv_tensors.BoundingBoxes) for x in flat_inputs):
            raise TypeError("RandomIoUCrop needs tv_tensors.BoundingBoxes in the sample (target['boxes'])")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        boxes = v2.get_bounding_boxes(flat_inputs)
        result = random_crop_with_constraints(
            as_xyxy(boxes),
            w,
            h,
            self.min_scale,
            self.max_scale,
            self.max_aspect_ratio,
            self.constraints,
            self.max_trial,
        )
        return dict(result=result)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        result: CropResult = params["result"]
        left, top, cw, ch = result.crop_xywh
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return wrap_xyxy(result.boxes_xyxy, inpt, (ch, cw))
        if is_image(inpt):
            out = inpt.as_subclass(Tensor)[..., top : top + ch, left : left + cw]
            return rewrap(out, inpt)
        return inpt

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        flat_inputs, spec = tree_flatten(sample)
        self.check_inputs(flat_inputs)
        needs = self._needs_transform_list(flat_inputs)
        params = self.make_params([x for x, n in zip(flat_inputs, needs) if n])
        flat_outputs = [self.transform(x, params) if n else x for x, n in zip(flat_inputs, needs)]
        return filter_per_box(tree_unflatten(flat_outputs, spec), params["result"].keep)


# ------------------------------------------------------------------------------------------------
# resize
# ------------------------------------------------------------------------------------------------


def _scale_boxes(boxes: tv_tensors.BoundingBoxes, out_h: int, out_w: int) -> tv_tensors.BoundingBoxes:
    in_h, in_w = boxes.canvas_size
    xyxy = as_xyxy(boxes).to(torch.float64)
    scaled = xyxy * torch.tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h], dtype=torch.float64)
    return wrap_xyxy(scaled, boxes, (out_h, out_w))


class ResizeCV(v2.Transform):
    """Resize image and boxes to ``size`` (int: square, or (H, W)) ignoring aspect, with an OpenCV code.

    ``interpolation``: an OpenCV code 0-4 (:mod:`ssdkit.data.transforms.opencv_resize`) or 9 / ``"auto"`` for
    MXNet's auto rule.
    """

    def __init__(self, size: int | Sequence[int], interpolation: int | str = "auto"):
        super().__init__()
        self.size = size_pair(size)
        self.interpolation = 9 if interpolation == "auto" else int(interpolation)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return dict(interp=self.interpolation)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out_h, out_w = self.size
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _scale_boxes(inpt, out_h, out_w)
        if is_image(inpt):
            out = resize_image_cv(inpt, out_h, out_w, params["interp"])
            return rewrap(out, inpt)
        return inpt


class RandomInterpolationResize(ResizeCV):
    """Resize to ``size`` ignoring aspect with an interpolation drawn uniformly from ``interpolations``
    (GluonCV: ``np.random.randint(0, 5)`` over OpenCV's NEAREST, LINEAR, CUBIC, AREA, LANCZOS4)."""

    def __init__(self, size: int | Sequence[int], interpolations: Sequence[int] = (0, 1, 2, 3, 4)):
        super().__init__(size, interpolation=1)
        self.interpolations = tuple(int(i) for i in interpolations)
        bad = [i for i in self.interpolations if i not in OPENCV_INTERPOLATIONS]
        if bad or not self.interpolations:
            raise ValueError(f"interpolations must be OpenCV codes 0-4, got {interpolations}")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return dict(interp=self.interpolations[randint(0, len(self.interpolations))])
