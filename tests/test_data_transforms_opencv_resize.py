"""ssdkit.data.transforms.opencv_resize: OpenCV's resize kernels and MXNet's automatic choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssdkit.data.transforms.opencv_resize import mxnet_auto_interpolation, resize_image_cv

pytestmark = pytest.mark.usefixtures("one_thread")


def exact_area_reference(x, out_size):
    """Average of the source cells covered by each output cell (exact overlap weights), along rows."""
    n = x.shape[0]
    scale = n / out_size
    out = np.zeros(out_size)
    for i in range(out_size):
        a, b = i * scale, (i + 1) * scale
        acc = 0.0
        for j in range(n):
            acc += max(0.0, min(j + 1, b) - max(j, a)) * x[j]
        out[i] = acc / scale
    return out


def test_area_resize_averages_covered_pixels():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8).repeat(3, 1, 1)
    out = resize_image_cv(x, 4, 4, interp=3)
    torch.testing.assert_close(out, x.reshape(3, 4, 2, 4, 2).mean(dim=(2, 4)))
    col = torch.tensor([3.0, 9.0, 1.0, 4.0, 7.0, 2.0, 8.0])
    img = col.view(1, 7, 1).expand(3, 7, 5).contiguous()
    out = resize_image_cv(img, 3, 5, interp=3)  # 7 -> 3 rows (non-integer), 5 -> 5 cols
    np.testing.assert_allclose(out[0, :, 2].numpy(), exact_area_reference(col.numpy(), 3), rtol=1e-5)


def test_linear_resize_uses_half_pixel_centres_and_lanczos_keeps_constants():
    ramp = torch.arange(10, dtype=torch.float32).view(1, 1, 10).expand(3, 4, 10)
    out = resize_image_cv(ramp, 4, 4, interp=1)
    scale = 10 / 4
    expected = torch.tensor([(dx + 0.5) * scale - 0.5 for dx in range(4)])
    torch.testing.assert_close(out[0, 0], expected)
    const = torch.full((3, 13, 17), 42.0)
    for interp in range(5):
        torch.testing.assert_close(resize_image_cv(const, 30, 7, interp), torch.full((3, 30, 7), 42.0))
    nearest = resize_image_cv(ramp, 4, 4, interp=0)
    assert nearest[0, 0].tolist() == [math.floor(dx * scale) for dx in range(4)]


def test_uint8_resize_rounds_and_mxnet_auto_rule():
    img = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = resize_image_cv(img, 10, 15, interp=9)
    assert out.dtype == torch.uint8
    ref = resize_image_cv(img.float(), 10, 15, interp=3)
    assert (out.float() - ref).abs().max() <= 0.5 + 1e-4
    assert mxnet_auto_interpolation(100, 100, 300, 300) == 2
    assert mxnet_auto_interpolation(500, 375, 300, 300) == 3
    assert mxnet_auto_interpolation(200, 400, 300, 300) == 1
    assert mxnet_auto_interpolation(300, 400, 300, 300) == 1
