"""Bad data, fuzzed: corrupt small generated data sets, train one short epoch. Every corrupted sample is skipped
and reported (the reported files equal the corrupted files), every clean image is trained on, nothing dies."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torchvision.io import encode_jpeg

from ssdkit.data.collate import TargetCollate
from ssdkit.engine.config import TrainConfig
from ssdkit.engine.trainer import fit

N_TRAIN, W, H = 6, 40, 32
IMAGE_FAULTS = ("truncated_jpeg", "garbage_jpeg", "empty_file")
VOC_FAULTS = IMAGE_FAULTS + ("malformed_xml", "nan_box", "inverted_box", "outside_box", "unknown_class")
COCO_FAULTS = IMAGE_FAULTS + (
    "nan_box",
    "negative_size_box",
    "outside_box",
    "unknown_category",
    "short_bbox",
    "no_image_size",
    "missing_image",
)


def _jpeg(path: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(encode_jpeg(torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=g)).numpy().tobytes())


def _corrupt_image(path: str, fault: str) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(
            {"truncated_jpeg": data[: len(data) // 2], "garbage_jpeg": os.urandom(len(data)), "empty_file": b""}[fault]
        )


def _voc_object(name: str, box) -> str:
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def make_voc(root: str, faults: dict[int, str]) -> tuple[set[str], set[str], set[str]]:
    """VOC folder of 6 train + 2 val images, two objects each; ``faults`` corrupts train image k.
    Returns (corrupted files, train ids with a usable image, train ids with a broken image). An object of a class
    outside the chosen ``["a", "b"]`` is no corruption: it is left out and counted in the run's notes."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    ids = [f"t{k}" for k in range(N_TRAIN)] + ["v0", "v1"]
    corrupted, usable, broken = set(), set(), set()
    for k, stem in enumerate(ids):
        image, xml = os.path.join(root, "JPEGImages", stem + ".jpg"), os.path.join(root, "Annotations", stem + ".xml")
        _jpeg(image, k)
        second = ("b", (20, 16, 36, 30))
        fault = faults.get(k)
        if fault == "nan_box":
            second = ("b", ("nan", 16, 36, 30))
        elif fault == "inverted_box":
            second = ("b", (36, 16, 20, 30))
        elif fault == "outside_box":
            second = ("b", (60, 50, 80, 70))
        elif fault == "unknown_class":
            second = ("zebra", (20, 16, 36, 30))
        text = (
            f"<annotation><filename>{stem}.jpg</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{_voc_object('a', (2, 2, 18, 14))}{_voc_object(*second)}</annotation>"
        )
        if fault == "malformed_xml":
            text = text[: len(text) // 2]
        with open(xml, "w") as f:
            f.write(text)
        if fault in IMAGE_FAULTS:
            _corrupt_image(image, fault)
        if fault is not None:
            if fault != "unknown_class":
                corrupted.add(image if fault in IMAGE_FAULTS else xml)
            (broken if fault in IMAGE_FAULTS + ("malformed_xml",) else usable).add(stem)
        elif k < N_TRAIN:
            usable.add(stem)
    with open(os.path.join(root, "ImageSets/Main/train.txt"), "w") as f:
        f.write("\n".join(ids[:N_TRAIN]) + "\n")
    with open(os.path.join(root, "ImageSets/Main/val.txt"), "w") as f:
        f.write("v0\nv1\n")
    return corrupted, usable, broken


def make_coco(root: str, faults: dict[int, str]) -> tuple[set[str], set[str], set[str]]:
    """COCO root with instances_train (6 images) and instances_val (2), two boxes per image."""
    corrupted, usable, broken = set(), set(), set()
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    for split, count, first_id in (("train", N_TRAIN, 100), ("val", 2, 200)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, anns = [], []
        for k in range(count):
            image_id, name = first_id + k, f"{split}{k}.jpg"
            path = os.path.join(root, split, name)
            _jpeg(path, first_id + k)
            entry = {"id": image_id, "file_name": name, "width": W, "height": H}
            second = {"bbox": [20, 16, 16, 14], "category_id": 7}
            fault = faults.get(k) if split == "train" else None
            if fault == "nan_box":
                second["bbox"] = [float("nan"), 16, 16, 14]
            elif fault == "negative_size_box":
                second["bbox"] = [20, 16, -16, 14]
            elif fault == "outside_box":
                second["bbox"] = [60, 50, 10, 10]
            elif fault == "unknown_category":
                second["category_id"] = 99
            elif fault == "short_bbox":
                second["bbox"] = [20, 16, 16]
            elif fault == "no_image_size":
                del entry["width"]
            elif fault == "missing_image":
                os.unlink(path)
            elif fault in IMAGE_FAULTS:
                _corrupt_image(path, fault)
            images.append(entry)
            for j, ann in enumerate(({"bbox": [2, 2, 16, 12], "category_id": 3}, second)):
                anns.append({"id": image_id * 10 + j, "image_id": image_id, "iscrowd": 0, "area": 150.0, **ann})
            if fault is not None:
                corrupted.add(path)
                image_ok = fault not in IMAGE_FAULTS + ("no_image_size", "missing_image")
                (usable if image_ok else broken).add(image_id)
            elif split == "train":
                usable.add(image_id)
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats}, f, allow_nan=True)
    return corrupted, usable, broken


@st.composite
def fault_plans(draw):
    kind = draw(st.sampled_from(["voc-folder", "coco"]))
    faults = VOC_FAULTS if kind == "voc-folder" else COCO_FAULTS
    images = draw(st.lists(st.integers(0, N_TRAIN - 1), min_size=1, max_size=N_TRAIN - 2, unique=True))
    return kind, {k: draw(st.sampled_from(faults)) for k in images}


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(plan=fault_plans())
@example(plan=("voc-folder", {0: "unknown_class", 3: "truncated_jpeg"}))
def test_corrupted_samples_are_skipped_and_reported_and_clean_ones_trained_on(plan, monkeypatch):
    kind, faults = plan
    seen: list = []
    collate = TargetCollate.__call__

    def spy(self, batch):
        out = collate(self, batch)
        seen.extend(out["image_ids"])
        return out

    monkeypatch.setattr(TargetCollate, "__call__", spy)
    root = tempfile.mkdtemp(prefix="ssdkit-fuzz-")
    try:
        corrupted, usable, broken = (make_voc if kind == "voc-folder" else make_coco)(
            os.path.join(root, "data"), faults
        )
        cfg = TrainConfig(
            dataset=kind,
            data_root=os.path.join(root, "data"),
            model="ssd_tiny_custom",
            data_shape=64,
            batch_size=2,
            epochs=1,
            procs=1,
            num_workers=0,
            augment="none",
            amp=False,
            progress=False,
            output=os.path.join(root, "run"),
            lr=0.01,
            classes=["a", "b"] if kind == "voc-folder" else None,
            train_splits="train" if kind == "voc-folder" else "instances_train",
            val_splits="val" if kind == "voc-folder" else "instances_val",
        )
        said: list[str] = []
        result = fit(cfg, say=said.append)
        reported = torch.load(os.path.join(root, "run", "last.pt"), weights_only=True)["bad_samples"]
        assert {path for path, _ in reported} == corrupted, (faults, reported)
        assert usable <= set(seen) and not set(seen) & broken, (faults, seen)
        assert math.isfinite(float(result.history[0]["train_loss"]))
        zebras = sum(fault == "unknown_class" for fault in faults.values())
        objects = "object" if zebras == 1 else "objects"
        expected = (
            f"  training split: {zebras} {objects} of classes outside the 2 chosen left out: zebra {zebras} (--classes)"
        )
        assert [line for line in said if "chosen left out" in line] == ([expected] if zebras else []), said
    finally:
        shutil.rmtree(root, ignore_errors=True)
