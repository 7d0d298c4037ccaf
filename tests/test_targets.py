import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _match_of(rows):
    return torch.tensor(rows, dtype=torch.long)


def test_object_balanced_weights_give_every_object_of_an_image_the_same_share():
    from ssdkit.targets import object_balanced_weights

    match = _match_of([[0, 0, 1, 1, 1, 1, -1, 2], [-1] * 8, [-1, 3, -1, -1, -1, -1, -1, -1]])
    w = object_balanced_weights(match, num_objects=4)
    # 7 positives of 3 objects: each object's positives share 7/3
    assert torch.allclose(w[0], torch.tensor([7 / 6, 7 / 6, 7 / 12, 7 / 12, 7 / 12, 7 / 12, 0, 7 / 3]))
    assert torch.equal(w[1], torch.zeros(8))  # no positives, no weight
    assert w[2].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # one object alone keeps weight 1
    assert torch.equal(object_balanced_weights(match), w)  # the object count found from match
    assert object_balanced_weights(torch.zeros(0, 5, dtype=torch.long)).shape == (0, 5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-1, 5), min_size=1, max_size=40), min_size=1, max_size=4))
def test_object_balanced_weights_keep_each_images_total_and_balance_its_objects(rows):
    from ssdkit.targets import object_balanced_weights

    width = max(len(r) for r in rows)
    match = _match_of([r + [-1] * (width - len(r)) for r in rows])
    w = object_balanced_weights(match, num_objects=6)
    pos = match >= 0
    assert torch.all(w[~pos] == 0) and torch.all(w[pos] > 0)
    assert torch.allclose(w.sum(1), pos.sum(1).float())  # the loss normalized by the positives keeps its scale
    for i in range(match.shape[0]):
        shares = [float(w[i][match[i] == g].sum()) for g in range(6) if bool((match[i] == g).any())]
        assert all(abs(s - shares[0]) < 1e-4 for s in shares)


def test_the_generator_returns_the_positives_weights_on_request(anchors300):
    gt_boxes, gt_ids = seed_tutorial_gt()
    plain = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    assert len(plain) == 3  # GluonCV's three outputs unless asked
    ct, bt, bm, w = SSDTargetGenerator(negative_mining_ratio=-1)(
        anchors300, None, gt_boxes, gt_ids, return_weights=True
    )
    assert torch.equal(ct, plain[0]) and torch.equal(bt, plain[1]) and torch.equal(w, (ct > 0).float())
    ct_o, bt_o, _, w_o = SSDTargetGenerator(negative_mining_ratio=-1, positive_weights="object")(
        anchors300, None, gt_boxes, gt_ids, return_weights=True
    )
    assert torch.equal(ct_o, ct) and torch.equal(bt_o, bt)  # the targets are the same, only their weights differ
    assert torch.equal(w_o > 0, ct > 0) and torch.allclose(w_o.sum(1), (ct > 0).sum(1).float())
    assert not torch.allclose(w_o, w)
    with pytest.raises(ValueError, match="positive_weights"):
        SSDTargetGenerator(positive_weights="box")
