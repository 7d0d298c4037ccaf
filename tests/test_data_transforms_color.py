"""ssdkit.data.transforms.color: GluonCV's colour distortion composed into one affine map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from ssdkit.data.transforms.color import RandomColorDistort, apply_color_affine, color_distort_affine

from conftest import plain
from conftest import transform_sample as sample

pytestmark = pytest.mark.usefixtures("one_thread")


def gluoncv_colour_reference(img_hwc, brightness, contrast, saturation, hue, contrast_first):
    """Step by step, following GluonCV's experimental.image.random_color_distort."""
    src = img_hwc.astype(np.float64)
    if brightness is not None:
        src = src + brightness

    def do_contrast(s):
        return s * contrast if contrast is not None else s

    def do_saturation(s):
        if saturation is None:
            return s
        gray = (s * np.array([[[0.299, 0.587, 0.114]]])).sum(axis=2, keepdims=True)
        return s * saturation + gray * (1.0 - saturation)

    def do_hue(s):
        if hue is None:
            return s
        u, w = np.cos(hue), np.sin(hue)
        bt = np.array([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]])
        tyiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
        ityiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
        return s @ np.dot(np.dot(ityiq, bt), tyiq).T

    steps = (do_contrast, do_saturation, do_hue) if contrast_first else (do_saturation, do_hue, do_contrast)
    for step in steps:
        src = step(src)
    return src


@pytest.mark.parametrize(
    "params",
    [
        (12.5, 1.3, 0.7, 2.0, True),
        (-30.0, 0.6, 1.4, -40.0, False),
        (None, None, 1.2, None, True),
        (None, 1.5, None, 0.3, False),
        (None, None, None, None, True),
    ],
)
def test_colour_affine_matches_gluoncv_steps(params):
    image, _ = sample()
    ref = gluoncv_colour_reference(plain(image).permute(1, 2, 0).numpy(), *params)
    out = apply_color_affine(image, *color_distort_affine(*params))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, rtol=0, atol=2e-3)


def test_colour_distort_is_unclipped_and_leaves_boxes_alone():
    image, target = sample()
    out = apply_color_affine(image, *color_distort_affine(brightness=20.0, contrast=1.5))
    assert out.max() > 255 and out.min() >= 30  # 1.5 * (255 + 20) is not clipped to 255
    seen_outside = False
    for seed in range(20):
        torch.manual_seed(seed)
        img2, tgt2 = RandomColorDistort()(image, target)
        assert isinstance(img2, tv_tensors.Image) and img2.dtype == torch.float32
        assert torch.equal(plain(tgt2["boxes"]), plain(target["boxes"]))
        assert torch.equal(tgt2["labels"], target["labels"])
        seen_outside |= bool((img2 < 0).any() or (img2 > 255).any())
    assert seen_outside


def test_hue_angle_is_pi_times_uniform_18():
    t = RandomColorDistort(p=1.0)
    torch.manual_seed(0)
    hues = [t.make_params([])["hue"] for _ in range(300)]
    assert max(abs(h) for h in hues) > math.pi  # GluonCV quirk: the angle spans many turns
    assert max(abs(h) for h in hues) <= 18 * math.pi
