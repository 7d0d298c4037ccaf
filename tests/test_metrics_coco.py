"""ssdkit.metrics.coco on tiny hand-made COCO files (pycocotools underneath), and parity with GluonCV."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from ssdkit.metrics import COCODetectionMetric

ROOT = Path(__file__).resolve().parents[1]
COCO_REF = ROOT / "tests" / "data" / "metric_coco.npz"

# Two images; categories with non-contiguous ids 2 ("cat") and 5 ("dog"); gt boxes are COCO xywh.
IMAGES = [dict(id=7, width=200, height=100, file_name="x.jpg"), dict(id=3, width=50, height=80, file_name="y.jpg")]
CATS = [dict(id=5, name="dog"), dict(id=2, name="cat")]
GTS = {3: [(2, [10, 10, 20, 30])], 7: [(2, [5, 5, 50, 40]), (5, [100, 20, 60, 70])]}
CONTIGUOUS = {2: 0, 5: 1}  # sorted category ids


def _write_json(tmp_path) -> Path:
    anns = []
    for img_id, items in GTS.items():
        for cat, box in items:
            anns.append(
                dict(
                    id=len(anns) + 1, image_id=img_id, category_id=cat, bbox=box, area=float(box[2] * box[3]), iscrowd=0
                )
            )
    path = tmp_path / "instances_tiny.json"
    path.write_text(json.dumps(dict(images=IMAGES, annotations=anns, categories=CATS)))
    return path


def _perfect(shift=0.0, score=0.9, scale=(1.0, 1.0)):
    """Per image (sorted ids 3, 7): corners of the gts (x2 = x + w - 1), optionally shifted right by
    ``shift`` of the width and multiplied by ``scale`` (x, y)."""
    out = []
    for img_id in sorted(GTS):
        boxes, labels = [], []
        for cat, (x, y, w, h) in GTS[img_id]:
            dx = shift * w
            boxes.append([(x + dx) * scale[0], y * scale[1], (x + dx + w - 1) * scale[0], (y + h - 1) * scale[1]])
            labels.append(CONTIGUOUS[cat])
        out.append((np.array(boxes, np.float32), np.array(labels, np.float32), np.full(len(labels), score, np.float32)))
    return out


def _evaluate(metric, per_image):
    for boxes, labels, scores in per_image:
        metric.update(boxes[None], labels[None], scores[None])
    return dict(zip(*metric.get()))


def test_perfect_detections_score_one(tmp_path):
    result = _evaluate(COCODetectionMetric(str(_write_json(tmp_path))), _perfect())
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    assert result["AP/cat"] == pytest.approx(1.0) and result["AP/dog"] == pytest.approx(1.0)
    assert list(result)[-1] == "AP"


def test_shifted_detections_score_lower(tmp_path):
    path = _write_json(tmp_path)
    slight = _evaluate(COCODetectionMetric(str(path)), _perfect(shift=0.1))
    far = _evaluate(COCODetectionMetric(str(path)), _perfect(shift=0.6))
    # IoU 0.9 / 1.1 = 0.818 for the slight shift: counted up to IoU 0.8, missed above
    assert slight["AP50"] == pytest.approx(1.0) and slight["AP75"] == pytest.approx(1.0)
    assert 0.5 < slight["AP"] < 1.0
    assert far["AP"] == pytest.approx(0.0) and far["AP50"] == pytest.approx(0.0)


def test_network_space_boxes_are_rescaled(tmp_path):
    # boxes drawn in a 300x300 input: x scaled by 300 / width, y by 300 / height of each image
    metric = COCODetectionMetric(str(_write_json(tmp_path)), data_shape=(300, 300))
    sizes = {im["id"]: (im["width"], im["height"]) for im in IMAGES}
    per_image = []
    for (boxes, labels, scores), img_id in zip(_perfect(), sorted(GTS)):
        w, h = sizes[img_id]
        per_image.append((boxes * np.array([300 / w, 300 / h] * 2, np.float32), labels, scores))
    assert _evaluate(metric, per_image)["AP"] == pytest.approx(1.0, abs=1e-6)
    # explicit original sizes (the collate's (H, W), -1 when unknown) give the same boxes
    explicit = COCODetectionMetric(str(_write_json(tmp_path)), data_shape=(300, 300))
    for (boxes, labels, scores), img_id in zip(per_image, sorted(GTS)):
        w, h = sizes[img_id]
        size = [[h, w]] if img_id == 3 else [[-1, -1]]
        explicit.update(boxes[None], labels[None], scores[None], image_ids=[img_id], orig_sizes=size)
    assert explicit._results == metric._results
    # the same boxes without data_shape are in the wrong place
    unscaled = COCODetectionMetric(str(_write_json(tmp_path)))
    assert _evaluate(unscaled, per_image)["AP"] < 0.5


def test_plus_one_width_convention(tmp_path):
    metric = COCODetectionMetric(str(_write_json(tmp_path)))
    boxes, labels, scores = _perfect()[0]
    metric.update(boxes[None], labels[None], scores[None], image_ids=[3])
    x, y, w, h = GTS[3][0][1]
    assert metric._results[0]["bbox"] == pytest.approx([x, y, w, h])


def test_score_threshold_and_unknown_classes_drop_detections(tmp_path):
    path = _write_json(tmp_path)
    low = _evaluate(COCODetectionMetric(str(path)), _perfect(score=0.04))
    assert low["AP"] == pytest.approx(0.0)
    kept = _evaluate(COCODetectionMetric(str(path), score_thresh=0.01), _perfect(score=0.04))
    assert kept["AP"] == pytest.approx(1.0)
    metric = COCODetectionMetric(str(path))
    boxes, labels, scores = _perfect()[1]
    metric.update(boxes[None], np.full((1, len(labels)), 9.0), scores[None], image_ids=[7])  # class 9 unmapped
    metric.update(boxes[None], -np.ones((1, len(labels))), scores[None], image_ids=[3])  # padding
    assert metric._results == []


def test_empty_results_give_zero_not_an_error(tmp_path):
    metric = COCODetectionMetric(str(_write_json(tmp_path)))
    metric.update(-np.ones((2, 1, 4)), -np.ones((2, 1)), np.zeros((2, 1)))
    result = dict(zip(*metric.get()))
    assert result["AP"] == 0.0 and result["AP/cat"] == 0.0


def test_accepts_dataset_coco_object_and_torch(tmp_path):
    path = _write_json(tmp_path)
    coco = COCO(str(path))
    dataset = SimpleNamespace(coco=coco, contiguous_id_to_json=[2, 5], classes=["Cat", "Dog"])
    per_image = [tuple(torch.from_numpy(a) for a in item) for item in _perfect()]
    by_dataset = _evaluate(COCODetectionMetric(dataset), per_image)
    assert list(by_dataset)[:2] == ["AP/Cat", "AP/Dog"] and by_dataset["AP"] == pytest.approx(1.0)
    # a reversed id map makes every prediction the wrong class
    swapped = _evaluate(COCODetectionMetric(coco, contiguous_id_to_json={0: 5, 1: 2}), _perfect())
    assert swapped["AP"] == pytest.approx(0.0)
    assert list(swapped)[:2] == ["AP/dog", "AP/cat"]


def test_partial_results_warn_and_bad_inputs_raise(tmp_path):
    path = _write_json(tmp_path)
    metric = COCODetectionMetric(str(path))
    boxes, labels, scores = _perfect()[0]
    metric.update(boxes[None], labels[None], scores[None])
    with pytest.warns(UserWarning, match="1 annotated images of 2"):
        metric.get()
    with pytest.raises(ValueError, match="image_ids"):
        metric.update(boxes[None], labels[None], scores[None], image_ids=[999])
    metric.update(boxes[None], labels[None], scores[None])
    with pytest.raises(ValueError, match="images"):
        metric.update(boxes[None], labels[None], scores[None])  # a third image in a 2-image data set
    with pytest.raises(ValueError, match="category ids"):
        COCODetectionMetric(str(path), contiguous_id_to_json=[2, 4])
    with pytest.raises(ValueError, match="not found"):
        COCODetectionMetric(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="dataset_or_coco"):
        COCODetectionMetric(42)


def test_matches_gluoncv(tmp_path):
    ref = np.load(COCO_REF)
    spec = importlib.util.spec_from_file_location("mf", ROOT / "tools" / "make_metric_fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    coco_json, preds = fixtures.make_coco_case()
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(coco_json))
    metric = COCODetectionMetric(str(path), data_shape=(300, 300))
    for p in preds:
        metric.update(p["bboxes"][None], p["labels"][None, :, None], p["scores"][None, :, None])
    names, values = metric.get()
    np.testing.assert_allclose(metric.coco_eval.stats, ref["coco_stats"], rtol=0, atol=1e-9)
    # GluonCV reports per-class and mean AP as percentages with one decimal
    np.testing.assert_allclose(values[:3], ref["coco_per_class"], rtol=0, atol=5e-4 + 1e-9)
    assert values[-1] == pytest.approx(float(ref["coco_mean_ap"]), abs=5e-4 + 1e-9)
    assert values[-1] == pytest.approx(float(ref["coco_stats"][0]), abs=1e-12)
    assert "Average Precision" in metric.summary
    assert not math.isnan(values[names.index("AP50")])


def test_score_seen_only_leaves_the_other_images_out(tmp_path):
    """Image 3 alone, perfectly detected: AP 1 once the metric scores only what it saw, not 1 while image 7's
    objects count as missed; reset() scores every image again."""
    metric = COCODetectionMetric(str(_write_json(tmp_path)))
    boxes, labels, scores = _perfect()[0]  # sorted ids: image 3 first
    metric.update(boxes[None], labels[None], scores[None])
    with pytest.warns(UserWarning, match="count as missed"):
        assert dict(zip(*metric.get()))["AP/cat"] < 1
    assert metric.score_seen_only() == [7]
    assert dict(zip(*metric.get()))["AP/cat"] == pytest.approx(1.0)
    metric.reset()
    metric.update(boxes[None], labels[None], scores[None])
    with pytest.warns(UserWarning, match="count as missed"):
        metric.get()
