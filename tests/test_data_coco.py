"""COCODetection: JSON parsing, GluonCV's box conversion, crowd / empty handling, bad samples."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torchvision.io import write_jpeg

from ssdkit.data import BadSampleError, COCODetection, SSDValTransform, detection_collate
from ssdkit.data.coco import coco_xywh_to_xyxy

pytestmark = pytest.mark.usefixtures("one_thread")

# category ids are deliberately not contiguous and not listed in order
CATEGORIES = [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def ann(ann_id, image_id, bbox, cat, iscrowd=0, area=None):
    if area is None:
        area = float(bbox[2] * bbox[3]) if all(np.isfinite(bbox)) else 0.0
    return {"id": ann_id, "image_id": image_id, "bbox": bbox, "category_id": cat, "iscrowd": iscrowd, "area": area}


def make_coco(root, with_missing=False, extra_anns=()):
    images = [
        {
            "id": 10,
            "file_name": "a.jpg",
            "width": 64,
            "height": 48,
            "coco_url": "http://images.cocodataset.org/val2017/a.jpg",
        },
        {
            "id": 11,
            "file_name": "b.jpg",
            "width": 32,
            "height": 32,
            "coco_url": "http://images.cocodataset.org/val2017/b.jpg",
        },  # no annotations
        {
            "id": 12,
            "file_name": "c.jpg",
            "width": 40,
            "height": 40,
            "coco_url": "http://images.cocodataset.org/val2017/c.jpg",
        },  # only a too-thin box
    ]
    for entry in images:
        g = torch.Generator().manual_seed(entry["id"])
        img = torch.randint(0, 256, (3, entry["height"], entry["width"]), dtype=torch.uint8, generator=g)
        os.makedirs(root / "val2017", exist_ok=True)
        write_jpeg(img, str(root / "val2017" / entry["file_name"]))
    if with_missing:
        images.append(
            {
                "id": 13,
                "file_name": "gone.jpg",
                "width": 8,
                "height": 8,
                "coco_url": "http://images.cocodataset.org/val2017/gone.jpg",
            }
        )
    anns = [
        ann(1, 10, [10, 20, 30, 10], 3),  # -> [10, 20, 39, 29]
        ann(2, 10, [50, 5, 30, 60], 1),  # runs off the image -> clipped to [50, 5, 63, 47]
        ann(3, 10, [0, 0, 20, 20], 7, iscrowd=1),  # crowd
        ann(4, 10, [5, 5, 2, 2], 1, area=4.0),  # small: [5, 5, 6, 6]
        ann(5, 12, [3, 3, 0.5, 10], 1),  # w - 1 < 0 -> x2 == x1 -> dropped (GluonCV)
        *extra_anns,
    ]
    os.makedirs(root / "annotations", exist_ok=True)
    with open(root / "annotations" / "instances_val2017.json", "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": CATEGORIES}, f)
    return root


def boxes_of(ds, k):
    return ds[k][1]["boxes"].as_subclass(torch.Tensor)


def test_xywh_conversion_follows_gluoncv():
    xyxy, valid = coco_xywh_to_xyxy(
        np.array([[10, 20, 30, 10], [50, 5, 30, 60], [3, 3, 0.5, 10], [-5, 2, 8, 4]]), width=64, height=48
    )
    np.testing.assert_allclose(xyxy, [[10, 20, 39, 29], [50, 5, 63, 47], [3, 3, 3, 12], [0, 2, 2, 5]])
    assert valid.tolist() == [True, True, False, True]


def test_contiguous_ids_follow_category_id_order(tmp_path):
    ds = COCODetection(str(make_coco(tmp_path)))
    assert ds.classes == ("person", "car", "kite") and ds.num_classes == 3
    assert ds.json_id_to_contiguous == {1: 0, 3: 1, 7: 2}
    assert ds.contiguous_id_to_json == {0: 1, 1: 3, 2: 7}


def test_boxes_labels_and_crowd(tmp_path):
    ds = COCODetection(str(make_coco(tmp_path)))
    assert ds.image_ids == [10]  # skip_empty drops 11 (no boxes) and 12 (only a degenerate box)
    image, target = ds[0]
    assert tuple(image.shape) == (3, 48, 64) and image.dtype == torch.uint8
    torch.testing.assert_close(
        boxes_of(ds, 0), torch.tensor([[10.0, 20, 39, 29], [50, 5, 63, 47], [0, 0, 19, 19], [5, 5, 6, 6]])
    )
    assert target["labels"].tolist() == [1, 0, 2, 0]
    assert target["difficult"].tolist() == [0, 0, 0, 0]
    assert target["image_id"] == 10 and target["orig_size"] == (48, 64)
    no_crowd = COCODetection(str(tmp_path), use_crowd=False)
    assert no_crowd[0][1]["labels"].tolist() == [1, 0, 0]
    big = COCODetection(str(tmp_path), min_object_area=5)
    assert big[0][1]["labels"].tolist() == [1, 0, 2]


def test_skip_empty_false_keeps_empty_images_with_zero_boxes(tmp_path):
    ds = COCODetection(str(make_coco(tmp_path)), skip_empty=False)
    assert ds.image_ids == [10, 11, 12]
    for k in (1, 2):
        image, target = ds[k]
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    ds.transform = SSDValTransform(16)
    batch = detection_collate([ds[1], ds[2]])
    assert batch["gt_boxes"].shape == (2, 1, 4) and (batch["gt_ids"] == -1).all()


def test_coco_attribute_is_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    ds = COCODetection(str(make_coco(tmp_path)), skip_empty=False)
    assert isinstance(ds.coco, COCO)
    assert sorted(ds.coco.getImgIds()) == ds.image_ids


def test_missing_image_and_bad_boxes_are_reported(tmp_path):
    extra = [
        ann(6, 10, [1, 1, float("nan"), 4], 1),
        ann(7, 10, [1, 1, -3, 4], 1, area=12.0),
        ann(8, 10, [100, 1, 5, 5], 1),
        ann(9, 10, [1, 1, 5, 5], 99),
    ]
    make_coco(tmp_path, with_missing=True, extra_anns=extra)
    ds = COCODetection(str(tmp_path))
    assert ds.image_ids == [10]
    assert len(ds[0][1]["labels"]) == 4  # the four bad extra boxes are dropped
    summary = ds.bad_sample_log.summary()
    assert "gone.jpg" in summary and "not found" in summary
    for needle in (
        "annotation 6",
        "NaN",
        "annotation 7",
        "negative",
        "annotation 8",
        "outside",
        "annotation 9",
        "unknown category id 99",
    ):
        assert needle in summary
    assert "a.jpg" in summary
    with pytest.raises(BadSampleError, match="a.jpg: annotation 6.*NaN"):
        COCODetection(str(tmp_path), on_bad_sample="error")
    make_coco(tmp_path / "m", with_missing=True)
    with pytest.raises(BadSampleError, match="gone.jpg: image file not found"):
        COCODetection(
            str(tmp_path / "m"),
            on_bad_sample="error",
            ann_file=str(tmp_path / "m" / "annotations" / "instances_val2017.json"),
            image_dir="val2017",
        )


def test_corrupt_image_is_skipped_at_load(tmp_path):
    make_coco(tmp_path, extra_anns=[ann(10, 11, [1, 1, 10, 10], 3)])
    with open(tmp_path / "val2017" / "a.jpg", "wb") as f:
        f.write(b"garbage")
    ds = COCODetection(str(tmp_path))
    assert ds.image_ids == [10, 11]
    image, target = ds[0]
    assert target["image_id"] == 11 and target["bad_samples"][0][0].endswith("a.jpg")
    with pytest.raises(BadSampleError, match="a.jpg"):
        COCODetection(str(tmp_path), on_bad_sample="error")[0]


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        COCODetection(str(tmp_path), splits="instances_train2017")
