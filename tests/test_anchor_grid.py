"""The separable IoU on grid anchors: found for every zoo preset, bit-equal to the dense IoU, never used wrongly."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ssd300_anchors
from ssdkit import SSDTargetGenerator
from ssdkit.anchor_grid import cached_anchor_grid, factor_anchor_grid, grid_gt_anchor_iou
from ssdkit.anchors import ssd_anchors
from ssdkit.boxes import cxcywh_to_xyxy, gt_anchor_iou
from ssdkit.models import PRESETS

ZOO_FEATURES = {
    "ssd_300_vgg16_atrous_voc": [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)],
    "ssd_512_vgg16_atrous_coco": [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_512_resnet50_v1_voc": [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_tiny_synthetic": [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_tiny_custom": [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3), (1, 2)],  # a non-square input
}


def _both(anchors_cxcywh):
    anchors = anchors_cxcywh.reshape(-1, 4)
    return anchors, cxcywh_to_xyxy(anchors)


def _random_gt(rng, batch, g, size=320.0):
    xy = torch.rand(batch, g, 2, generator=rng) * size
    wh = torch.rand(batch, g, 2, generator=rng) * size * 0.7
    gt = torch.cat([xy - wh / 2, xy + wh / 2], -1)
    gt[:, -1] = 0  # a padding row
    gt[0, 0] = torch.tensor([40.0, 40.0, 40.0, 90.0])  # zero width
    return gt


@pytest.mark.parametrize("name", sorted(ZOO_FEATURES))
def test_zoo_anchors_factor_and_iou_is_bit_equal(name):
    shapes = ZOO_FEATURES[name]
    anchors, anchors_xyxy = _both(ssd_anchors(PRESETS[name].anchor_spec, shapes))
    grid = factor_anchor_grid(anchors, anchors_xyxy)
    assert grid is not None
    assert [(h, w) for _, h, w, _ in grid.layers] == shapes
    assert sum(h * w * k for _, h, w, k in grid.layers) == anchors.shape[0]
    gt = _random_gt(torch.Generator().manual_seed(0), 3, 9)
    assert torch.equal(grid_gt_anchor_iou(gt, grid), gt_anchor_iou(gt, anchors_xyxy))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.floats(2, 40), st.integers(0, 2 ** 31 - 1))
def test_any_grid_is_bit_equal(h, w, k, step, seed):
    rng = torch.Generator().manual_seed(seed)
    cy, cx = torch.meshgrid((torch.arange(h) + 0.5) * step, (torch.arange(w) + 0.5) * step, indexing="ij")
    sizes = torch.rand(k, 2, generator=rng) * step * 3 + 0.5
    anchors = torch.cat([torch.stack([cx, cy], -1)[:, :, None].expand(h, w, k, 2),
                         sizes.expand(h, w, k, 2)], -1).reshape(-1, 4)
    # a second layer: one anchor whose centre is off the grid
    anchors, anchors_xyxy = _both(torch.cat([anchors, anchors[:1] * 0 + torch.tensor([-7.5, -3.25, 3.0, 4.0])]))
    grid = factor_anchor_grid(anchors, anchors_xyxy)
    assert grid is not None
    gt = _random_gt(rng, 2, 4, size=step * max(h, w))
    assert torch.equal(grid_gt_anchor_iou(gt, grid), gt_anchor_iou(gt, anchors_xyxy))


def test_anchors_that_are_not_a_grid_are_refused():
    anchors, anchors_xyxy = _both(ssd300_anchors())
    perm = torch.randperm(anchors.shape[0], generator=torch.Generator().manual_seed(0))
    assert factor_anchor_grid(anchors[perm], anchors_xyxy[perm]) is None
    bent = anchors.clone()
    bent[5, 2] += 1.0  # one anchor of the first layer has another width than its column
    assert factor_anchor_grid(bent, cxcywh_to_xyxy(bent)) is None
    assert factor_anchor_grid(anchors[:0], anchors_xyxy[:0]) is None


def test_cache_is_keyed_on_values():
    anchors, anchors_xyxy = _both(ssd300_anchors())
    assert cached_anchor_grid(anchors, anchors_xyxy) is cached_anchor_grid(anchors.clone(), anchors_xyxy)
    moved = anchors.clone()
    moved[:, 0] += 1.0
    grid = cached_anchor_grid(moved, cxcywh_to_xyxy(moved))
    assert float(grid.x1[0][0, 0]) == float(cxcywh_to_xyxy(moved)[0, 0])


def test_generator_same_targets_with_dense_iou_and_in_chunks(monkeypatch):
    import ssdkit.targets as targets

    anchors = ssd300_anchors()
    rng = torch.Generator().manual_seed(1)
    gt = _random_gt(rng, 5, 7, size=300.0).clamp(0, 300)
    ids = torch.randint(0, 20, (5, 7), generator=rng)
    ids[:, -1] = -1
    cls_preds = torch.randn(5, 8732, 21, generator=rng)
    dense = SSDTargetGenerator(separable_iou=False)(anchors, cls_preds, gt, ids)
    monkeypatch.setattr(targets, "_CHUNK_ELEMENTS", 2 * 7 * 8732)  # chunks of 2 images: 2, 2, 1
    chunked = SSDTargetGenerator()(anchors, cls_preds, gt, ids)
    for a, b in zip(dense, chunked):
        assert torch.equal(a, b)
