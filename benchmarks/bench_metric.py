"""VOC07 mAP speed: ssdkit's VOC07MApMetric against GluonCV's on the same detections, side by side.

    python benchmarks/bench_metric.py [--images 5000] [--dets 100] [--repeats 3]

The inputs (``--images`` images x ``--dets`` detections, 20 classes, about 3 gts per image of which some
are difficult, float32 scores) are rebuilt from one seed with ``np.random.RandomState`` in this process
and in a subprocess running GluonCV in its virtualenv (``$SSDKIT_GLUONCV_PYTHON``, the
repository's ``.venv-gluoncv`` or ``--gluoncv-python``). Each repeat
times ``reset`` + all ``update`` calls + ``get``. Prints the median times, their ratio and whether the
two metrics report the same values. Without the GluonCV environment only ssdkit's time is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gluoncv_side import DEFAULT_PYTHON as DEFAULT_GLUONCV_PYTHON  # noqa: E402

NUM_CLASSES = 20


def make_inputs(seed: int, num_images: int, dets: int, batch_size: int, size: int = 300):
    """Batches ``(pred_bboxes [B, N, 4], pred_labels [B, N, 1], pred_scores [B, N, 1], gt_bboxes [B, M, 4],
    gt_labels [B, M, 1], gt_difficults [B, M, 1])`` of float32, padded with -1 (numpy only)."""
    rs = np.random.RandomState(seed)
    batches = []
    for start in range(0, num_images, batch_size):
        b = min(batch_size, num_images - start)
        m = 6
        n_gt = rs.randint(1, 6, size=b)  # 1..5, about 3 per image
        xy = rs.uniform(0, size - 60, size=(b, m, 2))
        wh = rs.uniform(10, 150, size=(b, m, 2))
        gt = np.concatenate([xy, np.minimum(xy + wh, size - 1)], axis=2).astype(np.float32)
        gt_lab = rs.randint(0, NUM_CLASSES, size=(b, m)).astype(np.float32)
        gt_diff = (rs.rand(b, m) < 0.1).astype(np.float32)
        pad = np.arange(m)[None, :] >= n_gt[:, None]
        gt[pad] = -1
        gt_lab[pad] = -1
        gt_diff[pad] = -1
        # detections: jittered copies of the gts (true positives and duplicates) plus random boxes
        src = rs.randint(0, m, size=(b, dets))
        near = (rs.rand(b, dets) < 0.3) & ~pad[np.arange(b)[:, None], src]
        picked = gt[np.arange(b)[:, None], src]
        span = np.concatenate([picked[..., 2:] - picked[..., :2]] * 2, axis=2)
        jittered = picked + rs.randn(b, dets, 4).astype(np.float32) * 0.1 * span
        rxy = rs.uniform(0, size - 20, size=(b, dets, 2))
        rwh = rs.uniform(10, 150, size=(b, dets, 2))
        random_boxes = np.concatenate([rxy, rxy + rwh], axis=2).astype(np.float32)
        boxes = np.where(near[..., None], jittered, random_boxes).astype(np.float32)
        labels = rs.randint(0, NUM_CLASSES, size=(b, dets))
        labels = np.where(near & (rs.rand(b, dets) < 0.9), gt_lab[np.arange(b)[:, None], src], labels)
        scores = rs.rand(b, dets).astype(np.float32)
        batches.append(
            (boxes, labels.astype(np.float32)[..., None], scores[..., None], gt, gt_lab[..., None], gt_diff[..., None])
        )
    return batches


def time_metric(metric, batches, repeats: int):
    """Wall-clock and CPU seconds of ``repeats`` full evaluations, and the last values."""
    wall, cpu, values = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        metric.reset()
        for batch in batches:
            metric.update(*batch)
        _, values = metric.get()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, [float(v) for v in values]


def report(name: str, wall: list[float], cpu: list[float]) -> None:
    print(
        f"{name} median wall {statistics.median(wall):.3f} s, cpu {statistics.median(cpu):.3f} s  "
        f"(wall runs: {', '.join(f'{t:.3f}' for t in wall)})"
    )


def gluoncv_worker(args) -> None:
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

    batches = make_inputs(args.seed, args.images, args.dets, args.batch_size)
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=[str(c) for c in range(NUM_CLASSES)])
    wall, cpu, values = time_metric(metric, batches, args.repeats)
    print(json.dumps({"wall": wall, "cpu": cpu, "values": values}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gluoncv-python", default=DEFAULT_GLUONCV_PYTHON)
    parser.add_argument("--worker", choices=["gluoncv"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "gluoncv":
        gluoncv_worker(args)
        return

    from ssdkit.metrics import VOC07MApMetric

    print(
        f"VOC07MApMetric: {args.images} images x {args.dets} detections, {NUM_CLASSES} classes, "
        f"batch {args.batch_size}, {args.repeats} repeats (update + get)"
    )
    batches = make_inputs(args.seed, args.images, args.dets, args.batch_size)
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=[str(c) for c in range(NUM_CLASSES)])
    our_wall, our_cpu, our_values = time_metric(metric, batches, args.repeats)
    report("ssdkit ", our_wall, our_cpu)

    if not os.path.exists(args.gluoncv_python):
        print(f"GluonCV environment not found at {args.gluoncv_python}: no comparison")
        return
    cmd = [
        args.gluoncv_python,
        os.path.abspath(__file__),
        "--worker",
        "gluoncv",
        "--images",
        str(args.images),
        "--dets",
        str(args.dets),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print("GluonCV worker failed:\n" + proc.stderr[-2000:])
        sys.exit(1)
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    report("GluonCV", ref["wall"], ref["cpu"])
    print(
        f"speed-up (GluonCV / ssdkit): wall {statistics.median(ref['wall']) / statistics.median(our_wall):.1f}x, "
        f"cpu {statistics.median(ref['cpu']) / statistics.median(our_cpu):.1f}x"
    )
    a = np.array(our_values)
    b = np.array(ref["values"])
    same = a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=1e-12, equal_nan=True))
    print(
        f"mAP ssdkit {a[-1]:.10f}  GluonCV {b[-1]:.10f}  all per-class values equal: {same} "
        f"(max abs diff {np.nanmax(np.abs(a - b)) if a.shape == b.shape else float('nan'):.2e})"
    )


if __name__ == "__main__":
    main()
