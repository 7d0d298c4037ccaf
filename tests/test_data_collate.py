"""detection_collate padding and TargetCollate."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from ssdkit.data import BadSampleLog, TargetCollate, compute_ssd_targets, detection_collate
from ssdkit.data.collate import nonempty_batches
from ssdkit.data.errors import DroppedSample, NoValidSampleError


def item(n_boxes, size=8, label_base=0, bad=()):
    boxes = torch.arange(n_boxes * 4, dtype=torch.float32).reshape(n_boxes, 4)
    boxes[:, 2:] += 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(size, size)),
        "labels": torch.arange(n_boxes, dtype=torch.int64) + label_base,
        "difficult": (torch.arange(n_boxes) % 2).to(torch.uint8),
        "image_id": f"id{n_boxes}",
        "path": f"p{n_boxes}.jpg",
        "orig_size": (size * 2, size * 3),
        "bad_samples": list(bad),
    }
    return tv_tensors.Image(torch.full((3, size, size), float(n_boxes))), target


def test_pads_with_minus_one_to_the_largest_image():
    batch = detection_collate([item(2), item(0), item(3, label_base=5)])
    assert batch["images"].shape == (3, 3, 8, 8) and type(batch["images"]) is torch.Tensor
    assert batch["gt_boxes"].shape == (3, 3, 4) and batch["gt_boxes"].dtype == torch.float32
    assert batch["gt_ids"].dtype == torch.int64 and batch["difficult"].dtype == torch.int64
    assert batch["gt_ids"].tolist() == [[0, 1, -1], [-1, -1, -1], [5, 6, 7]]
    assert batch["difficult"].tolist() == [[0, 1, -1], [-1, -1, -1], [0, 1, 0]]
    assert (batch["gt_boxes"][0, 2] == -1).all() and (batch["gt_boxes"][1] == -1).all()
    torch.testing.assert_close(batch["gt_boxes"][2], item(3)[1]["boxes"].as_subclass(torch.Tensor))
    assert batch["num_boxes"].tolist() == [2, 0, 3]
    assert batch["image_ids"] == ["id2", "id0", "id3"] and batch["paths"] == ["p2.jpg", "p0.jpg", "p3.jpg"]
    assert batch["orig_sizes"].tolist() == [[16, 24]] * 3


def test_all_empty_images_still_give_one_padding_row():
    batch = detection_collate([item(0), item(0)])
    assert batch["gt_boxes"].shape == (2, 1, 4) and (batch["gt_ids"] == -1).all()


def test_bad_sample_reports_are_gathered():
    batch = detection_collate(
        [
            item(1, bad=[("x.jpg", "cannot decode")]),
            item(1),
            item(2, bad=[("y.xml", "degenerate"), ("x.jpg", "cannot decode")]),
        ]
    )
    assert batch["bad_samples"] == [("x.jpg", "cannot decode"), ("y.xml", "degenerate"), ("x.jpg", "cannot decode")]
    log = BadSampleLog()
    assert log.record_batch(batch) == 2 and log.paths == ["x.jpg", "y.xml"]


def test_dropped_items_are_left_out_and_their_problems_kept():
    gone = DroppedSample([("x.jpg", "cannot decode")])
    batch = detection_collate([gone, item(2), gone, item(1, bad=[("y.xml", "degenerate")])])
    assert batch["images"].shape == (2, 3, 8, 8) and batch["image_ids"] == ["id2", "id1"]
    assert batch["gt_boxes"].shape == (2, 2, 4) and batch["num_boxes"].tolist() == [2, 1]
    assert batch["dropped"] == 2 and detection_collate([item(1)])["dropped"] == 0
    assert batch["bad_samples"] == [("x.jpg", "cannot decode"), ("x.jpg", "cannot decode"), ("y.xml", "degenerate")]


def test_a_batch_of_dropped_items_has_no_image():
    batch = detection_collate([DroppedSample([("x.jpg", "empty")])])
    assert batch["images"].shape == (0, 3, 0, 0) and batch["gt_boxes"].shape == (0, 1, 4)
    assert batch["gt_ids"].shape == batch["difficult"].shape == (0, 1) and batch["orig_sizes"].shape == (0, 2)
    assert batch["image_ids"] == batch["paths"] == [] and batch["num_boxes"].tolist() == []
    assert (batch["dropped"], batch["bad_samples"]) == (1, [("x.jpg", "empty")])


def test_nonempty_batches_pass_empty_ones_over_and_keep_their_reports():
    def gone(name):
        return DroppedSample([(name, "cannot decode")])

    batches = [[gone("a.jpg")], [item(1)], [gone("b.jpg"), gone("c.jpg")], [item(2)], [gone("d.jpg")]]
    out = list(nonempty_batches(detection_collate(b) for b in batches))
    assert [b["image_ids"] for b in out] == [["id1"], ["id2"]]
    log = BadSampleLog()
    for b in out:
        log.record_batch(b)
    assert log.paths == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"] and log.dropped == 4
    assert list(nonempty_batches([])) == []


def test_nonempty_batches_of_nothing_but_dropped_items_is_an_error():
    batches = [detection_collate([DroppedSample([(f"{k}.jpg", "empty")])]) for k in range(2)]
    with pytest.raises(NoValidSampleError, match=r"^none of its 2 images can be read \(0.jpg: empty; 1.jpg: empty\)$"):
        list(nonempty_batches(batches))


def test_a_share_of_nothing_but_dropped_items_carries_them_in_one_batch_without_images():
    """One process's share of an evaluation: the other shares may hold images, so it is not an error here."""
    batches = [detection_collate([DroppedSample([(f"{k}.jpg", "empty")])]) for k in range(2)]
    (carrier,) = list(nonempty_batches(batches, share=True))
    assert len(carrier["images"]) == 0 and carrier["dropped"] == 2
    log = BadSampleLog()
    log.record_batch(carrier)
    assert log.paths == ["0.jpg", "1.jpg"] and log.dropped == 2


def test_rejects_mixed_image_sizes_and_bad_items():
    with pytest.raises(ValueError, match="share one shape"):
        detection_collate([item(1, size=8), item(1, size=9)])
    with pytest.raises(ValueError, match="not an \\(image, target dict\\) pair"):
        detection_collate([torch.zeros(3, 8, 8)])
    with pytest.raises(ValueError, match="empty batch"):
        detection_collate([])


class RecordingGenerator:
    """Stands in for SSDTargetGenerator: records its inputs, marks anchors by the first gt id."""

    def __init__(self):
        self.calls = []

    def __call__(self, anchors, cls_preds, gt_boxes, gt_ids):
        self.calls.append((anchors, cls_preds, gt_boxes, gt_ids))
        b, a = gt_boxes.shape[0], anchors.shape[1]
        cls_targets = (gt_ids[:, :1] + 1).expand(b, a).to(torch.int64)
        return cls_targets, torch.zeros(b, a, 4), torch.zeros(b, a, 4)


def test_target_collate_runs_the_generator_on_the_padded_batch():
    anchors = torch.rand(5, 4)
    gen = RecordingGenerator()
    collate = TargetCollate(anchors, target_generator=gen)
    batch = collate([item(2, label_base=3), item(0)])
    ((a, preds, gt_boxes, gt_ids),) = gen.calls
    assert a.shape == (1, 5, 4) and preds is None
    assert gt_boxes.shape == (2, 2, 4) and gt_ids.dtype == torch.float32
    assert gt_ids.tolist() == [[3.0, 4.0], [-1.0, -1.0]]
    assert batch["cls_targets"].shape == (2, 5) and batch["cls_targets"][:, 0].tolist() == [4, 0]
    assert batch["box_targets"].shape == (2, 5, 4)
    with pytest.raises(ValueError, match="anchors_cxcywh"):
        TargetCollate(torch.rand(2, 5, 4), target_generator=gen)


def test_target_collate_passes_the_anchor_grid_on():
    from ssdkit.anchors import AnchorGrid

    seen = []

    def gen(anchors, cls_preds, gt_boxes, gt_ids, anchor_grid=None):
        seen.append(anchor_grid)
        return RecordingGenerator()(anchors, cls_preds, gt_boxes, gt_ids)

    grid = AnchorGrid(((1, 1, 2), (1, 1, 3)))
    TargetCollate(torch.rand(5, 4), target_generator=gen, anchor_grid=grid)([item(1)])
    TargetCollate(torch.rand(5, 4), target_generator=gen)([item(1)])
    assert seen == [grid, None]
    with pytest.raises(ValueError, match="anchor_grid describes 5 anchors"):
        TargetCollate(torch.rand(6, 4), target_generator=gen, anchor_grid=grid)


def test_target_collate_with_the_real_generator():
    from ssdkit.targets import SSDTargetGenerator

    anchors = torch.tensor([[[2.0, 2.0, 4.0, 4.0], [6.0, 6.0, 4.0, 4.0], [4.0, 4.0, 8.0, 8.0]]])
    cls_t, box_t = compute_ssd_targets(
        SSDTargetGenerator(negative_mining_ratio=-1),
        anchors,
        torch.tensor([[[0.0, 0.0, 4.0, 4.0], [-1, -1, -1, -1]]]),
        torch.tensor([[2, -1]]),
    )
    assert cls_t.shape == (1, 3) and box_t.shape == (1, 3, 4)
    assert int(cls_t[0, 0]) == 3  # class 2 -> target 3 (0 is background)


def test_target_collate_takes_the_anchors_of_the_batch_image_size():
    from ssdkit.anchors import AnchorGrid

    seen = []

    def gen(anchors, cls_preds, gt_boxes, gt_ids, anchor_grid=None):
        seen.append((anchors.shape[1], anchor_grid))
        return RecordingGenerator()(anchors, cls_preds, gt_boxes, gt_ids)

    small_grid = AnchorGrid(((1, 1, 3),))
    collate = TargetCollate(
        torch.rand(5, 4), target_generator=gen, other_sizes={(6, 6): (torch.rand(3, 4), small_grid)}
    )
    assert collate([item(1, size=6)])["cls_targets"].shape == (1, 3)  # the 6 x 6 images: their 3 anchors
    assert collate([item(1, size=8)])["cls_targets"].shape == (1, 5)  # any other size: the main anchors
    assert seen == [(3, small_grid), (5, None)]
    with pytest.raises(ValueError, match="anchor_grid describes 3 anchors"):
        TargetCollate(torch.rand(5, 4), target_generator=gen, other_sizes={(6, 6): (torch.rand(4, 4), small_grid)})


def test_target_collate_adds_the_positives_weights_when_the_generator_weighs_objects():
    from ssdkit import SSDTargetGenerator

    anchors = torch.tensor([[[10.0, 10, 8, 8], [11, 10, 8, 8], [30, 30, 20, 20], [50, 50, 8, 8]]])
    image, target = item(2, size=64)
    target["boxes"] = tv_tensors.BoundingBoxes([[6, 6, 14, 14], [20, 20, 40, 40]], format="XYXY", canvas_size=(64, 64))
    batch = [(image, target)]
    plain = TargetCollate(anchors, SSDTargetGenerator(negative_mining_ratio=-1))(batch)
    assert "pos_weights" not in plain  # GluonCV's loss: every positive counts once
    weighted = TargetCollate(anchors, SSDTargetGenerator(negative_mining_ratio=-1, positive_weights="object"))(batch)
    assert torch.equal(weighted["cls_targets"], plain["cls_targets"])
    assert weighted["cls_targets"].tolist() == [[1, 1, 2, 0]]
    # 3 positives of 2 objects: the small box's two anchors share what the large box's one anchor gets
    assert torch.allclose(weighted["pos_weights"], torch.tensor([[0.75, 0.75, 1.5, 0.0]]))
