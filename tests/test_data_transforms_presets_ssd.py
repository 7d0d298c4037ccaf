"""GluonCV's transform names (ssdkit.data.transforms.presets.ssd) against GluonCV 0.10.5 (tests/data/presets_ssd*)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

import ssdkit
from ssdkit.constants import IMAGENET_STD
from ssdkit.data.transforms.presets.ssd import SSDDefaultTrainTransform, SSDDefaultValTransform, load_test

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
REF = np.load(DATA / "presets_ssd.npz")
ONE_LEVEL = 1 / 255 / min(IMAGENET_STD) + 1e-5  # one grey level after normalisation


fixtures = load_tool("make_transform_fixtures")


@pytest.mark.parametrize("case", fixtures.VAL_CASES)
def test_val_transform_is_gluoncv(case):
    seed, h, w, out_w, out_h = case
    image, label = fixtures.make_val_case(seed, h, w)
    x, bbox = SSDDefaultValTransform(out_w, out_h)(image, label)
    ref = REF[f"val_{seed}_image"]
    assert x.shape == ref.shape == (3, out_h, out_w) and x.dtype == torch.float32
    diff = np.abs(x.numpy() - ref)
    # OpenCV's 8-bit fixed point vs float weights rounded back to uint8: some pixels one level off (linear most)
    assert diff.max() <= ONE_LEVEL
    assert (diff > 1e-5).mean() < 0.2
    np.testing.assert_array_equal(bbox.numpy(), REF[f"val_{seed}_label"])  # boxes scaled in float64, then float32


def test_train_transform_targets_are_gluoncv(anchors300, grid300):
    """GluonCV's augmentation is random; its targets for the augmented label it produced are not."""
    image, _ = fixtures.make_val_case(fixtures.TRAIN_SEED, 240, 320)
    augmented = REF["train_label"]
    for grid in (None, grid300):
        transform = SSDDefaultTrainTransform(300, 300, anchors300, anchor_grid=grid)
        boxes = tv_tensors.BoundingBoxes(
            torch.from_numpy(augmented[:, :4]).double(), format="XYXY", canvas_size=(300, 300)
        )
        drawn = {"boxes": boxes, "labels": torch.from_numpy(augmented[:, 4:]).double()}  # what GluonCV drew
        transform._pipeline = lambda img, target, drawn=drawn: (img, drawn)
        x, cls_targets, box_targets = transform(image, fixtures.make_val_case(fixtures.TRAIN_SEED, 240, 320)[1])
        np.testing.assert_array_equal(cls_targets.numpy(), REF["train_cls_targets"])
        np.testing.assert_allclose(box_targets.numpy(), REF["train_box_targets"], atol=1e-5)
    assert (REF["train_cls_targets"] > 0).sum() >= len(augmented)


def test_train_transform_output_shapes_and_label_columns():
    torch.manual_seed(0)
    image, label = fixtures.make_val_case(0, 90, 120)
    x, bbox = SSDDefaultTrainTransform(64, 48)(image, label)
    assert x.shape == (3, 48, 64) and x.dtype == torch.float32
    assert bbox.shape[1] == 6 and bbox.dtype == torch.float32 and 1 <= bbox.shape[0] <= 4
    kept = [tuple(row) for row in label[:, 4:].tolist()]
    assert all(tuple(row) in kept for row in bbox[:, 4:].tolist())  # class and difficult follow their boxes
    assert (bbox[:, :4] >= 0).all() and (bbox[:, [0, 2]] <= 64).all() and (bbox[:, [1, 3]] <= 48).all()


@pytest.mark.parametrize("case", fixtures.LOAD_CASES)
def test_load_test_is_gluoncv(case):
    seed, _, _, short, max_size = case
    x, orig = ssdkit.load_test(str(DATA / f"presets_ssd_{seed}.png"), short=short, max_size=max_size)
    ref_x, ref_orig = REF[f"load_{seed}_x"], REF[f"load_{seed}_orig"]
    assert x.shape == ref_x.shape and orig.shape == ref_orig.shape and orig.dtype == np.uint8
    assert np.abs(orig.astype(int) - ref_orig).max() <= 1
    assert np.abs(x.numpy() - ref_x).max() <= ONE_LEVEL
    xs, origs = load_test([str(DATA / f"presets_ssd_{seed}.png")] * 2, short=short, max_size=max_size)
    assert len(xs) == len(origs) == 2 and torch.equal(xs[0], x)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="src"):
        SSDDefaultValTransform(32, 32)(np.zeros((3, 32, 32), np.uint8), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="label"):
        SSDDefaultValTransform(32, 32)(np.zeros((32, 32, 3), np.uint8), np.zeros((1, 4)))
