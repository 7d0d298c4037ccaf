"""OpenCV's resize kernels (``cv2.resize``) as separable banded matmuls on torch tensors.

Interpolation (OpenCV codes): 0 NEAREST -> torch ``nearest`` (OpenCV's floor rule); 1 LINEAR, 2 CUBIC, 3 AREA and
4 LANCZOS4 use OpenCV's own weights (half-pixel centres, no antialias, cubic a = -0.75, exact area averaging when
shrinking, 8-tap Lanczos, clamped borders). On float images the result matches ``cv2.resize`` to float32 rounding
(area/lanczos <= 2e-4, linear/cubic <= 2e-2 on a 0-255 range); on uint8 images it is rounded and at most 1 grey
level off (OpenCV's 8-bit fixed point). Code 9 is MXNet's automatic choice (:func:`mxnet_auto_interpolation`).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

__all__ = ["OPENCV_INTERPOLATIONS", "mxnet_auto_interpolation", "resize_image_cv"]

OPENCV_INTERPOLATIONS = {0: "nearest", 1: "linear", 2: "cubic", 3: "area", 4: "lanczos4"}


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
    idx = torch.floor(fsx1).long().unsqueeze(1) + torch.arange(taps).unsqueeze(0)  # [out, T]
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
        kern = torch.where(
            d == 0,
            torch.ones_like(d),
            4 * torch.sin(math.pi * safe) * torch.sin(math.pi * safe / 4) / (math.pi**2 * safe * safe),
        )
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
