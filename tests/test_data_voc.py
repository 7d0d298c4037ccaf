"""VOC XML parsing, the VOCdevkit and VOC-folder data sets, and their bad-sample handling."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torchvision.io import write_jpeg

from ssdkit.data import (
    VOC_CLASSES,
    BadSampleError,
    BadSampleLog,
    SSDValTransform,
    VOCDetection,
    VOCFolder,
    detection_collate,
)
from ssdkit.data.errors import DroppedSample
from ssdkit.data.voc import holdout_split, parse_voc_xml

pytestmark = pytest.mark.usefixtures("one_thread")

VOC_MAP = {c: i for i, c in enumerate(VOC_CLASSES)}


def obj_xml(name="dog", box=("48", "240", "195", "371"), difficult="0", truncated="0", extra=""):
    parts = [f"<name>{name}</name>" if name is not None else ""]
    if difficult is not None:
        parts.append(f"<difficult>{difficult}</difficult>")
    parts.append(f"<truncated>{truncated}</truncated>")
    if box is not None:
        tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box) if v is not None)
        parts.append(f"<bndbox>{tags}</bndbox>")
    return "<object>" + "".join(parts) + extra + "</object>"


def ann_xml(objects, width=500, height=375, filename="x.jpg"):
    size = "" if width is None else f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation><filename>{filename}</filename>{size}{''.join(objects)}</annotation>"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def write_image(path, height, width, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
    write_jpeg(img, str(path), quality=95)


# --- parse_voc_xml ---------------------------------------------------------------------------------


def test_parse_converts_one_based_to_zero_based_and_keeps_difficult(tmp_path):
    path = write(
        tmp_path / "a.xml",
        ann_xml(
            [
                obj_xml("dog", ("48", "240", "195", "371"), difficult="0", truncated="1"),
                obj_xml(" Person ", ("8.5", "12", "498", "375"), difficult="1"),
            ]
        ),
    )
    ann, problems = parse_voc_xml(path, VOC_MAP)
    assert problems == []
    assert (ann.width, ann.height) == (500, 375)
    np.testing.assert_array_equal(ann.boxes_xyxy, [[47, 239, 194, 370], [7.5, 11, 497, 374]])
    assert ann.boxes_xyxy.dtype == np.float32
    assert ann.labels.tolist() == [VOC_MAP["dog"], VOC_MAP["person"]]
    assert ann.difficult.tolist() == [0, 1]


def test_parse_drop_difficult_when_asked(tmp_path):
    path = write(tmp_path / "a.xml", ann_xml([obj_xml("dog"), obj_xml("cat", difficult="1")]))
    ann, _ = parse_voc_xml(path, VOC_MAP, keep_difficult=False)
    assert ann.labels.tolist() == [VOC_MAP["dog"]]


def test_parse_missing_fields(tmp_path):
    path = write(
        tmp_path / "a.xml",
        ann_xml(
            [
                obj_xml(name=None),  # no <name>
                obj_xml("cat", box=None),  # no <bndbox>
                obj_xml("cow", box=("1", "2", None, "9")),  # no <xmax>
                obj_xml("bus", difficult=None),  # no <difficult> -> 0
            ],
            width=None,
        ),
    )  # no <size>
    ann, problems = parse_voc_xml(path, VOC_MAP)
    assert ann.width is None and ann.height is None
    assert ann.labels.tolist() == [VOC_MAP["bus"]] and ann.difficult.tolist() == [0]
    assert len(problems) == 3
    assert "missing <name>" in problems[0]
    assert "cat" in problems[1] and "<bndbox>" in problems[1]
    assert "cow" in problems[2] and "<xmax>" in problems[2]


def test_parse_bad_boxes_are_reported(tmp_path):
    path = write(
        tmp_path / "a.xml",
        ann_xml(
            [
                obj_xml("dog", ("nan", "1", "10", "10")),  # NaN
                obj_xml("dog", ("20", "20", "20", "40")),  # degenerate (xmax == xmin)
                obj_xml("dog", ("600", "10", "700", "50")),  # entirely outside a 500-wide image
                obj_xml("dog", ("-9", "0", "30", "400")),  # partly outside -> clipped, kept
                obj_xml("dog", ("2", "3", "4", "5")),  # fine
            ]
        ),
    )
    ann, problems = parse_voc_xml(path, VOC_MAP)
    assert len(problems) == 4
    assert "NaN" in problems[0]
    assert "degenerate" in problems[1]
    assert "entirely outside" in problems[2]
    assert "clipped" in problems[3]
    np.testing.assert_array_equal(ann.boxes_xyxy, [[0, 0, 29, 375], [1, 2, 3, 4]])


def test_a_clipped_box_states_the_bounds_it_was_clipped_to(tmp_path):
    # y2 = 375 is one past the last 0-based row of a 375-high image: GluonCV's bound, said so in the report
    path = write(tmp_path / "a.xml", ann_xml([obj_xml("dog", ("100", "50", "400", "300"))], 128, 96))
    _, problems = parse_voc_xml(path, VOC_MAP)
    assert problems == [
        "object 0 (dog) box [99, 49, 399, 299] (0-based): partly outside the 128x96 image, clipped to "
        "[99, 49, 128, 96] (GluonCV's bounds 0 <= x <= 128, 0 <= y <= 96)"
    ]


def test_parse_unknown_class_is_named(tmp_path):
    path = write(tmp_path / "a.xml", ann_xml([obj_xml("unicorn"), obj_xml("dog")]))
    ann, problems = parse_voc_xml(path, VOC_MAP)
    assert ann.labels.tolist() == [VOC_MAP["dog"]]
    assert len(problems) == 1 and "'unicorn'" in problems[0]


def test_parse_malformed_xml_raises_with_file_name(tmp_path):
    path = write(tmp_path / "broken.xml", "<annotation><object><name>dog</name>")
    with pytest.raises(BadSampleError, match="broken.xml.*parse"):
        parse_voc_xml(path, VOC_MAP)


# --- VOCDetection on a tiny VOCdevkit ---------------------------------------------------------------


def make_devkit(root, with_missing=True, with_corrupt=True):
    base = root / "VOC2007"
    ids = []
    write_image(base / "JPEGImages" / "000001.jpg", 60, 80, seed=1)
    write(base / "Annotations" / "000001.xml", ann_xml([obj_xml("dog", ("5", "6", "40", "50"))], 80, 60))
    ids.append("000001")
    write_image(base / "JPEGImages" / "000002.jpg", 40, 50, seed=2)
    write(
        base / "Annotations" / "000002.xml",
        ann_xml(
            [obj_xml("person", ("1", "1", "50", "40"), difficult="1"), obj_xml("cat", ("10", "10", "20", "30"))], 50, 40
        ),
    )
    ids.append("000002")
    if with_corrupt:
        os.makedirs(base / "JPEGImages", exist_ok=True)
        with open(base / "JPEGImages" / "000003.jpg", "wb") as f:
            f.write(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 10)
        write(base / "Annotations" / "000003.xml", ann_xml([obj_xml("cat", ("1", "1", "9", "9"))], 30, 30))
        ids.append("000003")
    write_image(base / "JPEGImages" / "000004.jpg", 30, 30, seed=4)
    write(base / "Annotations" / "000004.xml", ann_xml([obj_xml("bird", ("2", "2", "29", "29"))], 30, 30))
    ids.append("000004")
    if with_missing:
        write(base / "Annotations" / "000005.xml", ann_xml([obj_xml("cow", ("1", "1", "9", "9"))], 30, 30))
        ids.append("000005")
    write(base / "ImageSets" / "Main" / "trainval.txt", "\n".join(ids) + "\n")
    return base


def test_voc_detection_loads_real_jpegs(tmp_path):
    make_devkit(tmp_path, with_missing=False, with_corrupt=False)
    ds = VOCDetection(str(tmp_path), splits="2007_trainval")
    assert ds.classes == VOC_CLASSES and ds.num_classes == 20 and len(ds) == 3
    image, target = ds[1]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 40, 50)
    assert target["boxes"].canvas_size == (40, 50)
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[0.0, 0, 49, 39], [9, 9, 19, 29]])
    )
    assert target["labels"].tolist() == [VOC_MAP["person"], VOC_MAP["cat"]]
    assert target["difficult"].tolist() == [1, 0]
    assert target["image_id"] == "VOC2007/000002" and target["path"].endswith("000002.jpg")
    assert ds.bad_sample_log.summary() == "no bad samples"


@pytest.mark.parametrize(
    "splits", [(2007, "trainval"), ("2007", "trainval"), ["2007_trainval"], (("VOC2007", "trainval"),)]
)
def test_voc_split_forms_are_equivalent(tmp_path, splits):
    make_devkit(tmp_path, with_missing=False, with_corrupt=False)
    assert VOCDetection(str(tmp_path), splits=splits).image_ids == [
        "VOC2007/000001",
        "VOC2007/000002",
        "VOC2007/000004",
    ]


def test_voc_missing_split_file_is_named(tmp_path):
    make_devkit(tmp_path)
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCDetection(str(tmp_path), splits="2007_test")


def test_voc_skip_reports_missing_and_corrupt_images(tmp_path):
    make_devkit(tmp_path)
    ds = VOCDetection(str(tmp_path), splits="2007_trainval", on_bad_sample="skip")
    # the missing image is found at construction and dropped
    assert len(ds) == 4
    assert any(p.endswith("000005.jpg") for p in ds.bad_sample_log.paths)
    # the corrupt JPEG (index 2) is replaced by the next valid sample and reported with it
    image, target = ds[2]
    assert target["image_id"] == "VOC2007/000004"
    assert len(target["bad_samples"]) == 1 and target["bad_samples"][0][0].endswith("000003.jpg")
    summary = ds.bad_sample_log.summary()
    assert "000003.jpg" in summary and "decode" in summary and "000005.jpg" in summary
    # a valid sample carries an empty report
    assert ds[0][1]["bad_samples"] == []


def test_voc_drop_leaves_a_corrupt_image_out_and_each_image_comes_once(tmp_path):
    make_devkit(tmp_path, with_missing=False)
    ds = VOCDetection(str(tmp_path), splits="2007_trainval", transform=SSDValTransform(32), on_bad_sample="drop")
    dropped = ds[2]
    assert isinstance(dropped, DroppedSample) and dropped.problems[0][0].endswith("000003.jpg")
    assert "decode" in dropped.problems[0][1] and ds[3][1]["image_id"] == "VOC2007/000004"
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=detection_collate)
    assert [i for batch in loader for i in batch["image_ids"]] == [f"VOC2007/00000{k}" for k in (1, 2, 4)]


def test_voc_error_policy_raises_with_file_name(tmp_path):
    make_devkit(tmp_path)
    with pytest.raises(BadSampleError, match="000005.jpg"):
        VOCDetection(str(tmp_path), splits="2007_trainval", on_bad_sample="error")
    make_devkit(tmp_path / "b", with_missing=False)
    ds = VOCDetection(str(tmp_path / "b"), splits="2007_trainval", on_bad_sample="error")
    with pytest.raises(BadSampleError, match="000003.jpg.*decode"):
        ds[2]


def test_voc_bad_annotation_under_both_policies(tmp_path):
    base = make_devkit(tmp_path, with_missing=False, with_corrupt=False)
    write(
        base / "Annotations" / "000001.xml",
        ann_xml([obj_xml("dog", ("5", "6", "40", "50")), obj_xml("dog", ("9", "9", "9", "30"))], 80, 60),
    )
    write(base / "Annotations" / "000004.xml", "<annotation>")  # malformed
    ds = VOCDetection(str(tmp_path), splits="2007_trainval")
    assert ds.image_ids == ["VOC2007/000001", "VOC2007/000002"]
    assert len(ds.annotation(0).labels) == 1  # the degenerate box was dropped
    summary = ds.bad_sample_log.summary()
    assert "000001.xml" in summary and "degenerate" in summary and "000004.xml" in summary
    with pytest.raises(BadSampleError, match="000001.xml.*degenerate"):
        VOCDetection(str(tmp_path), splits="2007_trainval", on_bad_sample="error")


def test_voc_image_size_mismatch_is_a_bad_sample(tmp_path):
    base = make_devkit(tmp_path, with_missing=False, with_corrupt=False)
    write(base / "Annotations" / "000004.xml", ann_xml([obj_xml("bird", ("2", "2", "20", "20"))], 64, 64))
    ds = VOCDetection(str(tmp_path), splits="2007_trainval", on_bad_sample="error")
    with pytest.raises(BadSampleError, match="000004.jpg.*30x30.*64x64"):
        ds[2]


def test_voc_bad_samples_reach_the_main_process_through_workers(tmp_path):
    make_devkit(tmp_path)
    ds = VOCDetection(str(tmp_path), splits="2007_trainval")
    main_log = BadSampleLog()
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=2, collate_fn=detection_collate, multiprocessing_context="fork"
    )
    for batch in loader:
        main_log.record_batch(batch)
    assert [p for p, _ in main_log.entries] == [os.path.join(str(tmp_path), "VOC2007", "JPEGImages", "000003.jpg")]


def test_bad_sample_log_pickles_and_dedups():
    log = BadSampleLog()
    assert log.add("a.jpg", "cannot decode", warn=False)
    assert not log.add("a.jpg", "cannot decode", warn=False)
    log.add("b.xml", "object 0: missing <name>", warn=False)
    clone = pickle.loads(pickle.dumps(log))
    assert clone.entries == log.entries and len(clone) == 2
    assert "2 problem(s) in 2 file(s)" in clone.summary()
    err = pickle.loads(pickle.dumps(BadSampleError("x.jpg", "broken")))
    assert (err.path, err.reason, str(err)) == ("x.jpg", "broken", "x.jpg: broken")


# --- VOCFolder -------------------------------------------------------------------------------------


def make_folder(root, with_sets=True):
    for k, (names, size) in enumerate([(["Zebra", "apple"], (40, 30)), (["apple"], (20, 20)), (["kiwi"], (30, 30))]):
        stem = f"img{k}"
        write_image(root / "JPEGImages" / f"{stem}.jpg", size[1], size[0], seed=k)
        write(
            root / "Annotations" / f"{stem}.xml",
            ann_xml([obj_xml(n, ("2", "2", "10", "10")) for n in names], size[0], size[1], f"{stem}.jpg"),
        )
    if with_sets:
        write(root / "ImageSets" / "Main" / "train.txt", "img0\nimg1\n")
        write(root / "ImageSets" / "Main" / "val.txt", "img2\n")


def test_voc_folder_collects_sorted_classes_from_all_xmls(tmp_path):
    make_folder(tmp_path)
    train = VOCFolder(str(tmp_path), split="train")
    val = VOCFolder(str(tmp_path), split="val")
    assert train.classes == val.classes == ("Zebra", "apple", "kiwi")
    assert len(train) == 2 and len(val) == 1
    assert train[0][1]["labels"].tolist() == [0, 1]
    assert val[0][1]["labels"].tolist() == [2]


def test_voc_folder_without_split_files_holds_out_a_validation_split(tmp_path):
    make_folder(tmp_path, with_sets=False)
    train, val = VOCFolder(str(tmp_path), split="train"), VOCFolder(str(tmp_path), split="val")
    assert sorted(train.image_ids + val.image_ids) == ["img0", "img1", "img2"]
    assert val.image_ids and not set(train.image_ids) & set(val.image_ids)
    assert "held out for validation by a hash of the image id" in val.holdout and train.holdout
    assert VOCFolder(str(tmp_path), split="val").image_ids == val.image_ids  # deterministic
    assert VOCFolder(str(tmp_path)).image_ids == ["img0", "img1", "img2"] and VOCFolder(str(tmp_path)).holdout is None
    with pytest.raises(FileNotFoundError, match="test.txt.*train"):
        make_folder(tmp_path / "s")
        VOCFolder(str(tmp_path / "s"), split="test")


def test_holdout_is_about_ten_percent_and_each_image_keeps_its_side():
    ids = [f"photo_{i:05d}" for i in range(3000)]
    held = holdout_split(ids)
    assert 0.08 < len(held) / len(ids) < 0.12
    assert holdout_split(ids[:1000]) == {i for i in held if i in set(ids[:1000])}  # adding images moves none


def test_voc_folder_chosen_classes_leave_the_others_out_counted(tmp_path):
    """A class list chosen on purpose: the other classes' objects are left out as GluonCV does, counted by name in
    one note, not reported object by object, and not an error under "error"."""
    make_folder(tmp_path)
    for policy in ("skip", "error"):
        ds = VOCFolder(str(tmp_path), classes=["apple", "kiwi"], on_bad_sample=policy)
        assert ds.classes == ("apple", "kiwi")
        assert ds[0][1]["labels"].tolist() == [0]
        assert "Zebra" not in ds.bad_sample_log.summary()
        assert ds.other_classes == {"Zebra": 1}
        assert ds.classes_note == "1 object of classes outside the 2 chosen left out: Zebra 1"
    assert VOCFolder(str(tmp_path)).classes_note is None  # every class found in the folder


def test_voc_unknown_class_is_reported_unless_a_subset_was_chosen(tmp_path):
    """The standard 20 VOC classes: a name outside them is a bad annotation (a typo), named under "error"; a chosen
    subset leaves the other classes' objects out, counted."""
    root = tmp_path / "VOC2007"
    write(root / "Annotations" / "a.xml", ann_xml([obj_xml("dog"), obj_xml("cat"), obj_xml("dgo")]))
    write(root / "ImageSets" / "Main" / "x.txt", "a\n")
    write_image(root / "JPEGImages" / "a.jpg", 375, 500)
    with pytest.raises(BadSampleError, match="a.xml.*'dgo'"):
        VOCDetection(str(tmp_path), splits="2007_x", on_bad_sample="error")
    full = VOCDetection(str(tmp_path), splits="2007_x")
    assert len(full[0][1]["labels"]) == 2 and "'dgo'" in full.bad_sample_log.summary() and not full.other_classes
    subset = VOCDetection(str(tmp_path), splits="2007_x", classes=["cat"], on_bad_sample="error")
    assert subset[0][1]["labels"].tolist() == [0] and subset.other_classes == {"dgo": 1, "dog": 1}


def test_voc_folder_finds_png_via_filename(tmp_path):
    from torchvision.io import write_png

    os.makedirs(tmp_path / "JPEGImages")
    write_png(torch.zeros(3, 12, 16, dtype=torch.uint8), str(tmp_path / "JPEGImages" / "shot.png"))
    write(tmp_path / "Annotations" / "shot.xml", ann_xml([obj_xml("a", ("1", "1", "5", "5"))], 16, 12, "shot.png"))
    ds = VOCFolder(str(tmp_path))
    image, target = ds[0]
    assert tuple(image.shape) == (3, 12, 16) and target["path"].endswith("shot.png")


def test_classes_argument_is_validated(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ValueError, match="duplicates"):
        VOCFolder(str(tmp_path), classes=["apple", "apple"])
    with pytest.raises(ValueError, match="on_bad_sample"):
        VOCFolder(str(tmp_path), on_bad_sample="ignore")
