"""ssdkit.data.transforms.geometry: GluonCV's expand, constrained crop and resize transforms on samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssdkit.constants import IMAGENET_MEAN
from ssdkit.data.transforms.geometry import (
    RandomExpand,
    RandomInterpolationResize,
    RandomIoUCrop,
    ResizeCV,
    crop_boxes_xyxy,
    expand_image,
    random_crop_with_constraints,
)

from conftest import plain
from conftest import transform_sample as sample

FILL = tuple(m * 255 for m in IMAGENET_MEAN)

pytestmark = pytest.mark.usefixtures("one_thread")


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
        assert torch.equal(plain(out)[:, oy : oy + h, ox : ox + w], plain(image))
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
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 70, 70], [95, 95, 120, 120], [30, 40, 50, 60], [90, 40, 110, 60]])
    # centres: (5, 5) out; (60, 60) in; (107.5, 107.5) out; (40, 50) on the left edge: in;
    # (100, 50) on the right edge: out
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
            assert cw * ch >= 0.3**2 * w * h * 0.95
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
    image, target = sample(
        h=120, w=160, boxes=[(5, 5, 30, 40), (40, 10, 150, 110), (100, 60, 120, 118), (60, 60, 70, 70)]
    )
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
