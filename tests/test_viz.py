"""plot_bbox as GluonCV's: boxes above the threshold with a label >= 0, one colour per class, "name score" labels
on a filled background; sizes follow the image; returns the axes."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ssdkit.viz import class_color, plot_bbox, save_detections


def drawn(ax):
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    return rects, [t for t in ax.texts]


def test_plot_bbox_filters_and_labels():
    img = np.zeros((200, 300, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 50, 60], [100, 100, 150, 180], [5, 5, 30, 30], [0, 0, 1, 1]], dtype=np.float32)
    scores = np.array([[0.9], [0.6], [0.2], [0.95]])
    labels = np.array([[0], [1], [0], [-1]])  # the last row is GluonCV's -1 padding
    ax = plot_bbox(img, boxes, scores, labels, thresh=0.5, class_names=["cat", "dog"], ax=Figure().add_subplot())
    rects, texts = drawn(ax)
    assert len(rects) == 2 and [t.get_text() for t in texts] == ["cat 0.900", "dog 0.600"]
    assert rects[0].get_edgecolor()[:3] == pytest.approx(class_color(0))
    assert rects[1].get_edgecolor()[:3] == pytest.approx(class_color(1))
    assert texts[0].get_bbox_patch() is not None  # a filled background
    assert rects[0].get_width() == pytest.approx(40) and rects[0].get_xy() == pytest.approx((10, 20))


def test_tensor_inputs_relative_coordinates_and_errors():
    img = torch.zeros(3, 100, 200, dtype=torch.uint8)  # CHW tensor
    ax = plot_bbox(
        img,
        torch.tensor([[0.1, 0.1, 0.5, 0.5]]),
        torch.tensor([0.7]),
        torch.tensor([2.0]),
        absolute_coordinates=False,
        ax=Figure().add_subplot(),
    )
    rects, texts = drawn(ax)
    assert rects[0].get_xy() == pytest.approx((20, 10)) and texts[0].get_text() == "2 0.700"
    with pytest.raises(ValueError, match="labels"):
        plot_bbox(img, np.zeros((2, 4)), labels=np.zeros(3), ax=Figure().add_subplot())


def test_sizes_follow_the_image():
    def sizes(h, w):
        ax = plot_bbox(np.zeros((h, w, 3), np.uint8), [[1, 1, 5, 5]], [1.0], [0], ax=Figure().add_subplot())
        rects, texts = drawn(ax)
        return rects[0].get_linewidth(), texts[0].get_fontsize()

    small, large = sizes(120, 160), sizes(1200, 1600)
    assert large[0] > small[0] and large[1] > small[1]
    assert len({class_color(i) for i in range(20)}) == 20


def test_save_detections_writes_the_image_size(tmp_path):
    from PIL import Image

    path = save_detections(
        np.full((90, 160, 3), 128, np.uint8),
        str(tmp_path / "p.png"),
        [[10, 10, 60, 50]],
        [0.8],
        [0],
        class_names=["cat"],
    )
    with Image.open(path) as im:
        assert im.size == (160, 90)
        assert np.asarray(im.convert("RGB")).std() > 0  # something was drawn on the flat grey image
