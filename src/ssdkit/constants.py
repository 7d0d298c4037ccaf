"""Constants shared by the data sets, the transforms and the models, each defined once here."""

from __future__ import annotations

__all__ = ["BOX_STDS", "IMAGENET_MEAN", "IMAGENET_STD", "POSITIVE_WEIGHTS", "VOC_CLASSES"]

#: ImageNet RGB mean and standard deviation on the 0-1 scale (GluonCV's ``mean``/``std`` defaults).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Standard deviations of SSD's box encoding ``(cx, cy, w, h)`` (GluonCV's ``stds`` / ``box_norm``).
BOX_STDS = (0.1, 0.1, 0.2, 0.2)

#: How the SSD loss can weigh its positive anchors: ``"anchor"`` 1 each (GluonCV), ``"object"`` every matched
#: object of an image alike (:func:`ssdkit.targets.object_balanced_weights`).
POSITIVE_WEIGHTS = ("anchor", "object")

#: Pascal VOC's 20 classes in GluonCV's order (ids 0-19).
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
