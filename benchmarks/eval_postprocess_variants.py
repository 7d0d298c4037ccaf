"""Post-processing variants on trained checkpoints: the same weights and images, scored under each variant.

    python benchmarks/eval_postprocess_variants.py --seed 999 runs/*/best.pt \
        --log benchmarks/results/postprocess_variants.txt
    python benchmarks/eval_postprocess_variants.py --seed 999 --val-size 2000 --variants base runs/*/last.pt


A paired comparison: every variant scores the same detector on the same images, so the differences are the
post-processing's alone (a training run's mAP moves by about 0.01 between runs). ``--seed`` draws the synthetic
validation split of another seed (the same distribution, other images), so that a variant chosen from these numbers
is not chosen on the split that the README reports; ``--val-size`` makes that split larger (less noisy), and
``--variants base`` scores the checkpoints as trained, e.g. to compare training runs on the larger split.

Variants: GluonCV's per-class NMS (IoU 0.45, top 400 candidates, 100 kept) as the base; other NMS thresholds and
limits; and a class-agnostic pass at IoU ``t`` over the per-class survivors, in which a box is suppressed by a
higher-scoring one of any class (a second class predicted on the same object is the most common false detection
of the synthetic models).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys

import torch
import torchvision

from ssdkit.engine.builders import build_datasets, build_loader, build_metric
from ssdkit.engine.config import resolve_config
from ssdkit.engine.evaluation import load_trained_model
from ssdkit.engine.validate import evaluate

# (name, nms_thresh, nms_topk, post_nms, class-agnostic IoU or None)
VARIANTS = [
    ("base", 0.45, 400, 100, None),
    ("nms0.40", 0.40, 400, 100, None),
    ("nms0.50", 0.50, 400, 100, None),
    ("top1000/200", 0.45, 1000, 200, None),
    ("xcls0.95", 0.45, 400, 100, 0.95),
    ("xcls0.90", 0.45, 400, 100, 0.90),
    ("xcls0.80", 0.45, 400, 100, 0.80),
    ("xcls0.70", 0.45, 400, 100, 0.70),
]


def with_class_agnostic_pass(forward, iou: float):
    """``forward`` of a PostProcessor followed by greedy class-agnostic NMS at ``iou`` over its (score-ordered,
    -1 padded) rows ``ids Tensor[B,P,1], scores Tensor[B,P,1], boxes_xyxy Tensor[B,P,4]``."""

    def run(cls_preds, box_preds, anchors):
        ids, scores, boxes = forward(cls_preds, box_preds, anchors)
        out = [torch.full_like(ids, -1.0), torch.full_like(scores, -1.0), torch.full_like(boxes, -1.0)]
        for i in range(ids.shape[0]):
            n = int((ids[i, :, 0] >= 0).sum())  # the kept rows are a prefix, best first
            if n:
                order = torch.arange(n, 0, -1, dtype=torch.float64)
                keep = torchvision.ops.nms(boxes[i, :n].double(), order, iou).sort().values
                for dst, src in zip(out, (ids, scores, boxes)):
                    dst[i, : keep.numel()] = src[i, keep]
        return tuple(out)

    return run


def score(path: str, seed: int | None, val_size: int | None = None, variants=VARIANTS) -> list[float]:
    """VOC07 mAP of checkpoint ``path`` under each of ``variants``, on its validation split (of ``seed``, of
    ``val_size`` images)."""
    net, cfg, ckpt = load_trained_model(path, torch.device("cpu"))
    changes: dict = dict(num_workers=0, device="cpu", resume=None)
    if seed is not None:
        changes["seed"] = seed
    if val_size is not None:
        changes["synthetic_val_size"] = val_size
    cfg = resolve_config(dataclasses.replace(cfg, **changes))
    data_shape = int(ckpt.get("data_shape") or cfg.data_shape or net.data_shape)
    _, val_set, classes = build_datasets(cfg, data_shape, train=False, val=True)
    loader, metric = build_loader(val_set, cfg, train=False), build_metric(cfg, classes, val_set, data_shape)
    post = net.postprocessor
    plain = post.forward
    maps = []
    for _, nms, topk, keep, agnostic in variants:
        post.set_nms(nms, topk, keep)
        post.forward = plain if agnostic is None else with_class_agnostic_pass(plain, agnostic)
        maps.append(float(evaluate(net, loader, metric, torch.device("cpu"))[1][-1]))
    post.forward = plain
    return maps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--seed", type=int, default=None, help="score the validation split of this seed")
    parser.add_argument("--val-size", type=int, default=None, help="images of the synthetic validation split")
    parser.add_argument(
        "--variants", default=None, help="comma-separated names to score (default: all; base is always first)"
    )
    parser.add_argument("--log", default=None, help="also append the table to this file")
    args = parser.parse_args(argv)
    names = [n for n in (args.variants or "").split(",") if n]
    unknown = sorted(set(names) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(v[0] for v in VARIANTS)}")
    variants = [v for v in VARIANTS if not names or v[0] == "base" or v[0] in names]
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    lines = [
        f"$ python {' '.join(sys.argv)}",
        f"split: validation split of seed {args.seed if args.seed is not None else 'of each checkpoint'}"
        + (f", {args.val_size} images" if args.val_size else ""),
        "checkpoint | " + " | ".join(name for name, *_ in variants) + "   (VOC07 mAP; then each minus base)",
    ]
    print("\n".join(lines), flush=True)
    diffs: list[list[float]] = []
    for path in args.checkpoints:
        maps = score(path, args.seed, args.val_size, variants)
        diffs.append([m - maps[0] for m in maps[1:]])
        line = f"{path} | " + " ".join(f"{m:.4f}" for m in maps) + " | " + " ".join(f"{d:+.4f}" for d in diffs[-1])
        lines.append(line)
        print(line, flush=True)
    columns = list(zip(*diffs))
    if columns:
        summary = "median difference to base: " + ", ".join(
            f"{name} {statistics.median(c):+.4f} [{min(c):+.4f}, {max(c):+.4f}]"
            for (name, *_), c in zip(variants[1:], columns)
        )
        lines.append(summary)
        print(summary)
    if args.log:
        with open(args.log, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
