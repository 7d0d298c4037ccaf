"""GluonCV's SSD augmentation as ``torchvision.transforms.v2`` transforms on tv_tensors.

Shape legend: C channels (3, RGB), H x W image, N boxes, S output size.

Every transform takes the sample format of :mod:`ssdkit.data`, ``(image, target)`` with
``image`` a ``tv_tensors.Image`` ``[C, H, W]`` and ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``
(XYXY pixels), so they compose with torchvision's own transforms. Transforms that drop boxes
(:class:`RandomIoUCrop`) drop the matching entries of ``labels``, ``difficult``, ``iscrowd`` and
``area`` of the same dict too. Randomness comes from torch's global RNG (seeded per DataLoader
worker by torch), so a run is reproducible from ``torch.manual_seed``; the pure functions take an
optional ``torch.Generator``.

``SSDTrainTransform`` is GluonCV's ``SSDDefaultTrainTransform`` without targets (see
:class:`ssdkit.data.collate.TargetCollate` for those):

1. :class:`RandomColorDistort`: float32, never clipped; brightness first, then contrast ->
   saturation -> hue or saturation -> hue -> contrast (p 1/2), each step with p 0.5. The four steps
   are affine maps of the RGB vector, so they are composed into one 3x3 matrix + offset and applied
   in a single pass (equal to the step-by-step result up to float32 rounding).
2. :class:`RandomExpand`: p 0.5, ratio U(1, 4) on both axes, canvas filled with ``mean * 255``.
3. :class:`RandomIoUCrop`: GluonCV's ``random_crop_with_constraints`` (every gt must meet the
   minimum IoU; not torchvision's ``RandomIoUCrop``, which asks it of any one box).
4. :class:`RandomInterpolationResize`: to S x S ignoring aspect, one of OpenCV's five
   interpolations at random (see :func:`resize_image_cv`).
5. ``v2.RandomHorizontalFlip`` (torchvision maps ``x1' = W - x2``, as GluonCV).
6. :class:`DivideBy255` then ``v2.Normalize(mean, std)``.

``SSDValTransform`` resizes to S x S with MXNet's ``interp=9`` rule (cubic when enlarging both
sides, area when shrinking both, else linear), quantised to uint8 like OpenCV on a uint8 image,
then normalises. ``interpolation="bilinear"`` uses ``v2.Resize`` (antialiased) instead.

Interpolation (OpenCV codes): 0 NEAREST -> torch ``nearest`` (OpenCV's floor rule); 1 LINEAR,
2 CUBIC, 3 AREA and 4 LANCZOS4 are implemented here with OpenCV's own weights (half-pixel centres,
no antialias, cubic a = -0.75, exact area averaging when shrinking, 8-tap Lanczos, clamped
borders), applied as separable banded matmuls. On float images they match ``cv2.resize`` to
float32 rounding (area/lanczos <= 2e-4, linear/cubic <= 2e-2 on a 0-255 range); on uint8 images
(the val path) the result is rounded and at most 1 grey level off (OpenCV's 8-bit fixed-point).
torchvision's antialiased modes and ``v2.Resize`` are a different filter, so they are only used for
``SSDValTransform(interpolation="bilinear")``.

``torchvision.transforms.v2.RandomIoUCrop`` and ``SanitizeBoundingBoxes`` are not used: the former
asks the IoU of any one box and the latter drops boxes thinner than 1 pixel, where GluonCV keeps
every box of positive size.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "OPENCV_INTERPOLATIONS",
    "color_distort_affine", "apply_color_affine", "expand_image",
    "crop_boxes_xyxy", "random_crop_with_constraints", "CropResult",
    "resize_image_cv", "mxnet_auto_interpolation",
    "RandomColorDistort", "RandomExpand", "RandomIoUCrop", "RandomInterpolationResize",
    "ResizeCV", "DivideBy255", "SSDTrainTransform", "SSDValTransform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENCV_INTERPOLATIONS = {0: "nearest", 1: "linear", 2: "cubic", 3: "area", 4: "lanczos4"}
DEFAULT_CROP_CONSTRAINTS = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1.0))
PER_BOX_KEYS = ("labels", "difficult", "iscrowd", "area")

# GluonCV's YIQ matrices (spec section 5.1)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.321), (0.211, -0.523, 0.311))
_YIQ_TO_RGB = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.107, 1.705))
_GRAY = (0.299, 0.587, 0.114)


def _is_image(x: Any) -> bool:
    return isinstance(x, tv_tensors.Image) or type(x) is torch.Tensor


def _uniform(low: float, high: float, generator: torch.Generator | None = None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _randint(low: int, high_exclusive: int, generator: torch.Generator | None = None) -> int:
    return int(torch.randint(low, high_exclusive, (), generator=generator))


# ------------------------------------------------------------------------------------------------
# colour
# ------------------------------------------------------------------------------------------------

def color_distort_affine(brightness: float | None = None, contrast: float | None = None,
                         saturation: float | None = None, hue: float | None = None,
                         contrast_first: bool = True) -> tuple[Tensor, Tensor]:
    """Compose GluonCV's colour steps into ``rgb' = A @ rgb + b``; returns ``(A [3, 3], b [3])`` float64.

    ``brightness`` delta added first; then contrast -> saturation -> hue when ``contrast_first``,
    else saturation -> hue -> contrast. ``contrast``/``saturation`` are alphas, ``hue`` the angle in
    radians (GluonCV draws ``pi * U(-18, 18)``). ``None`` skips a step.
    """
    a = torch.eye(3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    if brightness is not None:
        b = b + brightness

    def contrast_step(a, b):
        return (a * contrast, b * contrast) if contrast is not None else (a, b)

    def saturation_step(a, b):
        if saturation is None:
            return a, b
        m = saturation * torch.eye(3, dtype=torch.float64) + (1.0 - saturation) * torch.tensor(
            [_GRAY] * 3, dtype=torch.float64)
        return m @ a, m @ b

    def hue_step(a, b):
        if hue is None:
            return a, b
        u, w = math.cos(hue), math.sin(hue)
        rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]], dtype=torch.float64)
        m = torch.tensor(_YIQ_TO_RGB, dtype=torch.float64) @ rot @ torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        return m @ a, m @ b

    steps = (contrast_step, saturation_step, hue_step) if contrast_first else (
        saturation_step, hue_step, contrast_step)
    for step in steps:
        a, b = step(a, b)
    return a, b


def apply_color_affine(image: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``image [3, H, W]`` (any dtype) -> float32 ``a @ pixel + b`` for every pixel; never clipped."""
    x = image.as_subclass(Tensor).to(torch.float32)
    c, h, w = x.shape[-3:]
    if c != 3:
        raise ValueError(f"colour distortion needs a 3-channel RGB image, got {c} channels")
    flat = x.reshape(-1, 3, h * w)
    out = torch.baddbmm(b.to(torch.float32).view(1, 3, 1).expand(flat.shape[0], 3, 1),
                        a.to(torch.float32).expand(flat.shape[0], 3, 3), flat)
    return out.reshape(x.shape)


class RandomColorDistort(v2.Transform):
    """GluonCV's ``random_color_distort`` on the image; boxes untouched. Output float32, unclipped.

    Each step fires with probability ``p`` (GluonCV: ``uniform(0, 1) > 0.5``): brightness
    ``U(-brightness_delta, brightness_delta)``, contrast ``x * U(*contrast_range)`` (no mean
    subtraction), saturation ``alpha * x + (1 - alpha) * gray`` with ``alpha ~ U(*saturation_range)``,
    hue: YIQ rotation by ``pi * U(-hue_delta, hue_delta)`` radians (GluonCV's quirk).
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: float = 18, p: float = 0.5):
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def fires() -> bool:
            return float(torch.rand(())) < self.p

        brightness = _uniform(-self.brightness_delta, self.brightness_delta) if fires() else None
        contrast_first = bool(_randint(0, 2))
        # draw in the order the steps run, as GluonCV does
        names = ("contrast", "saturation", "hue") if contrast_first else ("saturation", "hue", "contrast")
        values: dict[str, float | None] = {}
        for name in names:
            if not fires():
                values[name] = None
            elif name == "contrast":
                values[name] = _uniform(*self.contrast_range)
            elif name == "saturation":
                values[name] = _uniform(*self.saturation_range)
            else:
                values[name] = math.pi * _uniform(-self.hue_delta, self.hue_delta)
        a, b = color_distort_affine(brightness, values["contrast"], values["saturation"], values["hue"],
                                    contrast_first)
        return dict(a=a, b=b, brightness=brightness, contrast_first=contrast_first, **values)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt):
            return inpt
        out = apply_color_affine(inpt, params["a"], params["b"])
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


# ------------------------------------------------------------------------------------------------
# expand
# ------------------------------------------------------------------------------------------------

def expand_image(image: Tensor, out_height: int, out_width: int, off_x: int, off_y: int,
                 fill: Sequence[float]) -> Tensor:
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
    canvas[..., off_y:off_y + h, off_x:off_x + w] = x
    return canvas


def _shift_boxes(boxes: tv_tensors.BoundingBoxes, dx: float, dy: float,
                 canvas_size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    xyxy = _as_xyxy(boxes)
    shifted = xyxy + torch.tensor([dx, dy, dx, dy], dtype=xyxy.dtype)
    return _wrap_xyxy(shifted, boxes, canvas_size)


class RandomExpand(v2.Transform):
    """GluonCV's ``random_expand`` with probability ``p``: ratio ``U(1, max_ratio)`` for both axes,
    canvas ``(int(H * r), int(W * r))`` filled with ``fill``, offsets ``randint`` inclusive; boxes shifted."""

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] = tuple(m * 255 for m in IMAGENET_MEAN),
                 p: float = 0.5):
        super().__init__()
        self.max_ratio = max_ratio
        self.fill = tuple(float(f) for f in fill)
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if float(torch.rand(())) >= self.p or self.max_ratio <= 1:
            return dict(apply=False)
        h, w = v2.query_size(flat_inputs)
        ratio = _uniform(1.0, self.max_ratio)
        oh, ow = int(h * ratio), int(w * ratio)
        return dict(apply=True, height=oh, width=ow, off_y=_randint(0, oh - h + 1), off_x=_randint(0, ow - w + 1))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _shift_boxes(inpt, params["off_x"], params["off_y"], (params["height"], params["width"]))
        if _is_image(inpt):
            out = expand_image(inpt, params["height"], params["width"], params["off_x"], params["off_y"],
                               self.fill)
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
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


def crop_boxes_xyxy(boxes_xyxy: Tensor, crop_xywh: Sequence[int],
                    allow_outside_center: bool = False) -> tuple[Tensor, Tensor]:
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


def random_crop_with_constraints(boxes_xyxy: Tensor, width: int, height: int, min_scale: float = 0.3,
                                 max_scale: float = 1.0, max_aspect_ratio: float = 2.0,
                                 constraints: Sequence[tuple[float | None, float | None]] | None = None,
                                 max_trial: int = 50, generator: torch.Generator | None = None) -> CropResult:
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
    scale = min_scale + (max_scale - min_scale) * t[..., 0]                       # [K, T]
    ar_lo = torch.clamp(scale * scale, min=1.0 / max_aspect_ratio)
    ar_hi = torch.clamp(1.0 / (scale * scale), max=max_aspect_ratio)
    aspect = ar_lo + (ar_hi - ar_lo) * t[..., 1]
    crop_h = torch.floor(height * scale / aspect.sqrt())
    crop_w = torch.floor(width * scale * aspect.sqrt())
    crop_t = torch.floor(t[..., 2] * (height - crop_h))   # randrange(H - h): 0 .. H - h - 1
    crop_l = torch.floor(t[..., 3] * (width - crop_w))
    crops = torch.stack([crop_l, crop_t, crop_w, crop_h], dim=-1)                 # [K, T, 4] xywh
    if n == 0 and len(constraints):
        c = tuple(int(v) for v in crops[0, 0])
        return CropResult(c, boxes.clone(), torch.zeros(0, dtype=torch.bool), tuple(constraints[0]))
    if len(constraints):
        crops_xyxy = torch.cat([crops[..., :2], crops[..., :2] + crops[..., 2:]], dim=-1).reshape(-1, 4)
        iou = _pairwise_iou(boxes.to(torch.float64), crops_xyxy).reshape(n, len(constraints), max_trial)
        lo_iou = torch.tensor([-math.inf if c[0] is None else float(c[0]) for c in constraints], dtype=torch.float64)
        hi_iou = torch.tensor([math.inf if c[1] is None else float(c[1]) for c in constraints], dtype=torch.float64)
        ok = (iou.amin(dim=0) >= lo_iou[:, None]) & (iou.amax(dim=0) <= hi_iou[:, None])   # [K, T]
        has_hit = ok.any(dim=1)
        first = ok.to(torch.int8).argmax(dim=1)
        for k in has_hit.nonzero().flatten().tolist():
            c = tuple(int(v) for v in crops[k, int(first[k])])
            candidates.append((c, tuple(constraints[k])))
    while candidates:
        crop, constraint = candidates.pop(_randint(0, len(candidates), generator))
        new_boxes, keep = crop_boxes_xyxy(boxes, crop, allow_outside_center=False)
        if new_boxes.shape[0] < 1:
            continue
        return CropResult(crop, new_boxes, keep, constraint)
    return CropResult((0, 0, int(width), int(height)), boxes.clone(), torch.ones(n, dtype=torch.bool), None)


def _pairwise_iou(a_xyxy: Tensor, b_xyxy: Tensor) -> Tensor:
    """IoU ``[N, M]`` without +1 (GluonCV's ``bbox_iou(offset=0)``); 0 where the union is empty."""
    lt = torch.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    rb = torch.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area_a = (a_xyxy[:, 2:] - a_xyxy[:, :2]).prod(dim=-1)
    area_b = (b_xyxy[:, 2:] - b_xyxy[:, :2]).prod(dim=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)), torch.zeros_like(union))


def _as_xyxy(boxes: tv_tensors.BoundingBoxes) -> Tensor:
    plain = boxes.as_subclass(Tensor)
    if boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
        plain = F.convert_bounding_box_format(plain, old_format=boxes.format,
                                              new_format=tv_tensors.BoundingBoxFormat.XYXY)
    return plain


def _wrap_xyxy(xyxy: Tensor, like: tv_tensors.BoundingBoxes, canvas_size: tuple[int, int]) -> tv_tensors.BoundingBoxes:
    if like.format != tv_tensors.BoundingBoxFormat.XYXY:
        xyxy = F.convert_bounding_box_format(xyxy, old_format=tv_tensors.BoundingBoxFormat.XYXY,
                                             new_format=like.format)
    return tv_tensors.wrap(xyxy.to(like.dtype), like=like, canvas_size=(int(canvas_size[0]), int(canvas_size[1])))


def filter_per_box(sample: Any, keep: Tensor) -> Any:
    """Index the per-box entries (``PER_BOX_KEYS``) of every dict in ``sample`` with ``keep``."""
    if isinstance(sample, dict):
        out = {}
        for key, value in sample.items():
            if (key in PER_BOX_KEYS and isinstance(value, Tensor) and value.ndim >= 1
                    and value.shape[0] == keep.shape[0] and not isinstance(value, tv_tensors.BoundingBoxes)):
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

    def __init__(self, min_scale: float = 0.3, max_scale: float = 1.0, max_aspect_ratio: float = 2.0,
                 constraints: Sequence[tuple[float | None, float | None]] | None = None, max_trial: int = 50):
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
            _as_xyxy(boxes), w, h, self.min_scale, self.max_scale, self.max_aspect_ratio,
            self.constraints, self.max_trial)
        return dict(result=result)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        result: CropResult = params["result"]
        left, top, cw, ch = result.crop_xywh
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _wrap_xyxy(result.boxes_xyxy, inpt, (ch, cw))
        if _is_image(inpt):
            out = inpt.as_subclass(Tensor)[..., top:top + ch, left:left + cw]
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
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

def mxnet_auto_interpolation(in_height: int, in_width: int, out_height: int, out_width: int) -> int:
    """MXNet's ``interp=9``: CUBIC (2) when enlarging both sides, AREA (3) when shrinking both, else LINEAR (1)."""
    if out_height > in_height and out_width > in_width:
        return 2
    if out_height < in_height and out_width < in_width:
        return 3
    return 1


def _area_shrink_taps(in_size: int, out_size: int) -> tuple[Tensor, Tensor]:
    """OpenCV ``computeResizeAreaTab``: each output cell averages the input pixels it covers."""
    scale = in_size / out_size
    fsx1 = torch.arange(out_size, dtype=torch.float64) * scale
    fsx2 = fsx1 + scale
    cell = torch.clamp(in_size - fsx1, max=scale)
    taps = int(math.ceil(scale)) + 2
    idx = torch.floor(fsx1).long().unsqueeze(1) + torch.arange(taps).unsqueeze(0)   # [out, T]
    j = idx.to(torch.float64)
    overlap = (torch.minimum(j + 1, fsx2.unsqueeze(1)) - torch.maximum(j, fsx1.unsqueeze(1))).clamp(min=0)
    overlap = torch.where((overlap > 1e-3) & (idx < in_size), overlap.clamp(max=1.0), torch.zeros_like(overlap))
    weights = overlap / cell.unsqueeze(1)
    return idx.clamp(max=in_size - 1), weights.to(torch.float32)


def _generic_taps(in_size: int, out_size: int, interp: int) -> tuple[Tensor, Tensor]:
    """OpenCV ``resizeGeneric_`` coefficients for LINEAR (1), CUBIC (2), AREA-when-enlarging (3), LANCZOS4 (4)."""
    scale = in_size / out_size
    dx = torch.arange(out_size, dtype=torch.float64)
    if interp == 3:
        sx = torch.floor(dx * scale)
        fx = (dx + 1) - (sx + 1) * (out_size / in_size)
        fx = torch.where(fx <= 0, torch.zeros_like(fx), fx - torch.floor(fx))
    else:
        f = ((dx + 0.5) * scale - 0.5).to(torch.float32).to(torch.float64)
        sx = torch.floor(f)
        fx = f - sx
    if interp in (1, 3):
        low = sx < 0
        fx = torch.where(low, torch.zeros_like(fx), fx)
        sx = torch.where(low, torch.zeros_like(sx), sx)
        high = sx >= in_size - 1
        fx = torch.where(high, torch.zeros_like(fx), fx)
        sx = torch.where(high, torch.full_like(sx, in_size - 1), sx)
        offsets = torch.arange(2)
        weights = torch.stack([1 - fx, fx], dim=1)
    elif interp == 2:
        a = -0.75
        d = torch.stack([fx + 1, fx, 1 - fx, 2 - fx], dim=1)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        weights = torch.where(d <= 1, near, far)
        offsets = torch.arange(-1, 3)
    elif interp == 4:
        offsets = torch.arange(-3, 5)
        d = fx.unsqueeze(1) - offsets.to(torch.float64).unsqueeze(0)
        safe = torch.where(d == 0, torch.ones_like(d), d)
        kern = torch.where(d == 0, torch.ones_like(d),
                           4 * torch.sin(math.pi * safe) * torch.sin(math.pi * safe / 4) / (math.pi ** 2 * safe * safe))
        kern = kern / kern.sum(dim=1, keepdim=True)
        exact = (fx < torch.finfo(torch.float32).eps).unsqueeze(1)
        weights = torch.where(exact, (offsets == 0).to(torch.float64).expand_as(kern), kern)
    else:
        raise ValueError(f"unsupported interpolation code {interp}")
    idx = (sx.long().unsqueeze(1) + offsets.unsqueeze(0)).clamp(0, in_size - 1)
    return idx, weights.to(torch.float32)


_BAND_ROWS = 32  # output rows (or columns) per block of the banded weight matrix


@functools.lru_cache(maxsize=512)
def _axis_bands(in_size: int, out_size: int, interp: int, area_shrink: bool) -> tuple:
    """OpenCV's weights for one axis as blocks ``(o0, o1, i0, i1, W[o1 - o0, i1 - i0])``.

    Output ``o0:o1`` depends only on input ``i0:i1``; a resize pass is one small matmul per block.
    Clamped border taps are summed into the border pixel.
    """
    idx, w = _area_shrink_taps(in_size, out_size) if area_shrink else _generic_taps(in_size, out_size, interp)
    used = w != 0
    lo = torch.where(used, idx, torch.full_like(idx, in_size)).min(dim=1).values
    hi = torch.where(used, idx, torch.full_like(idx, -1)).max(dim=1).values
    blocks = []
    for o0 in range(0, out_size, _BAND_ROWS):
        o1 = min(o0 + _BAND_ROWS, out_size)
        i0 = int(lo[o0:o1].min().clamp(max=in_size - 1))
        i1 = max(int(hi[o0:o1].max()) + 1, i0 + 1)
        block = torch.zeros(o1 - o0, i1 - i0, dtype=torch.float32)
        block.scatter_add_(1, (idx[o0:o1] - i0).clamp(0, i1 - i0 - 1), torch.where(used[o0:o1], w[o0:o1], 0.0))
        blocks.append((o0, o1, i0, i1, block))
    return tuple(blocks)


def _band_cost(blocks: tuple) -> int:
    return sum((o1 - o0) * (i1 - i0) for o0, o1, i0, i1, _ in blocks)


def _resize_banded(x: Tensor, out_h: int, out_w: int, interp: int) -> Tensor:
    """Separable resize of float ``x [..., H, W]`` with OpenCV's weights, as banded matmuls."""
    in_h, in_w = x.shape[-2:]
    area_shrink = interp == 3 and in_h >= out_h and in_w >= out_w
    by = _axis_bands(in_h, out_h, interp, area_shrink)
    bx = _axis_bands(in_w, out_w, interp, area_shrink)

    def rows(t):
        return torch.cat([torch.matmul(w, t[..., i0:i1, :]) for _, _, i0, i1, w in by], dim=-2)

    def cols(t):
        return torch.cat([torch.matmul(t[..., i0:i1], w.t()) for _, _, i0, i1, w in bx], dim=-1)

    if _band_cost(by) * in_w + out_h * _band_cost(bx) <= _band_cost(bx) * in_h + out_w * _band_cost(by):
        return cols(rows(x))
    return rows(cols(x))


def resize_image_cv(image: Tensor, height: int, width: int, interp: int) -> Tensor:
    """Resize ``image [..., C, H, W]`` to ``[..., C, height, width]`` as OpenCV's ``cv2.resize`` would.

    ``interp`` is an OpenCV code (0 nearest, 1 linear, 2 cubic, 3 area, 4 lanczos4) or 9 (MXNet's
    auto rule, :func:`mxnet_auto_interpolation`). Float input gives float32 output, never clipped;
    uint8 input is resized in float32 and rounded back to uint8 (as OpenCV saturates).
    """
    x = image.as_subclass(Tensor)
    in_h, in_w = x.shape[-2:]
    if interp == 9:
        interp = mxnet_auto_interpolation(in_h, in_w, height, width)
    if interp not in OPENCV_INTERPOLATIONS:
        raise ValueError(f"interpolation must be an OpenCV code 0-4 or 9, got {interp}")
    is_uint8 = x.dtype == torch.uint8
    xf = x.to(torch.float32)
    if (in_h, in_w) == (height, width):
        out = xf.clone()
    elif interp == 0:
        batched = xf.reshape((-1,) + tuple(xf.shape[-3:]))
        out = torch.nn.functional.interpolate(batched, size=(height, width), mode="nearest")
        out = out.reshape(xf.shape[:-2] + (height, width))
    else:
        out = _resize_banded(xf, height, width, interp)
    if is_uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _scale_boxes(boxes: tv_tensors.BoundingBoxes, out_h: int, out_w: int) -> tv_tensors.BoundingBoxes:
    in_h, in_w = boxes.canvas_size
    xyxy = _as_xyxy(boxes).to(torch.float64)
    scaled = xyxy * torch.tensor([out_w / in_w, out_h / in_h, out_w / in_w, out_h / in_h], dtype=torch.float64)
    return _wrap_xyxy(scaled, boxes, (out_h, out_w))


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


class ResizeCV(v2.Transform):
    """Resize image and boxes to ``size`` (int: square, or (H, W)) ignoring aspect, with an OpenCV code.

    ``interpolation``: 0-4 (see module docstring) or 9 / ``"auto"`` for MXNet's auto rule.
    """

    def __init__(self, size: int | Sequence[int], interpolation: int | str = "auto"):
        super().__init__()
        self.size = _size_pair(size)
        self.interpolation = 9 if interpolation == "auto" else int(interpolation)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return dict(interp=self.interpolation)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out_h, out_w = self.size
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return _scale_boxes(inpt, out_h, out_w)
        if _is_image(inpt):
            out = resize_image_cv(inpt, out_h, out_w, params["interp"])
            return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out
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
        return dict(interp=self.interpolations[_randint(0, len(self.interpolations))])


# ------------------------------------------------------------------------------------------------
# to tensor + presets
# ------------------------------------------------------------------------------------------------

class DivideBy255(v2.Transform):
    """Image -> float32 ``x / 255`` (MXNet's ``to_tensor``; also for float images, which
    ``v2.ToDtype(scale=True)`` would leave unscaled)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not _is_image(inpt):
            return inpt
        out = inpt.as_subclass(Tensor).to(torch.float32) / 255.0
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


class SSDTrainTransform(v2.Compose):
    """GluonCV's ``SSDDefaultTrainTransform(size, size)`` (without targets) as a ``v2.Compose``.

    ``(image uint8 [3, H, W], target)`` -> ``(image float32 [3, S, S] normalised, target)`` with the
    boxes in S x S pixels; ``labels``/``difficult`` follow the boxes. ``self.transforms`` lists the
    steps, so a custom pipeline can reuse or replace them. ``expand_max_ratio`` (GluonCV: 4) bounds
    the zoom-out; 1 disables it (useful when objects are already small, e.g. synthetic data at 128).
    """

    def __init__(self, size: int | Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, expand_max_ratio: float = 4.0):
        size, mean, std = _size_pair(size), tuple(mean), tuple(std)
        super().__init__([
            RandomColorDistort(),
            RandomExpand(max_ratio=expand_max_ratio, fill=[m * 255 for m in mean], p=0.5),
            RandomIoUCrop(),
            RandomInterpolationResize(size),
            v2.RandomHorizontalFlip(p=0.5),
            DivideBy255(),
            v2.Normalize(mean=list(mean), std=list(std)),
        ])
        self.size, self.mean, self.std = size, mean, std


class SSDValTransform(v2.Compose):
    """GluonCV's ``SSDDefaultValTransform(size, size)``: resize to S x S, ``/255``, normalise.

    ``interpolation="auto"`` (default) follows MXNet's ``interp=9`` as GluonCV does; ``"bilinear"``
    uses torchvision's antialiased bilinear ``v2.Resize`` instead. Boxes are scaled; labels and
    ``difficult`` kept.
    """

    def __init__(self, size: int | Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, interpolation: str | int = "auto"):
        size, mean, std = _size_pair(size), tuple(mean), tuple(std)
        if interpolation == "bilinear":
            resize = v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        else:
            resize = ResizeCV(size, interpolation)
        super().__init__([resize, DivideBy255(), v2.Normalize(mean=list(mean), std=list(std))])
        self.size, self.mean, self.std = size, mean, std
