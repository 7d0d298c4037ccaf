import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou as tv_box_iou

from ssdkit.anchors import AnchorGrid
from ssdkit.boxes import (
    batched_box_iou,
    clip_boxes_xyxy,
    cxcywh_to_xyxy,
    grid_gt_anchor_iou,
    gt_anchor_iou,
    paired_box_iou_numpy,
    validate_gt,
    xyxy_to_cxcywh,
)

coord = st.floats(min_value=-50, max_value=400, allow_nan=False, width=32)
size = st.floats(min_value=0, max_value=300, allow_nan=False, width=32)


@st.composite
def boxes_xyxy(draw, n_min=1, n_max=12):
    n = draw(st.integers(n_min, n_max))
    rows = [(x, y, x + w, y + h) for x, y, w, h in (draw(st.tuples(coord, coord, size, size)) for _ in range(n))]
    return torch.tensor(rows, dtype=torch.float32)


@settings(max_examples=60, deadline=None)
@given(boxes_xyxy())
def test_center_corner_roundtrip(b):
    back = cxcywh_to_xyxy(xyxy_to_cxcywh(b))
    assert torch.allclose(back, b, atol=1e-3)
    c = xyxy_to_cxcywh(b)
    assert torch.all(c[:, 2] >= 0) and torch.all(c[:, 3] >= 0)


@settings(max_examples=60, deadline=None)
@given(boxes_xyxy(), boxes_xyxy())
def test_iou_matches_torchvision_and_is_bounded(a, b):
    ref = tv_box_iou(a, b).nan_to_num(0.0)
    ours = batched_box_iou(a[None], b[None])[0]
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.all((ours >= 0) & (ours <= 1 + 1e-6))
    # the [B, G, A] layout of the matcher is the transpose of the same numbers (anchors have a positive area)
    anchor_ok = (a[:, 2] > a[:, 0]) & (a[:, 3] > a[:, 1])
    if anchor_ok.any():
        assert torch.allclose(gt_anchor_iou(b[None], a[anchor_ok]), ref[anchor_ok].T[None], atol=1e-5)
    # symmetric
    assert torch.allclose(batched_box_iou(b[None], a[None])[0], ours.T, atol=1e-6)


def test_iou_convention_pins():
    # no +1 on widths: two 10x10 boxes overlapping by half -> 50 / 150
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10]])
    assert batched_box_iou(a[None], b[None]).item() == pytest.approx(50 / 150)
    # a zero-area (padding) box has IoU 0, not NaN
    pad = torch.tensor([[-1.0, -1, -1, -1]])
    assert gt_anchor_iou(pad[None], a).item() == 0.0


def test_clip():
    b = torch.tensor([[-5.0, 3, 350, 290]])
    assert clip_boxes_xyxy(b, 300, 280).tolist() == [[0.0, 3.0, 300.0, 280.0]]


def test_validate_gt_errors():
    good = torch.tensor([[[0.0, 0, 10, 10], [-1, -1, -1, -1]]])
    ids = torch.tensor([[0.0, -1]])
    validate_gt(good, ids, num_classes=3)
    with pytest.raises(ValueError, match="NaN or inf"):
        validate_gt(torch.tensor([[[0.0, 0, float("nan"), 10]]]), torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        validate_gt(torch.tensor([[[0.0, 0, float("inf"), 10]]]), torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="xmax < xmin"):
        validate_gt(torch.tensor([[[10.0, 0, 5, 10]]]), torch.tensor([[0.0]]))
    with pytest.raises(ValueError, match="batch size"):
        validate_gt(good, torch.tensor([[0.0, -1], [1, -1]]))
    with pytest.raises(ValueError, match=r"\[B, G, 4\]"):
        validate_gt(good[0], ids)
    with pytest.raises(ValueError, match="out of range"):
        validate_gt(good, torch.tensor([[3.0, -1]]), num_classes=3)
    # NaN in a padding row is fine: padding rows are ignored
    pad_nan = torch.tensor([[[0.0, 0, 10, 10], [float("nan")] * 4]])
    validate_gt(pad_nan, ids)


def _grid_anchors(h, w, k, step, rng):
    """A one-layer grid of ``h x w`` positions with ``k`` random shapes, plus a second 1x1x1 layer off the grid."""
    cy, cx = torch.meshgrid((torch.arange(h) + 0.5) * step, (torch.arange(w) + 0.5) * step, indexing="ij")
    sizes = torch.rand(k, 2, generator=rng) * step * 3 + 0.5
    layer = torch.cat([torch.stack([cx, cy], -1)[:, :, None].expand(h, w, k, 2), sizes.expand(h, w, k, 2)], -1).reshape(
        -1, 4
    )
    anchors = torch.cat([layer, torch.tensor([[-7.5, -3.25, 3.0, 4.0]])])
    return cxcywh_to_xyxy(anchors), AnchorGrid(((h, w, k), (1, 1, 1)))


def _random_gt(rng, batch, g, size):
    xy = torch.rand(batch, g, 2, generator=rng) * size
    wh = torch.rand(batch, g, 2, generator=rng) * size * 0.7
    gt = torch.cat([xy - wh / 2, xy + wh / 2], -1)
    gt[:, -1] = 0  # a padding row
    gt[0, 0] = torch.tensor([4.0, 4.0, 4.0, 9.0])  # zero width
    return gt


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.floats(2, 40), st.integers(0, 2**31 - 1))
def test_grid_iou_is_bit_equal_to_dense(h, w, k, step, seed):
    rng = torch.Generator().manual_seed(seed)
    anchors_xyxy, grid = _grid_anchors(h, w, k, step, rng)
    gt = _random_gt(rng, 2, 4, size=step * max(h, w))
    assert torch.equal(grid_gt_anchor_iou(gt, anchors_xyxy, grid), gt_anchor_iou(gt, anchors_xyxy))


def test_grid_iou_on_the_ssd300_anchors_and_a_wrong_grid(anchors300, grid300):
    anchors_xyxy, grid = cxcywh_to_xyxy(anchors300[0]), grid300
    gt = _random_gt(torch.Generator().manual_seed(0), 3, 9, size=300.0)
    assert torch.equal(grid_gt_anchor_iou(gt, anchors_xyxy, grid), gt_anchor_iou(gt, anchors_xyxy))
    with pytest.raises(ValueError, match="8732"):
        grid_gt_anchor_iou(gt, anchors_xyxy[:-1], grid)


def test_paired_iou_numpy_is_gluoncv_arithmetic():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5]], dtype=np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [5, 5, 5, 5]], dtype=np.float32)
    iou = paired_box_iou_numpy(a, b)
    assert iou.dtype == np.float32
    assert iou[0] == pytest.approx(50 / 150) and iou[1] == 0.0 and np.isnan(iou[2])
    ref = tv_box_iou(torch.from_numpy(a[:2]), torch.from_numpy(b[:2])).diagonal().numpy()
    np.testing.assert_allclose(iou[:2], ref, rtol=1e-6)
