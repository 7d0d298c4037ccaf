import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from ssdkit import PostProcessor
from ssdkit.coder import MultiClassDecoder, MultiPerClassDecoder, NormalizedBoxCenterDecoder
from ssdkit.postprocess import batched_class_nms


def reference(cls_preds, box_preds, anchors, decoder, thresh=0.45, topk=400, post=100):
    """Sequential per-image version of GluonCV's path: candidates class-major, stable sort, greedy NMS."""
    probs = torch.softmax(cls_preds, -1)
    boxes = NormalizedBoxCenterDecoder()(box_preds, anchors)
    outs = []
    for b in range(probs.shape[0]):
        if decoder == "per_class":
            ids, sc = MultiPerClassDecoder(probs.shape[-1])(probs[b : b + 1])
            ids, sc = ids[0].T.reshape(-1), sc[0].T.reshape(-1)
            bx = boxes[b].repeat(probs.shape[-1] - 1, 1)
        else:
            ids, sc = MultiClassDecoder()(probs[b : b + 1])
            ids, sc, bx = ids[0], sc[0], boxes[b]
        valid = (sc > 0.01) & (ids >= 0)
        idx = torch.nonzero(valid)[:, 0]
        order = idx[np.argsort(-sc[idx].numpy(), kind="stable")][:topk]
        iou = box_iou(bx[order], bx[order])
        same = ids[order][:, None] == ids[order][None, :]
        kept_pos = []
        for p in range(len(order)):
            if not any(same[q, p] and iou[q, p] > thresh for q in kept_pos):
                kept_pos.append(p)
        kept = order[kept_pos].tolist()
        kept = kept[:post]
        out = -torch.ones(post, 6)
        for r, i in enumerate(kept):
            out[r] = torch.cat([ids[i : i + 1].float(), sc[i : i + 1], bx[i]])
        outs.append(out)
    o = torch.stack(outs)
    return o[..., :1], o[..., 1:2], o[..., 2:]


@pytest.mark.parametrize("decoder", ["per_class", "argmax"])
def test_matches_sequential_reference(anchors300, decoder):
    g = torch.Generator().manual_seed(3)
    cls_preds = torch.randn(2, 8732, 6, generator=g)
    cls_preds[..., 0] += 3.0  # most anchors background: a realistic candidate count
    cls_preds[:, ::97, 2] += 6.0
    box_preds = torch.randn(2, 8732, 4, generator=g) * 0.3
    pp = PostProcessor(5, decoder=decoder)
    ids, scores, boxes = pp(cls_preds, box_preds, anchors300)
    rids, rscores, rboxes = reference(cls_preds, box_preds, anchors300, decoder)
    assert ids.shape == (2, 100, 1) and boxes.shape == (2, 100, 4)
    assert torch.equal(ids, rids)
    assert torch.allclose(scores, rscores, atol=1e-6)
    assert torch.allclose(boxes, rboxes, atol=1e-4)


def test_per_class_keeps_second_class_argmax_does_not(anchors300):
    # the seed's dog/cat example: one anchor, two close classes
    logits = torch.full((1, 8732, 6), -20.0)
    logits[..., 0] = 10.0
    logits[0, 0] = torch.tensor([-1, -2, 3, 4, 6.5, 6.4])
    probs = torch.softmax(logits[0, 0], -1)
    assert probs.tolist() == pytest.approx([0.000274, 0.000101, 0.014965, 0.040679, 0.495571, 0.448411], abs=1e-6)
    box = torch.zeros(1, 8732, 4)
    ids_pc, sc_pc, _ = PostProcessor(5, decoder="per_class")(logits, box, anchors300)
    ids_am, sc_am, _ = PostProcessor(5, decoder="argmax")(logits, box, anchors300)
    assert ids_pc[0, :4, 0].tolist() == [3, 4, 2, 1]  # dog, cat, person, orange (fg ids)
    assert ids_am[0, :2, 0].tolist() == [3, -1]


def test_padding_and_settings(anchors300):
    logits = torch.full((1, 8732, 3), -10.0)
    logits[..., 0] = 10.0
    logits[0, :3, 1] = 12.0  # three overlapping candidates of class 0 at the first position
    pp = PostProcessor(2)
    ids, scores, boxes = pp(logits, torch.zeros(1, 8732, 4), anchors300)
    # anchors 0..2 share a centre: 30x30 vs 42x42 IoU 0.5 > 0.45 -> suppressed; 42x21 vs 30x30 IoU ~0.55
    assert (ids[0, :, 0] >= 0).sum() == 1
    assert torch.all(ids[0, 1:] == -1) and torch.all(scores[0, 1:] == -1) and torch.all(boxes[0, 1:] == -1)
    pp.set_nms(nms_thresh=0, nms_topk=2, post_nms=5)  # NMS off, two candidates, five rows
    ids, _, _ = pp(logits, torch.zeros(1, 8732, 4), anchors300)
    assert ids.shape == (1, 5, 1) and ids[0, :, 0].tolist() == [0, 0, -1, -1, -1]
    with pytest.raises(ValueError, match="decoder"):
        pp.decoder = "max"
    with pytest.raises(ValueError, match="cls_preds"):
        pp(torch.zeros(1, 8732, 5), torch.zeros(1, 8732, 4), anchors300)


def test_batched_nms_is_greedy():
    # chain: 0 suppresses 1, 1 would suppress 2 but is itself suppressed, so 2 survives
    boxes = torch.tensor([[[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]]])
    keep = batched_class_nms(
        boxes,
        torch.tensor([[0.9, 0.8, 0.7]]),
        torch.zeros(1, 3, dtype=torch.long),
        torch.ones(1, 3, dtype=torch.bool),
        0.45,
    )
    assert keep.tolist() == [[True, False, True]]
    # different classes never suppress each other
    keep = batched_class_nms(
        boxes, torch.tensor([[0.9, 0.8, 0.7]]), torch.tensor([[0, 1, 0]]), torch.ones(1, 3, dtype=torch.bool), 0.45
    )
    assert keep.tolist() == [[True, True, True]]
