"""ssdkit.metrics.voc against GluonCV's VOC metrics (fixtures) and hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdkit.metrics import VOC07MApMetric, VOCMApMetric
from ssdkit.metrics.voc import voc07_ap, voc_ap

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


fixtures = load_tool("make_metric_fixtures")
VOC_REF = np.load(DATA / "metric_voc.npz")
METRICS = {"voc07": VOC07MApMetric, "voc": VOCMApMetric}


@pytest.fixture(scope="module")
def cases():
    out = {}
    for name, (seed, num_images, levels, _batch) in fixtures.VOC_SCENARIOS.items():
        images = fixtures.make_voc_case(seed, num_images, levels)
        assert fixtures.checksum(images) == pytest.approx(float(VOC_REF[f"{name}_checksum"]), rel=1e-12), (
            "the fixture generator no longer reproduces the stored inputs"
        )
        out[name] = images
    return out


def _run(metric_cls, batches, iou, difficult, class_names=fixtures.CLASS_NAMES, convert=lambda a: a):
    metric = metric_cls(iou_thresh=iou, class_names=class_names)
    for pb, pl, ps, gb, gl, gd in batches:
        metric.update(
            convert(pb), convert(pl), convert(ps), convert(gb), convert(gl), convert(gd) if difficult else None
        )
    return metric.get()


def _assert_same(values, ref, atol=1e-6):
    values = np.asarray(values, dtype=np.float64)
    assert values.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(values), np.isnan(ref))
    np.testing.assert_allclose(values, ref, rtol=0, atol=atol, equal_nan=True)


# --------------------------------------------------------------------------------------------------
# GluonCV parity
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["voc07", "voc"])
@pytest.mark.parametrize("scenario,iou,difficult", fixtures.VOC_RUNS)
def test_matches_gluoncv(cases, scenario, iou, difficult, kind):
    batches = fixtures.to_batches(cases[scenario], fixtures.VOC_SCENARIOS[scenario][3])
    names, values = _run(METRICS[kind], batches, iou, difficult)
    assert names == fixtures.CLASS_NAMES + ["mAP"]
    ref = VOC_REF[f"{fixtures.run_key(scenario, iou, difficult)}_{kind}"]
    _assert_same(values, ref)
    # the fixture's edge classes behave as designed
    assert math.isnan(values[18]) and math.isnan(values[19]) and values[fixtures.UNPREDICTED_CLASS] == 0.0
    assert math.isnan(values[fixtures.ALL_DIFFICULT_CLASS]) == difficult


def test_torch_inputs_and_flat_label_shapes(cases):
    batches = fixtures.to_batches(cases["quantized"], 16)

    def to_torch(a):
        a = torch.from_numpy(a)
        return a[..., 0] if a.shape[-1] == 1 else a  # [B, N, 1] -> [B, N]

    _, values = _run(VOC07MApMetric, batches, 0.5, True, convert=to_torch)
    _assert_same(values, VOC_REF[f"{fixtures.run_key('quantized', 0.5, True)}_voc07"])


def test_list_of_images_and_batch_size_do_not_matter(cases):
    """Unpadded per-image lists, fed in uneven chunks, give GluonCV's numbers for its padded batches."""
    images = cases["coarse"]
    metric = VOCMApMetric(class_names=fixtures.CLASS_NAMES)
    start = 0
    for size in [1, 7, 30, 2, 50, 60]:
        chunk = images[start : start + size]
        start += size
        metric.update(
            *[
                [im[key] for im in chunk]
                for key in ("pred_bboxes", "pred_labels", "pred_scores", "gt_bboxes", "gt_labels", "gt_difficults")
            ]
        )
    assert start == len(images)
    _assert_same(metric.get()[1], VOC_REF[f"{fixtures.run_key('coarse', 0.5, True)}_voc"])


def test_reset_forgets(cases):
    batches = fixtures.to_batches(cases["coarse"], 32)
    metric = VOC07MApMetric(class_names=fixtures.CLASS_NAMES)
    metric.update(*batches[0])
    metric.reset()
    for batch in batches:
        metric.update(*batch)
    _assert_same(metric.get()[1], VOC_REF[f"{fixtures.run_key('coarse', 0.5, True)}_voc07"])


# --------------------------------------------------------------------------------------------------


def _one_image(pred_boxes, pred_labels, pred_scores, gt_boxes, gt_labels, gt_difficult=None):
    arr = lambda x, shape: np.asarray(x, dtype=np.float32).reshape(shape)
    n, m = len(pred_labels), len(gt_labels)
    out = [
        arr(pred_boxes, (1, n, 4)),
        arr(pred_labels, (1, n)),
        arr(pred_scores, (1, n)),
        arr(gt_boxes, (1, m, 4)),
        arr(gt_labels, (1, m)),
    ]
    out.append(None if gt_difficult is None else arr(gt_difficult, (1, m)))
    return out


def _ap(metric_cls, *args, iou=0.5, class_names=("a",)):
    metric = metric_cls(iou_thresh=iou, class_names=list(class_names))
    metric.update(*args)
    return metric.get()[1]


def test_plus_one_box_convention():
    # +1 extents: areas 100 and 50, IoU exactly 0.5 -> a TP. Without +1 it would be 36/81 < 0.5.
    args = _one_image([[0, 0, 9, 4]], [0], [0.9], [[0, 0, 9, 9]], [0])
    assert _ap(VOC07MApMetric, *args) == pytest.approx([1.0, 1.0])  # 11 * (1 / 11): not exactly 1.0
    assert _ap(VOCMApMetric, *args, iou=0.51) == [0.0, 0.0]


def test_duplicates_are_false_positives():
    args = _one_image(
        [[0, 0, 9, 9], [0, 0, 9, 9], [20, 20, 29, 29]],
        [0, 0, 0],
        [0.9, 0.8, 0.7],
        [[0, 0, 9, 9], [20, 20, 29, 29]],
        [0, 0],
    )
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    assert _ap(VOCMApMetric, *args)[0] == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    assert _ap(VOC07MApMetric, *args)[0] == pytest.approx((6 * 1 + 5 * (2 / 3)) / 11)


def test_difficult_matches_are_ignored_and_not_counted():
    gts = [[0, 0, 9, 9], [20, 20, 29, 29]]
    preds = [[20, 20, 29, 29], [0, 0, 9, 9]]
    with_flags = _one_image(preds, [0, 0], [0.9, 0.8], gts, [0, 0], [0, 1])
    assert _ap(VOCMApMetric, *with_flags) == [1.0, 1.0]  # the top detection is ignored, not an FP
    without = _one_image(preds, [0, 0], [0.9, 0.8], gts, [0, 0])
    assert _ap(VOCMApMetric, *without) == [1.0, 1.0]
    only_easy_found = _one_image(preds[:1], [0], [0.9], gts, [0, 0])
    assert _ap(VOCMApMetric, *only_easy_found)[0] == pytest.approx(0.5)


def test_argmax_runs_over_difficult_gts_too():
    # The detection overlaps the easy gt (IoU 0.6) but the difficult one more (IoU 1): it is ignored.
    gts = [[0, 0, 9, 9], [0, 0, 5, 9]]
    args = _one_image([[0, 0, 5, 9]], [0], [0.9], gts, [0, 0], [0, 1])
    assert _ap(VOCMApMetric, *args)[0] == 0.0
    args = _one_image([[0, 0, 5, 9]], [0], [0.9], gts, [0, 0], [0, 0])
    assert _ap(VOCMApMetric, *args)[0] == pytest.approx(0.5)  # 1 TP of 2 gts


def test_classes_without_gt_are_nan_and_skipped_by_the_mean():
    args = _one_image([[0, 0, 9, 9], [0, 0, 9, 9]], [0, 1], [0.9, 0.9], [[0, 0, 9, 9]], [0])
    values = _ap(VOCMApMetric, *args, class_names=("a", "b", "c"))
    assert values[0] == 1.0 and math.isnan(values[1]) and math.isnan(values[2]) and values[3] == 1.0


def test_padding_rows_are_ignored():
    args = _one_image([[0, 0, 9, 9], [-1, -1, -1, -1]], [0, -1], [0.9, -1], [[0, 0, 9, 9], [-1] * 4], [0, -1])
    assert _ap(VOCMApMetric, *args) == [1.0, 1.0]


def test_without_class_names_and_empty():
    metric = VOCMApMetric()
    names, values = metric.get()
    assert names == ["mAP"] and math.isnan(values[0])
    metric.update(*_one_image([[0, 0, 9, 9]], [2], [0.5], [[0, 0, 9, 9]], [2]))
    names, values = metric.get()
    assert names == ["0", "1", "2", "mAP"]
    assert math.isnan(values[0]) and values[2] == 1.0 and values[3] == 1.0


def test_bad_inputs_raise_clear_errors():
    metric = VOCMApMetric(class_names=["a"])
    good = _one_image([[0, 0, 9, 9]], [0], [0.9], [[0, 0, 9, 9]], [0])
    with pytest.raises(ValueError, match="pred_bboxes"):
        metric.update(np.zeros((1, 1, 5)), *good[1:])
    with pytest.raises(ValueError, match="pred_labels"):
        metric.update(good[0], np.zeros((1, 2)), *good[2:])
    with pytest.raises(ValueError, match="images"):
        metric.update(*good[:3], np.zeros((2, 1, 4)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="NaN"):
        metric.update(good[0], good[1], np.full((1, 1), np.nan), *good[3:])
    with pytest.raises(ValueError, match="class_names"):
        metric.update(good[0], np.ones((1, 1)), *good[2:])
    with pytest.raises(ValueError, match="iou_thresh"):
        VOCMApMetric(iou_thresh=1.5)


def test_ap_functions_on_known_curves():
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc07_ap(rec, prec) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert voc07_ap(np.array([]), np.array([])) == 0.0 and voc_ap(np.array([]), np.array([])) == 0.0
    assert math.isnan(voc_ap(None, prec)) and math.isnan(voc07_ap(rec, None))


# --------------------------------------------------------------------------------------------------
# Property: the vectorised matcher equals a literal loop (distinct scores, so order is unambiguous)
# --------------------------------------------------------------------------------------------------


def _reference_map(images, iou_thresh, use_07):
    """A direct per-image, per-class, per-detection implementation of the VOC rules."""
    scores, matches, n_pos = {}, {}, {}
    for im in images:
        for c in {int(x) for x in im["pred_labels"]} | {int(x) for x in im["gt_labels"]}:
            g = im["gt_labels"] == c
            gts, hard = im["gt_bboxes"][g], im["gt_difficults"][g] != 0
            n_pos[c] = n_pos.get(c, 0) + int((~hard).sum())
            p = im["pred_labels"] == c
            order = np.argsort(-im["pred_scores"][p])
            taken = np.zeros(len(gts), bool)
            for box, s in zip(im["pred_bboxes"][p][order], im["pred_scores"][p][order]):
                scores.setdefault(c, []).append(s)
                best, best_iou = -1, -1.0
                for j, gt in enumerate(gts):
                    iw = min(box[2], gt[2]) - max(box[0], gt[0]) + 1
                    ih = min(box[3], gt[3]) - max(box[1], gt[1]) + 1
                    inter = iw * ih if iw > 0 and ih > 0 else 0.0
                    area_box = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
                    union = area_box + (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1) - inter
                    if inter / union > best_iou:
                        best, best_iou = j, inter / union
                if best < 0 or best_iou < iou_thresh:
                    matches.setdefault(c, []).append(0)
                elif hard[best]:
                    matches.setdefault(c, []).append(-1)
                else:
                    matches.setdefault(c, []).append(0 if taken[best] else 1)
                    taken[best] = True
    aps = []
    for c in range(max(n_pos) + 1 if n_pos else 0):
        if n_pos.get(c, 0) == 0:
            aps.append(float("nan"))
            continue
        m = np.array(matches.get(c, []))[np.argsort(-np.array(scores.get(c, [])))]
        tp, fp = np.cumsum(m == 1), np.cumsum(m == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.nan_to_num(tp / (tp + fp))
        rec = tp / n_pos[c]
        if use_07:
            thresholds = np.arange(0.0, 1.1, 0.1)  # GluonCV's, 0.30000000000000004 and all
            aps.append(sum(max(prec[rec >= t], default=0) for t in thresholds) / 11)
        else:
            env = [max(prec[i:]) for i in range(len(prec))]
            aps.append(sum((r - r0) * e for r, r0, e in zip(rec, np.concatenate(([0], rec[:-1])), env)))
    return aps


@st.composite
def _images(draw):
    n_img = draw(st.integers(1, 4))
    rs = np.random.RandomState(draw(st.integers(0, 2**31 - 1)))
    images, score_pool = [], rs.permutation(1000)[: 40 * n_img] / 1000.0
    used = 0
    for _ in range(n_img):
        m, n = rs.randint(0, 5), rs.randint(0, 9)
        gt_xy = rs.randint(0, 40, size=(m, 2))
        gts = np.concatenate([gt_xy, gt_xy + rs.randint(0, 20, size=(m, 2))], 1).astype(np.float32)
        src = rs.randint(0, max(m, 1), size=n)
        near = gts[src] + rs.randint(-3, 4, size=(n, 4)) if m else np.zeros((n, 4))
        xy = rs.randint(0, 40, size=(n, 2))
        far = np.concatenate([xy, xy + rs.randint(0, 20, size=(n, 2))], 1)
        boxes = np.where((rs.rand(n) < 0.7)[:, None], near, far).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        images.append(
            dict(
                pred_bboxes=boxes,
                pred_labels=rs.randint(0, 3, size=n).astype(np.float32),
                pred_scores=score_pool[used : used + n].astype(np.float32),
                gt_bboxes=gts,
                gt_labels=rs.randint(0, 3, size=m).astype(np.float32),
                gt_difficults=(rs.rand(m) < 0.25).astype(np.float32),
            )
        )
        used += n
    return images


@settings(max_examples=60, deadline=None)
@given(images=_images(), iou=st.sampled_from([0.3, 0.5, 0.7]), use_07=st.booleans())
def test_matches_literal_reference(images, iou, use_07):
    metric = (VOC07MApMetric if use_07 else VOCMApMetric)(iou_thresh=iou)
    metric.update(
        *[
            [im[k] for im in images]
            for k in ("pred_bboxes", "pred_labels", "pred_scores", "gt_bboxes", "gt_labels", "gt_difficults")
        ]
    )
    values = metric.get()[1][:-1]
    expected = _reference_map(images, iou, use_07)
    n = max(len(values), len(expected))
    pad = lambda v: list(v) + [float("nan")] * (n - len(v))
    np.testing.assert_allclose(pad(values), pad(expected), rtol=0, atol=1e-9, equal_nan=True)
