import pytest
import torch

from conftest import seed_tutorial_gt
from ssdkit import SSDMultiBoxLoss, SSDTargetGenerator


def reference_loss(cls_preds, box_preds, ct, bt, ratio=3, rho=1.0, min_neg=0, norm="batch"):
    """Per-image loops, written from the spec's formula."""
    out = []
    n_all = max(1.0, float((ct > 0).sum()))
    for b in range(cls_preds.shape[0]):
        logp = torch.log_softmax(cls_preds[b].double(), -1)
        pos = ct[b] > 0
        ce = -logp[torch.arange(ct.shape[1]), ct[b].clamp(min=0)]
        k = max(min_neg, int(pos.sum()) * ratio)
        negs = [i for i in torch.argsort(-ce).tolist() if ct[b, i] == 0][:k]
        cls = ce[pos].sum() + ce[negs].sum()
        d = (box_preds[b].double() - bt[b].double()).abs()
        hub = torch.where(d > rho, d - 0.5 * rho, 0.5 / rho * d * d)
        box = hub[pos].sum()
        n = n_all if norm == "batch" else max(1.0, float(pos.sum()))
        out.append(((cls + box) / n, cls / n, box / n))
    return [torch.stack(t).float() for t in zip(*out)]


@pytest.mark.parametrize("norm", ["batch", "sample"])
def test_loss_matches_reference(anchors300, norm):
    gt_boxes, gt_ids = seed_tutorial_gt()
    ct, bt, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    g = torch.Generator().manual_seed(1)
    cls_preds = torch.randn(2, 8732, 21, generator=g)
    box_preds = torch.randn(2, 8732, 4, generator=g) * 2
    ours = SSDMultiBoxLoss(normalization=norm)(cls_preds, box_preds, ct, bt)
    ref = reference_loss(cls_preds, box_preds, ct, bt, norm=norm)
    for o, r in zip(ours, ref):
        assert o.shape == (2,)
        assert torch.allclose(o, r, rtol=1e-5)


def test_batch_vs_sample_normalization(anchors300):
    gt_boxes, gt_ids = seed_tutorial_gt()
    ct, bt, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    cls_preds = torch.randn(2, 8732, 21)
    box_preds = torch.randn(2, 8732, 4)
    sb, _, _ = SSDMultiBoxLoss(normalization="batch")(cls_preds, box_preds, ct, bt)
    ss, _, _ = SSDMultiBoxLoss(normalization="sample")(cls_preds, box_preds, ct, bt)
    # batch divides by 36, sample by 13 and 23
    assert torch.allclose(sb * 36, ss * torch.tensor([13.0, 23.0]), rtol=1e-5)


def test_no_positive_gives_zero_and_min_hard_negatives_gives_gradient():
    cls_preds = torch.randn(1, 100, 5, requires_grad=True)
    box_preds = torch.randn(1, 100, 4, requires_grad=True)
    ct = torch.zeros(1, 100, dtype=torch.long)
    bt = torch.zeros(1, 100, 4)
    s, c, b = SSDMultiBoxLoss()(cls_preds, box_preds, ct, bt)
    assert torch.all(s == 0) and torch.isfinite(s).all()
    s.sum().backward()
    assert cls_preds.grad.abs().sum() == 0
    s, c, b = SSDMultiBoxLoss(min_hard_negatives=10)(cls_preds, box_preds, ct, bt)
    assert torch.isfinite(s).all() and s.item() > 0
    cls_preds.grad = None
    s.sum().backward()
    assert (cls_preds.grad.abs().sum(-1) > 0).sum() == 10


def test_ignored_anchors_are_not_mined():
    cls_preds = torch.zeros(1, 6, 3)
    cls_preds[0, :, 0] = torch.tensor([0, -9, -1, -2, 3, 3.0])  # anchor 1 is the hardest but ignored
    ct = torch.tensor([[1, -1, 0, 0, 0, 0]])
    s, c, _ = SSDMultiBoxLoss(negative_mining_ratio=1)(cls_preds, torch.zeros(1, 6, 4), ct, torch.zeros(1, 6, 4))
    logp = torch.log_softmax(cls_preds[0], -1)
    expected = -(logp[0, 1] + logp[3, 0])  # the positive + the hardest non-ignored negative (anchor 3)
    assert torch.allclose(c, expected[None], rtol=1e-6)


def test_bad_shapes():
    loss = SSDMultiBoxLoss()
    with pytest.raises(ValueError, match="cls_targets"):
        loss(torch.zeros(2, 5, 3), torch.zeros(2, 5, 4), torch.zeros(3, 5), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="box_preds"):
        loss(torch.zeros(2, 5, 3), torch.zeros(2, 5, 2), torch.zeros(2, 5), torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="class id"):
        loss(torch.zeros(1, 5, 3), torch.zeros(1, 5, 4), torch.full((1, 5), 3), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="normalization"):
        SSDMultiBoxLoss(normalization="per_image")


def test_autocast_safe():
    cls_preds = torch.randn(1, 50, 4).bfloat16()
    box_preds = torch.randn(1, 50, 4).bfloat16()
    ct = torch.zeros(1, 50, dtype=torch.long)
    ct[0, :3] = 2
    s, _, _ = SSDMultiBoxLoss()(cls_preds, box_preds, ct, torch.zeros(1, 50, 4))
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
