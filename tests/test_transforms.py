"""SSD transforms: GluonCV semantics of colour distortion, expand, constrained crop, resize, flip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssdkit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, RandomColorDistort, RandomExpand,
                                    RandomInterpolationResize, RandomIoUCrop, ResizeCV, SSDTrainTransform,
                                    SSDValTransform, apply_color_affine, color_distort_affine,
                                    crop_boxes_xyxy, expand_image, mxnet_auto_interpolation,
                                    random_crop_with_constraints, resize_image_cv)

FILL = tuple(m * 255 for m in IMAGENET_MEAN)

pytestmark = pytest.mark.usefixtures("one_thread")




def sample(h=60, w=80, boxes=((5, 5, 30, 40), (40, 10, 78, 58), (10, 30, 20, 50)), dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g).to(dtype)
    n = len(boxes)
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                          format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(n, dtype=torch.int64) + 10,
        "difficult": (torch.arange(n) % 2).to(torch.uint8),
        "image_id": "img", "path": "img.jpg", "orig_size": (h, w),
    }
    return tv_tensors.Image(image), target


def plain(t):
    return t.as_subclass(torch.Tensor)


# --- colour ----------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("params", [
    (12.5, 1.3, 0.7, 2.0, True), (-30.0, 0.6, 1.4, -40.0, False), (None, None, 1.2, None, True),
    (None, 1.5, None, 0.3, False), (None, None, None, None, True),
])
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
    assert max(abs(h) for h in hues) > math.pi          # GluonCV quirk: the angle spans many turns
    assert max(abs(h) for h in hues) <= 18 * math.pi


# --- expand ----------------------------------------------------------------------------------------

def test_expand_image_places_image_on_mean_canvas():
    image = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4).expand(3, 2, 3, 4)[:, 0]
    canvas = expand_image(image, 7, 9, off_x=5, off_y=4, fill=FILL)
    assert canvas.shape == (3, 7, 9)
    assert torch.equal(canvas[:, 4:7, 5:9], image)
    mask = torch.ones(7, 9, dtype=torch.bool)
    mask[4:7, 5:9] = False
    for c in range(3):
        assert torch.all(canvas[c][mask] == torch.tensor(FILL[c], dtype=torch.float32))


def test_random_expand_shifts_boxes_by_the_offset():
    image, target = sample(dtype=torch.float32)
    h, w = image.shape[-2:]
    for seed in range(10):
        torch.manual_seed(seed)
        out, tgt = RandomExpand(p=1.0)(image, target)
        oh, ow = out.shape[-2:]
        shift = plain(tgt["boxes"]) - plain(target["boxes"])
        ox, oy = int(shift[0, 0]), int(shift[0, 1])
        assert torch.equal(shift, torch.tensor([[ox, oy, ox, oy]] * 3, dtype=torch.float32))
        assert 0 <= ox <= ow - w and 0 <= oy <= oh - h
        assert torch.equal(plain(out)[:, oy:oy + h, ox:ox + w], plain(image))
        # one ratio for both axes: some r in [1, 4] gives (int(h r), int(w r)) == (oh, ow)
        lo, hi = max(oh / h, ow / w), min((oh + 1) / h, (ow + 1) / w)
        assert lo < hi and lo <= 4 and hi >= 1
        assert tgt["boxes"].canvas_size == (oh, ow) and torch.equal(tgt["labels"], target["labels"])
        assert float(out[0, 0, 0]) == pytest.approx(FILL[0]) or (ox == 0 and oy == 0)
    torch.manual_seed(0)
    same, _ = RandomExpand(p=0.0)(image, target)
    assert same is image


# --- crop ------------------------------------------------------------------------------------------

def reference_crop(boxes, crop):
    """GluonCV bbox.crop(allow_outside_center=False), written out per box."""
    left, top, w, h = crop
    right, bottom = left + w, top + h
    out, keep = [], []
    for x1, y1, x2, y2 in boxes.tolist():
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        nb = [max(x1, left) - left, max(y1, top) - top, min(x2, right) - left, min(y2, bottom) - top]
        ok = left <= cx < right and top <= cy < bottom and nb[0] < nb[2] and nb[1] < nb[3]
        keep.append(ok)
        if ok:
            out.append(nb)
    return np.array(out).reshape(-1, 4), np.array(keep, dtype=bool)


def iou_np(boxes, box):
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def test_crop_boxes_center_rule_clip_and_translate():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 70, 70], [95, 95, 120, 120], [30, 40, 50, 60],
                          [90, 40, 110, 60]])
    # centres: (5, 5) out; (60, 60) in; (107.5, 107.5) out; (40, 50) on the left edge: in; (100, 50) on the right edge: out
    out, keep = crop_boxes_xyxy(boxes, (40, 40, 60, 60))
    assert keep.tolist() == [False, True, False, True, False]
    torch.testing.assert_close(out, torch.tensor([[10.0, 10, 30, 30], [0, 0, 10, 20]]))


def test_constrained_crop_meets_every_gt_min_iou():
    g = torch.Generator().manual_seed(1234)
    rng = np.random.RandomState(0)
    used = set()
    for _ in range(300):
        w, h = int(rng.randint(50, 400)), int(rng.randint(50, 400))
        n = int(rng.randint(1, 5))
        xy = rng.uniform(0, 1, (n, 2)) * [w * 0.8, h * 0.8]
        wh = rng.uniform(0.05, 0.6, (n, 2)) * [w, h]
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
        res = random_crop_with_constraints(torch.tensor(boxes), w, h, generator=g)
        left, top, cw, ch = res.crop_xywh
        assert 0 <= left and 0 <= top and left + cw <= w and top + ch <= h and cw > 0 and ch > 0
        if res.constraint is not None:
            used.add(res.constraint)
            lo, hi = res.constraint
            iou = iou_np(boxes, [left, top, left + cw, top + ch])
            assert lo is None or iou.min() >= lo - 1e-9
            assert hi is None or iou.max() <= hi + 1e-9
            # the crop obeys the scale and aspect limits
            assert cw * ch >= 0.3 ** 2 * w * h * 0.95
        ref_boxes, ref_keep = reference_crop(boxes, res.crop_xywh)
        if ref_keep.any():
            assert res.keep.tolist() == ref_keep.tolist()
            np.testing.assert_allclose(res.boxes_xyxy.numpy(), ref_boxes)
        else:  # GluonCV's last resort: the whole image, boxes unchanged
            assert res.crop_xywh == (0, 0, w, h) and res.keep.all()
        kept = res.boxes_xyxy
        assert len(kept) >= 1
        assert (kept[:, :2] >= 0).all() and (kept[:, 2] <= cw).all() and (kept[:, 3] <= ch).all()
    assert len(used) >= 4, used


def test_crop_without_boxes_returns_first_random_crop():
    g = torch.Generator().manual_seed(0)
    res = random_crop_with_constraints(torch.zeros(0, 4), 100, 80, generator=g)
    left, top, cw, ch = res.crop_xywh
    assert res.constraint == (0.1, None) and res.boxes_xyxy.shape == (0, 4)
    assert 0 <= left < 100 - cw + 1 and 0 <= top < 80 - ch + 1 and 0 < cw <= 100 and 0 < ch <= 80


def test_random_iou_crop_transform_keeps_labels_with_boxes():
    image, target = sample(h=120, w=160, boxes=[(5, 5, 30, 40), (40, 10, 150, 110), (100, 60, 120, 118),
                                                 (60, 60, 70, 70)])
    for seed in range(30):
        torch.manual_seed(seed)
        out, tgt = RandomIoUCrop()(image, target)
        b = plain(tgt["boxes"])
        assert len(b) == len(tgt["labels"]) == len(tgt["difficult"]) >= 1
        ch, cw = out.shape[-2:]
        assert tgt["boxes"].canvas_size == (ch, cw)
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= cw).all() and (b[:, 3] <= ch).all()
        # each kept label still points at its own box: crop the original box the same way
        for box, label, diff in zip(b, tgt["labels"], tgt["difficult"]):
            k = int(label) - 10
            assert int(diff) == k % 2
            assert (box[2] - box[0]) <= (target["boxes"][k, 2] - target["boxes"][k, 0]) + 1e-4
        assert tgt["image_id"] == "img" and tgt["orig_size"] == (120, 160)


# --- resize ----------------------------------------------------------------------------------------

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


def test_resize_scales_boxes_and_random_interpolation_uses_all_codes():
    image, target = sample(dtype=torch.float32)
    out, tgt = ResizeCV(40, interpolation=1)(image, target)
    assert out.shape == (3, 40, 40) and tgt["boxes"].canvas_size == (40, 40)
    torch.testing.assert_close(plain(tgt["boxes"]), plain(target["boxes"]) * torch.tensor([0.5, 40 / 60, 0.5, 40 / 60]))
    t = RandomInterpolationResize((30, 50))
    torch.manual_seed(0)
    assert {t.make_params([])["interp"] for _ in range(100)} == {0, 1, 2, 3, 4}
    out, tgt = t(image, target)
    assert out.shape == (3, 30, 50)
    torch.testing.assert_close(plain(tgt["boxes"]), plain(target["boxes"]) * torch.tensor([50 / 80, 0.5, 50 / 80, 0.5]))


# --- flip and presets ------------------------------------------------------------------------------

def test_flip_maps_x1_to_w_minus_x2():
    image, target = sample()
    out, tgt = v2.RandomHorizontalFlip(p=1.0)(image, target)
    b = plain(target["boxes"])
    expected = torch.stack([80 - b[:, 2], b[:, 1], 80 - b[:, 0], b[:, 3]], dim=1)
    assert torch.equal(plain(tgt["boxes"]), expected)
    assert torch.equal(plain(out), plain(image).flip(-1))
    assert any(isinstance(t, v2.RandomHorizontalFlip) and t.p == 0.5 for t in SSDTrainTransform(32).transforms)


def test_train_preset_output_and_reproducibility():
    image, target = sample(h=90, w=120, boxes=[(5, 5, 60, 70), (70, 20, 118, 88), (30, 40, 50, 60)])
    t = SSDTrainTransform(64)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(t(image, target))
    (a, ta), (b, tb), (c, tc) = outs
    assert torch.equal(plain(a), plain(b)) and torch.equal(plain(ta["boxes"]), plain(tb["boxes"]))
    assert not torch.equal(plain(a), plain(c))
    for seed in range(40):
        torch.manual_seed(seed)
        img, tgt = t(image, target)
        assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
        boxes = plain(tgt["boxes"])
        assert len(boxes) == len(tgt["labels"]) == len(tgt["difficult"]) >= 1
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(tgt["labels"].tolist()) <= {10, 11, 12}
        assert tgt["boxes"].canvas_size == (64, 64)


def test_val_preset_normalises_and_keeps_difficult():
    value = torch.tensor(IMAGENET_MEAN) * 255 + torch.tensor(IMAGENET_STD) * 255  # -> exactly 1 after normalising
    image = tv_tensors.Image(value.view(3, 1, 1).expand(3, 60, 80).round().to(torch.uint8))
    _, target = sample()
    out, tgt = SSDValTransform(32)(image, target)
    expected = ((value.round() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)
    torch.testing.assert_close(plain(out), expected.expand(3, 32, 32))
    torch.testing.assert_close(plain(tgt["boxes"]), plain(target["boxes"]) * torch.tensor([0.4, 32 / 60, 0.4, 32 / 60]))
    assert torch.equal(tgt["difficult"], target["difficult"]) and torch.equal(tgt["labels"], target["labels"])
    out_b, _ = SSDValTransform(32, interpolation="bilinear")(image, target)
    torch.testing.assert_close(plain(out_b), expected.expand(3, 32, 32))


def test_transforms_compose_with_torchvision():
    image, target = sample()
    pipeline = v2.Compose([RandomColorDistort(p=1.0), v2.RandomHorizontalFlip(p=1.0), RandomExpand(p=1.0),
                           v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=lambda s: (s[1]["labels"], s[1]["difficult"]))])
    torch.manual_seed(0)
    out, tgt = pipeline(image, target)
    assert out.dtype == torch.float32 and len(tgt["boxes"]) == len(tgt["labels"]) == 3


def test_train_preset_expand_ratio_is_configurable():
    default = [t for t in SSDTrainTransform(32).transforms if isinstance(t, RandomExpand)]
    off = [t for t in SSDTrainTransform(32, expand_max_ratio=1).transforms if isinstance(t, RandomExpand)]
    assert default[0].max_ratio == 4.0 and off[0].max_ratio == 1
    torch.manual_seed(0)
    assert not any(off[0].make_params([sample()[0]])["apply"] for _ in range(20))
