"""ssdkit.data.transforms.pipelines: the SSD train/val pipelines and torchvision's flip in them."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssdkit.constants import IMAGENET_MEAN, IMAGENET_STD
from ssdkit.data.transforms.color import RandomColorDistort
from ssdkit.data.transforms.geometry import RandomExpand
from ssdkit.data.transforms.pipelines import SSDTrainTransform, SSDValTransform

from conftest import plain
from conftest import transform_sample as sample

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flip_maps_x1_to_w_minus_x2():
    image, target = sample()
    out, tgt = v2.RandomHorizontalFlip(p=1.0)(image, target)
    b = plain(target["boxes"])
    expected = torch.stack([80 - b[:, 2], b[:, 1], 80 - b[:, 0], b[:, 3]], dim=1)
    assert torch.equal(plain(tgt["boxes"]), expected)
    assert torch.equal(plain(out), plain(image).flip(-1))
    assert any(isinstance(t, v2.RandomHorizontalFlip) and t.p == 0.5 for t in SSDTrainTransform(32).transforms)


def test_train_preset_output_and_reproducibility():
    image, target = sample(h=90, w=120, boxes=[(5, 5, 60, 70), (70, 20, 118, 88), (30, 40, 50, 60)])
    t = SSDTrainTransform(64)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(t(image, target))
    (a, ta), (b, tb), (c, tc) = outs
    assert torch.equal(plain(a), plain(b)) and torch.equal(plain(ta["boxes"]), plain(tb["boxes"]))
    assert not torch.equal(plain(a), plain(c))
    for seed in range(40):
        torch.manual_seed(seed)
        img, tgt = t(image, target)
        assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
        boxes = plain(tgt["boxes"])
        assert len(boxes) == len(tgt["labels"]) == len(tgt["difficult"]) >= 1
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(tgt["labels"].tolist()) <= {10, 11, 12}
        assert tgt["boxes"].canvas_size == (64, 64)


def test_val_preset_normalises_and_keeps_difficult():
    value = torch.tensor(IMAGENET_MEAN) * 255 + torch.tensor(IMAGENET_STD) * 255  # -> exactly 1 after normalising
    image = tv_tensors.Image(value.view(3, 1, 1).expand(3, 60, 80).round().to(torch.uint8))
    _, target = sample()
    out, tgt = SSDValTransform(32)(image, target)
    expected = ((value.round() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)
    torch.testing.assert_close(plain(out), expected.expand(3, 32, 32))
    torch.testing.assert_close(plain(tgt["boxes"]), plain(target["boxes"]) * torch.tensor([0.4, 32 / 60, 0.4, 32 / 60]))
    assert torch.equal(tgt["difficult"], target["difficult"]) and torch.equal(tgt["labels"], target["labels"])
    out_b, _ = SSDValTransform(32, interpolation="bilinear")(image, target)
    torch.testing.assert_close(plain(out_b), expected.expand(3, 32, 32))


def test_val_preset_shortcut_equals_compose():
    """A uint8 image already at the output size skips the per-transform dispatch and gives Compose's result."""
    from ssdkit.data import SyntheticShapes

    t = SSDValTransform(48)
    data = SyntheticShapes(6, seed=3, image_size=48)
    for k in range(len(data)):
        image, target = data[k]
        target["extra"] = [torch.arange(3), ("a", 1)]
        slow = v2.Compose.forward(t, image, target)
        with mock.patch.object(v2.Compose, "forward", side_effect=AssertionError("no shortcut")):
            fast = t(image, target)
        assert isinstance(fast[0], tv_tensors.Image) and torch.equal(plain(fast[0]), plain(slow[0]))
        assert fast[1].keys() == slow[1].keys()
        assert torch.equal(plain(fast[1]["boxes"]), plain(slow[1]["boxes"]))
        assert fast[1]["boxes"].canvas_size == slow[1]["boxes"].canvas_size == (48, 48)
        for key in ("labels", "difficult"):
            assert torch.equal(fast[1][key], slow[1][key])
        assert fast[1] is not target and fast[1]["path"] == target["path"]
    # anything else goes through Compose: another size, a float image, a second image in the target
    image, target = data[0]
    for args in (
        (tv_tensors.Image(plain(image)[:, :40]), target),
        (tv_tensors.Image(plain(image).float()), target),
        (image, {**target, "mask_image": tv_tensors.Image(plain(image))}),
    ):
        out = t(*args)
        assert torch.equal(plain(out[0]), plain(v2.Compose.forward(t, *args)[0])) and out[0].shape[-2:] == (48, 48)


def test_transforms_compose_with_torchvision():
    image, target = sample()
    pipeline = v2.Compose(
        [
            RandomColorDistort(p=1.0),
            v2.RandomHorizontalFlip(p=1.0),
            RandomExpand(p=1.0),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(labels_getter=lambda s: (s[1]["labels"], s[1]["difficult"])),
        ]
    )
    torch.manual_seed(0)
    out, tgt = pipeline(image, target)
    assert out.dtype == torch.float32 and len(tgt["boxes"]) == len(tgt["labels"]) == 3


def test_train_preset_expand_ratio_is_configurable():
    default = [t for t in SSDTrainTransform(32).transforms if isinstance(t, RandomExpand)]
    off = [t for t in SSDTrainTransform(32, expand_max_ratio=1).transforms if isinstance(t, RandomExpand)]
    assert default[0].max_ratio == 4.0 and off[0].max_ratio == 1
    torch.manual_seed(0)
    assert not any(off[0].make_params([sample()[0]])["apply"] for _ in range(20))
