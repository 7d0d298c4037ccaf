"""Anchor generation: the per-layer grid layout produced with the anchors describes them exactly."""

import pytest
import torch

from ssdkit.anchors import AnchorGrid, ssd_anchor_grid, ssd_anchors
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.models import PRESETS

ZOO_FEATURES = {
    "ssd_300_vgg16_atrous_voc": [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)],
    "ssd_512_vgg16_atrous_coco": [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_512_resnet50_v1_voc": [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_tiny_synthetic": [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
    "ssd_tiny_custom": [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3), (1, 2)],  # a non-square input
}


@pytest.mark.parametrize("name", sorted(ZOO_FEATURES))
def test_grid_describes_the_generated_anchors(name):
    spec, shapes = PRESETS[name].anchor_spec, ZOO_FEATURES[name]
    anchors_xyxy = cxcywh_to_xyxy(ssd_anchors(spec, shapes)[0])
    grid = ssd_anchor_grid(spec, shapes)
    assert [(h, w) for h, w, _ in grid.layers] == shapes
    assert [k for _, _, k in grid.layers] == spec.anchors_per_position()
    assert grid.num_anchors == anchors_xyxy.shape[0]
    start = 0
    for h, w, k in grid.layers:  # x1, x2 constant down every column, y1, y2 along every row
        x1, y1, x2, y2 = anchors_xyxy[start : start + h * w * k].reshape(h, w, k, 4).unbind(-1)
        assert torch.equal(x1, x1[:1].expand_as(x1)) and torch.equal(x2, x2[:1].expand_as(x2))
        assert torch.equal(y1, y1[:, :1].expand_as(y1)) and torch.equal(y2, y2[:, :1].expand_as(y2))
        start += h * w * k


def test_grid_needs_one_shape_per_layer():
    spec = PRESETS["ssd_tiny_synthetic"].anchor_spec
    with pytest.raises(ValueError, match="layers"):
        ssd_anchor_grid(spec, [(4, 4)])
    assert AnchorGrid(((2, 3, 4), (1, 1, 6))).num_anchors == 30
