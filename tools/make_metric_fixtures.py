"""Regenerate the GluonCV reference fixtures for ssdkit's detection metrics.

Run under the GluonCV virtualenv (numpy 1.23, mxnet, gluoncv, pycocotools; ``tools/make_gluoncv_venv.sh``)::

    .venv-gluoncv/bin/python tools/make_metric_fixtures.py

Writes ``tests/data/metric_voc.npz`` (per-class AP and mAP of GluonCV's VOC07MApMetric and VOCMApMetric
on seeded random detections), ``tests/data/metric_sort.npz`` (NumPy 1.23 ``argsort`` permutations on
arrays with ties, which GluonCV's tie order depends on) and, when pycocotools is importable here,
``tests/data/metric_coco.npz`` (GluonCV's COCODetectionMetric on a tiny hand-made data set).

The inputs are not stored: :func:`make_voc_case`, :func:`to_batches`, :func:`make_sort_cases` and
:func:`make_coco_case` rebuild them from a seed with ``np.random.RandomState`` (whose stream is frozen
across NumPy versions); the tests import these functions from this file and check a checksum of the
inputs. The module imports only numpy at the top, so the tests can load it without mxnet.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, os.pardir, "tests", "data")

NUM_CLASSES = 20
CLASS_NAMES = [f"c{i:02d}" for i in range(NUM_CLASSES)]
# class 16: only difficult gts (AP nan), class 17: gts but never predicted (AP 0),
# classes 18 and 19: predicted but never in the gts (AP nan).
ALL_DIFFICULT_CLASS, UNPREDICTED_CLASS, GT_CLASSES = 16, 17, 18
PRED_CLASSES = [c for c in range(NUM_CLASSES) if c != UNPREDICTED_CLASS]

VOC_SCENARIOS = {
    # name: (seed, num_images, score_levels (0 = continuous float32), batch_size)
    "quantized": (0, 300, 20, 16),
    "continuous": (1, 200, 0, 8),
    "coarse": (2, 150, 4, 32),
}
VOC_RUNS = [
    # (scenario, iou_thresh, use_difficult_flags)
    ("quantized", 0.5, True),
    ("quantized", 0.7, True),
    ("quantized", 0.5, False),
    ("continuous", 0.5, True),
    ("coarse", 0.5, True),
    ("coarse", 0.3, True),
]


def run_key(scenario: str, iou_thresh: float, difficult: bool) -> str:
    return f"{scenario}_iou{int(round(iou_thresh * 100))}_{'diff' if difficult else 'nodiff'}"


# --------------------------------------------------------------------------------------------------
# Inputs (pure numpy; identical in every NumPy version)
# --------------------------------------------------------------------------------------------------


def make_voc_case(seed: int, num_images: int, score_levels: int, size: int = 300) -> list[dict]:
    """Per-image dicts with float32 ``pred_bboxes [N, 4]``, ``pred_labels [N]``, ``pred_scores [N]``,
    ``gt_bboxes [M, 4]``, ``gt_labels [M]``, ``gt_difficults [M]``.

    Covers: images without detections or without gts, jittered true positives, duplicates, wrong
    classes, random false positives, detections on difficult gts, IoU of exactly 0.5, many equal scores
    (``score_levels`` > 0) and a few images with more than 16 same-class detections with tied scores.
    """
    rs = np.random.RandomState(seed)

    def score(n: int) -> np.ndarray:
        if score_levels:
            return (rs.randint(1, score_levels + 1, size=n) / float(score_levels)).astype(np.float32)
        return rs.rand(n).astype(np.float32)

    images = []
    for _ in range(num_images):
        m = rs.randint(0, 7)
        wh = rs.randint(5, 120, size=(m, 2))
        x1 = rs.randint(0, size - 5, size=m)
        y1 = rs.randint(0, size - 5, size=m)
        gt = np.stack([x1, y1, np.minimum(x1 + wh[:, 0], size - 1), np.minimum(y1 + wh[:, 1], size - 1)], 1)
        gt = gt.astype(np.float32).reshape(m, 4)
        gl = rs.randint(0, GT_CLASSES, size=m)
        gd = (rs.rand(m) < 0.15) | (gl == ALL_DIFFICULT_CLASS)
        boxes, labels, scores = [], [], []
        for j in range(m):
            w = gt[j, 2] - gt[j, 0] + 1
            h = gt[j, 3] - gt[j, 1] + 1
            label = gl[j] if gl[j] != UNPREDICTED_CLASS else rs.randint(0, 16)
            for _copy in range(rs.choice([0, 1, 1, 1, 2, 3])):
                jitter = rs.randn(4) * np.array([w, h, w, h]) * rs.choice([0.02, 0.1, 0.3])
                lab = label if rs.rand() > 0.1 else rs.choice(PRED_CLASSES)
                boxes.append(gt[j] + jitter.astype(np.float32))
                labels.append(lab)
                scores.append(score(1)[0])
            if rs.rand() < 0.15 and w % 3 == 0:  # shifted by a third of the +1 width: IoU exactly 0.5
                boxes.append(gt[j] + np.array([w / 3, 0, w / 3, 0], dtype=np.float32))
                labels.append(label)
                scores.append(score(1)[0])
        for _ in range(rs.randint(0, 6)):  # background false positives
            bx = rs.randint(0, size - 5, size=2)
            bwh = rs.randint(5, 150, size=2)
            boxes.append(np.array([bx[0], bx[1], bx[0] + bwh[0], bx[1] + bwh[1]], dtype=np.float32))
            labels.append(rs.choice(PRED_CLASSES))
            scores.append(score(1)[0])
        if m and rs.rand() < 0.05:  # a crowd of same-class detections with tied scores
            j = rs.randint(0, m)
            k = rs.randint(17, 40)
            jitter = rs.randn(k, 4).astype(np.float32) * 4
            boxes.extend(list(gt[j] + jitter))
            labels.extend([gl[j] if gl[j] != UNPREDICTED_CLASS else 0] * k)
            scores.extend(list((rs.randint(1, 4, size=k) / 4.0).astype(np.float32)))
        if rs.rand() < 0.1:  # an image the detector found nothing in
            boxes, labels, scores = [], [], []
        perm = rs.permutation(len(boxes))
        pb = np.array(boxes, dtype=np.float32).reshape(-1, 4)[perm]
        pl = np.array(labels, dtype=np.float32).reshape(-1)[perm]
        ps = np.array(scores, dtype=np.float32).reshape(-1)[perm]
        images.append(
            dict(
                pred_bboxes=pb,
                pred_labels=pl,
                pred_scores=ps,
                gt_bboxes=gt,
                gt_labels=gl.astype(np.float32),
                gt_difficults=gd.astype(np.float32),
            )
        )
    return images


def to_batches(images: list[dict], batch_size: int) -> list[tuple[np.ndarray, ...]]:
    """Pad per-image dicts into GluonCV-style batches, padding rows with -1:
    ``(pred_bboxes [B, N, 4], pred_labels [B, N, 1], pred_scores [B, N, 1], gt_bboxes [B, M, 4],
    gt_labels [B, M, 1], gt_difficults [B, M, 1])``, all float32."""
    batches = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        n = max(1, max(len(im["pred_labels"]) for im in chunk))
        m = max(1, max(len(im["gt_labels"]) for im in chunk))
        b = len(chunk)
        out = [
            np.full((b, n, 4), -1, np.float32),
            np.full((b, n, 1), -1, np.float32),
            np.full((b, n, 1), -1, np.float32),
            np.full((b, m, 4), -1, np.float32),
            np.full((b, m, 1), -1, np.float32),
            np.full((b, m, 1), -1, np.float32),
        ]
        for i, im in enumerate(chunk):
            k, g = len(im["pred_labels"]), len(im["gt_labels"])
            out[0][i, :k] = im["pred_bboxes"]
            out[1][i, :k, 0] = im["pred_labels"]
            out[2][i, :k, 0] = im["pred_scores"]
            out[3][i, :g] = im["gt_bboxes"]
            out[4][i, :g, 0] = im["gt_labels"]
            out[5][i, :g, 0] = im["gt_difficults"]
        batches.append(tuple(out))
    return batches


def checksum(images: list[dict]) -> float:
    """A float64 fingerprint of a case, to detect drift between the generator and the stored outputs."""
    total = 0.0
    for i, im in enumerate(images):
        for j, key in enumerate(sorted(im)):
            total += float(np.asarray(im[key], np.float64).sum()) * (1 + (i * 7 + j) % 13)
    return total


def make_sort_cases(seed: int = 10) -> list[np.ndarray]:
    """1-D arrays with many ties (plus sorted and reversed ones) of sizes around NumPy's thresholds; the
    last :data:`NUM_ADVERSARIAL_SORT_CASES` drive NumPy 1.23's introsort into its heapsort fallback."""
    rs = np.random.RandomState(seed)
    cases = []
    for trial in range(60):
        n = int(rs.choice([16, 17, 18, 31, 64, 127, 128, 129, 500, 3000]))
        levels = int(rs.choice([1, 2, 3, 7, 40, 1000, 10**6]))
        dtype = np.float32 if trial % 2 else np.float64
        v = (rs.randint(0, levels, size=n) / float(levels)).astype(dtype)
        if trial % 9 == 0:
            v = np.sort(v)
        elif trial % 9 == 1:
            v = np.sort(v)[::-1].copy()
        cases.append(v)
    for n in (200, 1000):
        # Halving the adversary's distinct values creates ties and keeps the depth-limit fallback.
        cases.append(np.floor(killer_adversary(n) / 2))
    return cases


NUM_ADVERSARIAL_SORT_CASES = 2


def killer_adversary(n: int) -> np.ndarray:
    """An input of ``n`` values that makes NumPy 1.2x's argsort quicksort exceed its depth limit.

    McIlroy's "killer adversary" (Software: Practice and Experience, 1999): run the sort with a comparator
    that leaves values undecided ("gas") until it must, then fixes the one that keeps the pivot bad.
    The sort here mirrors NumPy's ``aquicksort_`` (median of three, insertion sort below 17 items,
    heapsort past depth 2 * floor(log2 n)).
    """
    gas = n
    val = [gas] * n
    state = {"solid": 0, "candidate": 0}

    def less(x: int, y: int) -> bool:
        if val[x] == gas and val[y] == gas:
            frozen = x if x == state["candidate"] else y
            val[frozen] = state["solid"]
            state["solid"] += 1
        if val[x] == gas:
            state["candidate"] = x
        elif val[y] == gas:
            state["candidate"] = y
        return val[x] < val[y]

    a = list(range(n))

    def heapsort(lo: int, size: int) -> None:
        heap = [0] + a[lo : lo + size]

        def sift(item: int, i: int, limit: int) -> None:
            j = 2 * i
            while j <= limit:
                if j < limit and less(heap[j], heap[j + 1]):
                    j += 1
                if not less(item, heap[j]):
                    break
                heap[i] = heap[j]
                i, j = j, 2 * j
            heap[i] = item

        for top in range(size >> 1, 0, -1):
            sift(heap[top], top, size)
        for limit in range(size, 1, -1):
            item = heap[limit]
            heap[limit] = heap[1]
            sift(item, 1, limit - 1)
        a[lo : lo + size] = heap[1:]

    stack = []
    lo, hi, depth = 0, n - 1, 2 * (n.bit_length() - 1)
    while True:
        if depth < 0:
            heapsort(lo, hi - lo + 1)
        else:
            while hi - lo > 15:
                mid = lo + ((hi - lo) >> 1)
                if less(a[mid], a[lo]):
                    a[mid], a[lo] = a[lo], a[mid]
                if less(a[hi], a[mid]):
                    a[hi], a[mid] = a[mid], a[hi]
                if less(a[mid], a[lo]):
                    a[mid], a[lo] = a[lo], a[mid]
                pivot = a[mid]
                i, j = lo, hi - 1
                a[mid], a[j] = a[j], a[mid]
                while True:
                    i += 1
                    while less(a[i], pivot):
                        i += 1
                    j -= 1
                    while less(pivot, a[j]):
                        j -= 1
                    if i >= j:
                        break
                    a[i], a[j] = a[j], a[i]
                a[i], a[hi - 1] = a[hi - 1], a[i]
                depth -= 1
                if i - lo < hi - i:
                    stack.append((i + 1, hi, depth))
                    hi = i - 1
                else:
                    stack.append((lo, i - 1, depth))
                    lo = i + 1
            for i in range(lo + 1, hi + 1):
                x, j = a[i], i
                while j > lo and less(x, a[j - 1]):
                    a[j] = a[j - 1]
                    j -= 1
                a[j] = x
        if not stack:
            break
        lo, hi, depth = stack.pop()
    return np.array(val, dtype=np.float64)


def make_coco_case() -> tuple[dict, list[dict]]:
    """A tiny COCO data set (3 images, categories with ids 1, 3, 7; one crowd box) and per-image
    detections in a 300x300 network input: ``(coco_json, [{"bboxes","labels","scores"}])``."""
    images = [
        dict(id=11, width=640, height=480, file_name="a.jpg"),
        dict(id=4, width=300, height=300, file_name="b.jpg"),
        dict(id=25, width=500, height=375, file_name="c.jpg"),
    ]
    categories = [dict(id=1, name="person"), dict(id=3, name="car"), dict(id=7, name="dog")]
    boxes = {
        11: [(1, [10, 20, 200, 150]), (3, [300, 200, 120, 80]), (1, [400, 50, 30, 60])],
        4: [(7, [50, 60, 100, 120]), (1, [5, 5, 20, 40])],
        25: [(3, [100, 100, 250, 150]), (7, [20, 30, 60, 50])],
    }
    anns = []
    for img_id, items in boxes.items():
        for cat, (x, y, w, h) in items:
            anns.append(
                dict(
                    id=len(anns) + 1, image_id=img_id, category_id=cat, bbox=[x, y, w, h], area=float(w * h), iscrowd=0
                )
            )
    anns.append(dict(id=len(anns) + 1, image_id=25, category_id=1, bbox=[300, 200, 100, 100], area=10000.0, iscrowd=1))
    coco_json = dict(images=images, annotations=anns, categories=categories)
    rs = np.random.RandomState(3)
    contiguous = {1: 0, 3: 1, 7: 2}
    preds = []
    for img in sorted(images, key=lambda d: d["id"]):
        sx, sy = 300.0 / img["width"], 300.0 / img["height"]
        bxs, lbs, scs = [], [], []
        for cat, (x, y, w, h) in boxes[img["id"]]:
            for shift in (0.0, 0.1, 0.3):
                dx = shift * w * rs.rand()
                bxs.append([(x + dx) * sx, y * sy, (x + dx + w - 1) * sx, (y + h - 1) * sy])
                lbs.append(contiguous[cat])
                scs.append(float(rs.rand()))
        bxs.append([0, 0, 30, 30])
        lbs.append(0)
        scs.append(0.01)  # below score_thresh
        preds.append(
            dict(bboxes=np.array(bxs, np.float32), labels=np.array(lbs, np.float32), scores=np.array(scs, np.float32))
        )
    return coco_json, preds


# --------------------------------------------------------------------------------------------------
# GluonCV runs (venv only)
# --------------------------------------------------------------------------------------------------


def run_gluoncv_voc(batches, iou_thresh: float, difficult: bool):
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

    out = {}
    for name, cls in (("voc07", VOC07MApMetric), ("voc", VOCMApMetric)):
        metric = cls(iou_thresh=iou_thresh, class_names=CLASS_NAMES)
        for pb, pl, ps, gb, gl, gd in batches:
            metric.update(pb, pl, ps, gb, gl, gd if difficult else None)
        names, values = metric.get()
        assert names == CLASS_NAMES + ["mAP"], names
        out[name] = np.array(values, dtype=np.float64)
    return out


def run_gluoncv_coco(tmpdir: str):
    import json

    from gluoncv.utils.metrics.coco_detection import COCODetectionMetric
    from pycocotools.coco import COCO

    coco_json, preds = make_coco_case()
    path = os.path.join(tmpdir, "instances_tiny.json")
    with open(path, "w") as f:
        json.dump(coco_json, f)
    coco = COCO(path)
    cat_ids = sorted(coco.getCatIds())
    dataset = SimpleNamespace(
        coco=coco,
        contiguous_id_to_json=dict(enumerate(cat_ids)),
        classes=[coco.loadCats(c)[0]["name"] for c in cat_ids],
    )
    metric = COCODetectionMetric(
        dataset, os.path.join(tmpdir, "eval"), use_time=False, cleanup=True, data_shape=(300, 300)
    )
    for p in preds:
        metric.update(p["bboxes"][None], p["labels"][None, :, None], p["scores"][None, :, None])
    _, values = metric.get()
    stats = np.array(metric._coco_eval.stats, dtype=np.float64)
    per_class = np.array([float(v) / 100 for v in values[1:-1]], dtype=np.float64)
    return dict(coco_stats=stats, coco_per_class=per_class, coco_mean_ap=np.float64(float(values[-1]) / 100))


def main() -> None:
    import tempfile

    os.makedirs(DATA_DIR, exist_ok=True)

    voc = {}
    for scenario, (seed, num_images, levels, batch_size) in VOC_SCENARIOS.items():
        images = make_voc_case(seed, num_images, levels)
        voc[f"{scenario}_checksum"] = np.float64(checksum(images))
        batches = to_batches(images, batch_size)
        for run_scenario, iou, difficult in VOC_RUNS:
            if run_scenario != scenario:
                continue
            res = run_gluoncv_voc(batches, iou, difficult)
            key = run_key(scenario, iou, difficult)
            voc[f"{key}_voc07"] = res["voc07"]
            voc[f"{key}_voc"] = res["voc"]
            print(key, "VOC07 mAP %.6f" % res["voc07"][-1], "VOC mAP %.6f" % res["voc"][-1])
    np.savez_compressed(os.path.join(DATA_DIR, "metric_voc.npz"), **voc)

    cases = make_sort_cases()
    sort_out = {f"quicksort_{i}": c.argsort() for i, c in enumerate(cases)}
    sort_out.update({f"heapsort_{i}": c.argsort(kind="heapsort") for i, c in enumerate(cases)})
    sort_out["numpy_version"] = np.array(np.__version__)
    np.savez_compressed(os.path.join(DATA_DIR, "metric_sort.npz"), **sort_out)

    try:
        import pycocotools  # noqa: F401
    except ImportError:
        print("pycocotools missing in this environment: metric_coco.npz not written", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            coco = run_gluoncv_coco(tmp)
        np.savez_compressed(os.path.join(DATA_DIR, "metric_coco.npz"), **coco)
        print("COCO AP %.6f" % coco["coco_stats"][0])


if __name__ == "__main__":
    main()
