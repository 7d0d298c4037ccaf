"""engine/builders/data.py: the loaders of a run's splits and their bad-image handling."""

from __future__ import annotations

import os

import pytest
import torch
from torchvision.io import write_jpeg

from ssdkit.data.errors import BadSampleLog
from ssdkit.engine.builders import build_datasets, build_loader
from ssdkit.engine.config import ConfigError, TrainConfig, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD = ("img0", "img1", "img2")


def make_folder(root):
    """A VOC folder of three good images and one that does not decode, with the splits the tests use."""
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(root / d, exist_ok=True)
    box = "<bndbox><xmin>3</xmin><ymin>3</ymin><xmax>20</xmax><ymax>20</ymax></bndbox>"
    xml = f"<annotation><size><width>32</width><height>32</height></size><object><name>dot</name>{box}</object>"
    for k, stem in enumerate(GOOD):
        write_jpeg(torch.full((3, 32, 32), 40 * k, dtype=torch.uint8), str(root / "JPEGImages" / f"{stem}.jpg"))
        (root / "Annotations" / f"{stem}.xml").write_text(xml + "</annotation>")
    (root / "JPEGImages" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 10)
    (root / "Annotations" / "bad.xml").write_text(xml + "</annotation>")
    splits = {"train": GOOD, "val": GOOD, "valbad": ("bad", "img0", "bad", "img1", "img2"), "allbad": ("bad", "bad")}
    for name, stems in splits.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(stems) + "\n")


def config(root, **kw):
    kw = {"train_splits": "train", "val_splits": "val", "batch_size": 2, "num_workers": 0, **kw}
    return resolve_config(TrainConfig(dataset="voc-folder", data_root=str(root), model="ssd_tiny_custom", **kw))


def val_loader(cfg):
    _, val_set, _ = build_datasets(cfg, 32, train=False)
    return build_loader(val_set, cfg, train=False)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_an_unreadable_val_image_is_left_out_never_replaced(tmp_path, batch_size):
    make_folder(tmp_path)
    log = BadSampleLog()
    ids = []
    for batch in val_loader(config(tmp_path, val_splits="valbad", batch_size=batch_size)):
        assert len(batch["images"]) > 0  # the evaluation loop gets images to score only
        log.record_batch(batch)
        ids += batch["image_ids"]
    assert ids == list(GOOD)  # each image once, as on the split without the bad file
    assert log.paths == [str(tmp_path / "JPEGImages" / "bad.jpg")] and log.dropped == 2


def test_skip_still_replaces_a_bad_training_image(tmp_path):
    make_folder(tmp_path)
    train_set, _, _ = build_datasets(config(tmp_path, train_splits="valbad"), 32, val=False)
    assert train_set[0][1]["image_id"] == "img0" and train_set.on_bad_sample == "skip"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_val_split_without_a_readable_image_is_a_config_error(tmp_path, workers):
    make_folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        list(val_loader(config(tmp_path, val_splits="allbad", num_workers=workers)))
    message = str(info.value)
    assert message.startswith("the val split of --dataset voc-folder (--val-splits allbad): none of its 2 images")
    assert "bad.jpg: cannot decode image" in message and "\n" not in message


@pytest.mark.parametrize("workers", [0, 1])
def test_a_train_split_without_a_readable_image_is_a_config_error(tmp_path, workers):
    make_folder(tmp_path)
    cfg = config(tmp_path, train_splits="allbad", num_workers=workers)
    train_set, _, _ = build_datasets(cfg, 32, val=False)
    loader = build_loader(train_set, cfg, train=True, anchors=torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]))
    with pytest.raises(ConfigError) as info:
        next(iter(loader))
    message = str(info.value)
    assert message.startswith("the train split of --dataset voc-folder (--train-splits allbad): none of its 2 images")
    assert "\n" not in message


def test_voc_classes_subset_reaches_the_data_and_the_notes_count_the_rest(tmp_path):
    """--classes on VOC: the data sets carry the subset (a *_custom model then predicts it), and the run's notes
    count the other classes' objects left out of each split."""
    from test_data_voc import ann_xml, obj_xml, write, write_image

    from ssdkit.engine.builders.run import _split_notes

    root = tmp_path / "VOC2007"
    write(root / "Annotations" / "a.xml", ann_xml([obj_xml("dog"), obj_xml("cat"), obj_xml("cat")]))
    for split in ("tr", "te"):
        write(root / "ImageSets" / "Main" / f"{split}.txt", "a\n")
    write_image(root / "JPEGImages" / "a.jpg", 375, 500)
    cfg = resolve_config(
        TrainConfig(
            dataset="voc",
            data_root=str(tmp_path),
            train_splits="2007_tr",
            val_splits="2007_te",
            classes=["dog"],
            model="ssd_300_vgg16_atrous_custom",
            num_workers=0,
        )
    )
    train_set, val_set, classes = build_datasets(cfg, 300)
    assert tuple(classes) == ("dog",) and train_set[0][1]["labels"].tolist() == [0]
    notes = _split_notes(cfg, train_set, val_set)
    assert "  training split: 2 objects of classes outside the 1 chosen left out: cat 2 (--classes)" in notes
    assert any(n.startswith("  validation split: 2 objects") for n in notes)
