"""Training-target generation speed: ssdkit vs torchvision's SSD matching vs GluonCV, side by side.

Work: a batch of 32 images x 20 ground-truth boxes on the 8732 anchors of ssd_300_vgg16_atrous_voc.

- ssdkit: ``SSDTargetGenerator`` without sampling (``negative_mining_ratio=-1``, as the training pipeline) and
  with 3:1 OHEM (needs ``cls_preds``), one batched call each, given the anchor grid (as the training pipeline);
  ``--dense-iou`` leaves the grid out.
- torchvision: what ``torchvision.models.detection.SSD`` does per image (its forward + ``compute_loss``): IoU,
  ``SSDMatcher(0.5)``, ``BoxCoder(weights=(10, 10, 5, 5)).encode_single`` of the matched boxes, class targets.
  It has no sampling step in target generation, so it is compared with ssdkit's no-sampling path.
- GluonCV (``$SSDKIT_GLUONCV_PYTHON``, the repository's ``.venv-gluoncv`` or ``--gluoncv-python``): its
  ``SSDTargetGenerator`` in a subprocess under that venv on the same inputs (written to a temporary ``.npz``);
  the subprocess times its own calls.

Every round times each implementation once (GluonCV's calls are requests to the waiting subprocess), so load
from other processes slows all columns alike. Prints medians over rounds and the ratios GluonCV / ssdkit and
torchvision / ssdkit. Two threads everywhere (torch.set_num_threads(2), OMP_NUM_THREADS=2 for MXNet).

    python benchmarks/bench_targets.py [--repeats 9] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402
from _gluoncv_side import GluonCVServer, interleaved_medians  # noqa: E402

FEATURE_SHAPES_300 = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def make_inputs(seed, batch=32, boxes=20, num_classes=20, size=300.0, n_anchors=8732):
    """Random gt boxes (10-200 px, varied aspect, inside the image), class ids and OHEM logits."""
    rs = np.random.RandomState(seed)
    w = rs.uniform(10, 200, (batch, boxes))
    h = np.clip(w * np.exp(rs.uniform(-0.7, 0.7, (batch, boxes))), 5, size)
    x1 = rs.uniform(0, 1, (batch, boxes)) * (size - w)
    y1 = rs.uniform(0, 1, (batch, boxes)) * (size - h)
    gt_boxes = np.stack([x1, y1, x1 + w, y1 + h], -1).astype(np.float32)
    gt_ids = rs.randint(0, num_classes, (batch, boxes)).astype(np.float32)
    cls_preds = rs.standard_normal((batch, n_anchors, num_classes + 1)).astype(np.float32)
    return gt_boxes, gt_ids, cls_preds


def torchvision_targets(anchors_xyxy, gt_boxes, gt_labels, matcher, coder):
    """torchvision SSD's per-image target work: IoU, SSDMatcher, encode matched boxes, class targets."""
    from torchvision.ops import box_iou

    cls_targets, box_targets = [], []
    for boxes, labels in zip(gt_boxes, gt_labels):
        matched = matcher(box_iou(boxes, anchors_xyxy))
        fg = torch.where(matched >= 0)[0]
        fg_matched = matched[fg]
        box_targets.append(coder.encode_single(boxes[fg_matched], anchors_xyxy[fg]))
        cls = torch.zeros(anchors_xyxy.shape[0], dtype=labels.dtype)
        cls[fg] = labels[fg_matched]
        cls_targets.append(cls)
    return cls_targets, box_targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="rounds; each round times every implementation once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    parser.add_argument("--dense-iou", action="store_true", help="ssdkit without the anchor grid (dense IoU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    from torchvision.models.detection._utils import BoxCoder, SSDMatcher

    from ssdkit.anchors import ssd_anchor_grid, ssd_anchors
    from ssdkit.boxes import cxcywh_to_xyxy
    from ssdkit.models import PRESETS
    from ssdkit.targets import SSDTargetGenerator

    anchors = ssd_anchors(PRESETS["ssd_300_vgg16_atrous_voc"].anchor_spec, FEATURE_SHAPES_300)  # [1, A, 4]
    gt_boxes_np, gt_ids_np, cls_preds_np = make_inputs(args.seed, n_anchors=anchors.shape[1])
    gt_boxes, gt_ids, cls_preds = (torch.from_numpy(v) for v in (gt_boxes_np, gt_ids_np, cls_preds_np))
    b, g = gt_ids.shape
    print(
        f"batch {b} images x {g} boxes, {anchors.shape[1]} anchors (ssd_300), torch threads {torch.get_num_threads()}"
    )

    grid = (
        None if args.dense_iou else ssd_anchor_grid(PRESETS["ssd_300_vgg16_atrous_voc"].anchor_spec, FEATURE_SHAPES_300)
    )
    naive = SSDTargetGenerator(negative_mining_ratio=-1)
    ohem = SSDTargetGenerator(negative_mining_ratio=3)
    anchors_xyxy = cxcywh_to_xyxy(anchors[0])
    matcher, coder = SSDMatcher(0.5), BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    labels = gt_ids.long() + 1
    jobs = {
        "ssdkit no sampling": lambda: naive(anchors, None, gt_boxes, gt_ids, anchor_grid=grid),
        "ssdkit OHEM 3:1": lambda: ohem(anchors, cls_preds, gt_boxes, gt_ids, anchor_grid=grid),
        "torchvision SSD matching": lambda: torchvision_targets(anchors_xyxy, gt_boxes, labels, matcher, coder),
    }
    # sanity: both no-sampling paths see about the same positives (torchvision has no tie fill)
    ct, _, _ = naive(anchors, None, gt_boxes, gt_ids)
    tv_cls, _ = torchvision_targets(anchors_xyxy, gt_boxes, labels, matcher, coder)
    print(f"positives: ssdkit {int((ct > 0).sum())}, torchvision {int(sum((c > 0).sum() for c in tv_cls))}")

    server = None
    with tempfile.TemporaryDirectory() as tmp:
        if os.path.exists(args.gluoncv_python):
            path = os.path.join(tmp, "targets_inputs.npz")
            np.savez(
                path, anchors_cxcywh=anchors[0].numpy(), gt_boxes=gt_boxes_np, gt_ids=gt_ids_np, cls_preds=cls_preds_np
            )
            server = GluonCVServer(args.gluoncv_python, "targets", path)
            jobs["GluonCV no sampling"] = server.job("naive")
            jobs["GluonCV OHEM 3:1"] = server.job("ohem")
        else:
            print(f"GluonCV venv not found at {args.gluoncv_python}: skipping the GluonCV column")
        try:
            results = interleaved_medians(jobs, args.repeats)
        finally:
            if server is not None:
                server.close()
    gluoncv = server is not None

    print(f"\n{'implementation':<28}{'median ms':>12}")
    for name, sec in results.items():
        print(f"{name:<28}{sec * 1e3:>12.2f}")
    print("\nratios (higher = ssdkit faster)")
    tv = results["torchvision SSD matching"] / results["ssdkit no sampling"]
    print(f"  torchvision / ssdkit (no sampling): {tv:6.2f}x   goal >= 1")
    if gluoncv:
        r_naive = results["GluonCV no sampling"] / results["ssdkit no sampling"]
        r_ohem = results["GluonCV OHEM 3:1"] / results["ssdkit OHEM 3:1"]
        print(f"  GluonCV / ssdkit (no sampling):     {r_naive:6.2f}x   goal >= 20")
        print(f"  GluonCV / ssdkit (OHEM 3:1):        {r_ohem:6.2f}x   goal >= 20")
    return 0


if __name__ == "__main__":
    sys.exit(main())
