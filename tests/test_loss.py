import pytest
import torch

from ssdkit import SSDMultiBoxLoss, SSDTargetGenerator

from conftest import seed_tutorial_gt


def reference_loss(cls_preds, box_preds, ct, bt, ratio=3, rho=1.0, min_neg=0, norm="batch", weights=None):
    """Per-image loops, written from the spec's formula; ``weights`` scale each positive's terms."""
    out = []
    n_all = max(1.0, float((ct > 0).sum()))
    for b in range(cls_preds.shape[0]):
        logp = torch.log_softmax(cls_preds[b].double(), -1)
        pos = ct[b] > 0
        ce = -logp[torch.arange(ct.shape[1]), ct[b].clamp(min=0)]
        k = max(min_neg, int(pos.sum()) * ratio)
        negs = [i for i in torch.argsort(-ce).tolist() if ct[b, i] == 0][:k]
        w = torch.ones(ct.shape[1], dtype=torch.float64) if weights is None else weights[b].double()
        cls = (ce[pos] * w[pos]).sum() + ce[negs].sum()
        d = (box_preds[b].double() - bt[b].double()).abs()
        hub = torch.where(d > rho, d - 0.5 * rho, 0.5 / rho * d * d)
        box = (hub[pos] * w[pos, None]).sum()
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


@pytest.mark.parametrize("norm", ["batch", "sample"])
def test_positive_weights_scale_the_positives_terms_only(anchors300, norm):
    gt_boxes, gt_ids = seed_tutorial_gt()
    ct, bt, _ = SSDTargetGenerator(negative_mining_ratio=-1)(anchors300, None, gt_boxes, gt_ids)
    torch.manual_seed(1)
    cls_preds, box_preds = torch.randn(2, 8732, 21), torch.randn(2, 8732, 4)
    loss = SSDMultiBoxLoss(normalization=norm)
    plain = loss(cls_preds, box_preds, ct, bt)
    # weights of 1 on the positives (anything elsewhere) are the unweighted loss, bit for bit
    ones = torch.where(ct > 0, 1.0, 7.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, loss(cls_preds, box_preds, ct, bt, ones)))
    torch.manual_seed(2)
    w = torch.where(ct > 0, torch.rand(2, 8732) * 3, 5.0)
    got = loss(cls_preds, box_preds, ct, bt, w)
    want = reference_loss(cls_preds, box_preds, ct, bt, norm=norm, weights=torch.where(ct > 0, w, 0.0))
    for g, e in zip(got, want):
        assert torch.allclose(g, e, rtol=1e-5)
    # object-balanced weights keep the loss's scale: the same loss when all predictions are equally wrong
    _, _, _, wo = SSDTargetGenerator(negative_mining_ratio=-1, positive_weights="object")(
        anchors300, None, gt_boxes, gt_ids, return_weights=True
    )
    assert not torch.allclose(wo, (ct > 0).float())
    flat = torch.zeros(2, 8732, 21)
    same_box = bt + 0.5
    for g, e in zip(loss(flat, same_box, ct, bt), loss(flat, same_box, ct, bt, wo)):
        assert torch.allclose(g, e, rtol=1e-5)


def test_bad_shapes():
    loss = SSDMultiBoxLoss()
    with pytest.raises(ValueError, match="pos_weights"):
        loss(torch.zeros(2, 5, 3), torch.zeros(2, 5, 4), torch.zeros(2, 5), torch.zeros(2, 5, 4), torch.ones(2, 4))
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


# --- the two normalizations on one scale (SSDMultiBoxLoss.batch_loss, as the trainer reduces them) ---

NUM_CLASSES = 3


def _targets(positives_per_image, anchors=48, seed=0):
    """``cls_targets Tensor[B, anchors]`` with the given positive count per image, random classes and places."""
    g = torch.Generator().manual_seed(seed)
    ct = torch.zeros(len(positives_per_image), anchors, dtype=torch.long)
    for i, n in enumerate(positives_per_image):
        where = torch.randperm(anchors, generator=g)[:n]
        ct[i, where] = torch.randint(1, NUM_CLASSES + 1, (n,), generator=g)
    return ct, torch.randn(len(positives_per_image), anchors, 4, generator=g)


def _losses_and_grads(norm, ct, bt, seed=1):
    g = torch.Generator().manual_seed(seed)
    cls_preds = torch.randn(*ct.shape, NUM_CLASSES + 1, generator=g).requires_grad_()
    box_preds = torch.randn(*ct.shape, 4, generator=g).requires_grad_()
    loss_fn = SSDMultiBoxLoss(normalization=norm)
    per_image = loss_fn(cls_preds, box_preds, ct, bt)
    total, cls_total, box_total = loss_fn.batch_loss(*per_image)
    total.backward()
    return per_image, (total, cls_total, box_total), (cls_preds.grad, box_preds.grad)


def test_equal_positives_give_identical_losses_and_gradients():
    ct, bt = _targets([5, 5, 5, 5])
    per_b, tot_b, grad_b = _losses_and_grads("batch", ct, bt)
    per_s, tot_s, grad_s = _losses_and_grads("sample", ct, bt)
    # per image the values keep their own scale (the tutorial's): sample = batch * B
    torch.testing.assert_close(per_s[0], per_b[0] * 4)
    for a, b in zip(tot_b, tot_s):
        torch.testing.assert_close(a, b)
    for a, b in zip(grad_b, grad_s):
        torch.testing.assert_close(a, b)


def test_unequal_positives_differ_as_documented():
    counts = [1, 4, 10]
    ct, bt = _targets(counts)
    per_b, tot_b, grad_b = _losses_and_grads("batch", ct, bt)
    _, tot_s, _ = _losses_and_grads("sample", ct, bt)
    raw = per_b[0] * sum(counts)  # each image's unnormalized loss L_i
    n = torch.tensor(counts, dtype=torch.float32)
    torch.testing.assert_close(tot_b[0], raw.sum() / sum(counts))  # sum_i L_i / N
    torch.testing.assert_close(tot_s[0], (raw / n).mean())  # mean_i L_i / n_i
    assert not torch.allclose(tot_b[0], tot_s[0])
    # image i's weight: 1 / N batch-wise, 1 / (B n_i) sample-wise: the one-positive image counts 12 / 3 = 4x more
    _, _, grad_s = _losses_and_grads("sample", ct, bt)
    for i, n_i in enumerate(counts):
        torch.testing.assert_close(grad_s[0][i], grad_b[0][i] * sum(counts) / (len(counts) * n_i))


class _GridDetector(torch.nn.Module):
    """A detector without batch norm: a step on a batch split over processes equals the step on the whole."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, NUM_CLASSES + 1 + 4, 2, 2)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, NUM_CLASSES + 1 + 4)
        return y[..., : NUM_CLASSES + 1], y[..., NUM_CLASSES + 1 :], None


def _train_step(cfg, say, rank, world):
    """One step of the trainer (``train_one_epoch``) on this process's share of 4 images with 6 positives each."""
    from ssdkit.engine.trainer import train_one_epoch

    torch.manual_seed(0)
    net = _GridDetector()
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    ct, bt = _targets([6, 6, 6, 6], anchors=16)
    images = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    share = slice(rank * 4 // world, (rank + 1) * 4 // world)
    batch = {"images": images[share], "cls_targets": ct[share], "box_targets": bt[share]}
    stats = train_one_epoch(
        model,
        [batch],
        SSDMultiBoxLoss(normalization=cfg.loss_norm),
        optimizer,
        scheduler,
        torch.device("cpu"),
        0,
        log_interval=1,
        progress=False,
    )
    return [p.detach().clone() for p in net.parameters()], stats["loss"]


def test_equal_positives_train_the_same_step_in_both_arms_in_one_and_two_processes():
    from ssdkit.engine.config import TrainConfig
    from ssdkit.engine.distributed import run_in_processes

    batch_params, batch_loss = _train_step(TrainConfig(loss_norm="batch"), None, 0, 1)
    sample_params, sample_loss = _train_step(TrainConfig(loss_norm="sample"), None, 0, 1)
    split_params, split_loss = run_in_processes(_train_step, TrainConfig(procs=2, loss_norm="sample"), lambda m: None)
    assert sample_loss == pytest.approx(batch_loss, rel=1e-6) and split_loss == pytest.approx(batch_loss, rel=1e-5)
    for a, b, c in zip(batch_params, sample_params, split_params):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert not torch.allclose(batch_params[0], _GridDetector().conv.weight)  # the step moved the weights
