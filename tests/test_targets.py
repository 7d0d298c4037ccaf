import pytest
import torch

from ssdkit import SSDTargetGenerator

from conftest import seed_tutorial_gt


def test_seed_tutorial_counts(anchors300):
    gt_boxes, gt_ids = seed_tutorial_gt()
    torch.manual_seed(0)
    cls_preds = torch.randn(2, 8732, 21)
    ct, bt, bm = SSDTargetGenerator()(anchors300, cls_preds, gt_boxes, gt_ids)
    assert int((ct > 0).sum()) == 36
    assert (ct > 0).sum(1).tolist() == [13, 23]
    assert (ct == 0).sum(1).tolist() == [39, 69]
    assert (ct == -1).sum(1).tolist() == [8680, 8640]
    assert torch.equal(bm[..., 0] > 0, ct > 0)
    assert torch.all(bt[ct <= 0] == 0)
    assert set(ct[0][ct[0] > 0].tolist()) == {2}
    naive, _, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    assert (naive > 0).sum(1).tolist() == [13, 23]
    assert (naive == 0).sum(1).tolist() == [8719, 8709]


def test_box_targets_decode_back(anchors300):
    from ssdkit.coder import NormalizedBoxCenterDecoder

    gt_boxes, gt_ids = seed_tutorial_gt()
    ct, bt, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    dec = NormalizedBoxCenterDecoder()(bt, anchors300)
    # every positive anchor decodes back to a gt box of its image
    for b in range(2):
        pos = ct[b] > 0
        got = dec[b][pos]
        d = (got[:, None, :] - gt_boxes[b][None]).abs().amax(-1).min(-1).values
        assert torch.all(d < 1e-3)


def test_empty_image_is_all_background(anchors300):
    ct, bt, bm = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, -torch.ones(1, 3, 4), -torch.ones(1, 3))
    assert torch.all(ct == 0) and torch.all(bt == 0) and torch.all(bm == 0)
    ct, _, _ = SSDTargetGenerator()(anchors300, torch.randn(1, 8732, 21), -torch.ones(1, 2, 4), -torch.ones(1, 2))
    assert torch.all(ct <= 0)
    # zero columns at all
    ct, _, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, torch.zeros(2, 0, 4), torch.zeros(2, 0))
    assert ct.shape == (2, 8732) and torch.all(ct == 0)


@pytest.mark.parametrize(
    "boxes,ids,msg",
    [
        ([[[0, 0, float("nan"), 10]]], [[0]], "NaN or inf"),
        ([[[0, 0, 10, float("inf")]]], [[0]], "NaN or inf"),
        ([[[20, 0, 10, 10]]], [[0]], "xmax < xmin"),
        ([[[0, 0, 10, 10]]], [[0], [1]], "batch size"),
        ([[0, 0, 10, 10]], [[0]], r"\[B, G, 4\]"),
        ([[[0, 0, 10, 10]]], [[25]], "out of range"),
    ],
)
def test_bad_input(anchors300, boxes, ids, msg):
    gen = SSDTargetGenerator(negative_mining_ratio=-1, num_classes=20)
    with pytest.raises(ValueError, match=msg):
        gen(anchors300, None, torch.tensor(boxes, dtype=torch.float32), torch.tensor(ids, dtype=torch.float32))


def test_ohem_needs_cls_preds(anchors300):
    gt_boxes, gt_ids = seed_tutorial_gt()
    with pytest.raises(ValueError, match="cls_preds"):
        SSDTargetGenerator()(anchors300, None, gt_boxes, gt_ids)
    with pytest.raises(ValueError, match="cls_preds must have shape"):
        SSDTargetGenerator()(anchors300, torch.randn(3, 8732, 21), gt_boxes, gt_ids)


def test_integer_ids_and_column_ids(anchors300):
    gt_boxes, gt_ids = seed_tutorial_gt()
    gen = SSDTargetGenerator(negative_mining_ratio=-1)
    a = gen(anchors300, None, gt_boxes, gt_ids)[0]
    b = gen(anchors300, None, gt_boxes, gt_ids.long()[..., None])[0]
    assert torch.equal(a, b)


def test_same_targets_with_the_anchor_grid_and_in_chunks(anchors300, grid300, monkeypatch):
    import ssdkit.targets as targets

    rng = torch.Generator().manual_seed(1)
    xy = torch.rand(5, 7, 2, generator=rng) * 300
    wh = torch.rand(5, 7, 2, generator=rng) * 200
    gt = torch.cat([xy - wh / 2, xy + wh / 2], -1).clamp(0, 300)
    ids = torch.randint(0, 20, (5, 7), generator=rng)
    ids[:, -1] = -1
    cls_preds = torch.randn(5, 8732, 21, generator=rng)
    dense = SSDTargetGenerator()(anchors300, cls_preds, gt, ids)
    monkeypatch.setattr(targets, "_CHUNK_ELEMENTS", 2 * 7 * 8732)  # chunks of 2 images: 2, 2, 1
    chunked = SSDTargetGenerator()(anchors300, cls_preds, gt, ids, anchor_grid=grid300)
    for a, b in zip(dense, chunked):
        assert torch.equal(a, b)
    assert (dense[0] > 0).any()
