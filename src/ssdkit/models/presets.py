"""Model presets: class lists, anchor presets and the zoo table (GluonCV 0.10.5 ``model_zoo/ssd/presets.py``), with
the training defaults that belong to a model (``match_iou``), as timm keeps its defaults with the model.

| zoo name                              | backbone         | input | anchors (at input) |
| ------------------------------------- | ---------------- | ----- | ------------------ |
| ``ssd_300_vgg16_atrous_{voc,coco,custom}`` | VGG16-atrous | 300   | 8732               |
| ``ssd_512_vgg16_atrous_{voc,coco,custom}`` | VGG16-atrous | 512   | 24564              |
| ``ssd_512_resnet50_v1_{voc,coco,custom}``  | ResNet-50 v1 | 512   | 6132               |
| ``ssd_512_mobilenet1.0_{voc,coco,custom}`` | MobileNet 1.0 | 512  | 6132               |
| ``ssd_tiny48_synthetic``, ``ssd_tiny48_custom`` | tiny, 48-channel stem (CPU) | 128 | 2730     |
| ``ssd_tiny_synthetic``, ``ssd_tiny_custom`` | tiny, 64-channel stem (CPU) | 128 | 2730         |

``*_custom`` models take GluonCV's sizes for the custom variant (the COCO sizes, except MobileNet which
uses the VOC ones, as GluonCV does).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..anchors import AnchorSpec
from ..constants import VOC_CLASSES
from .tiny import DEFAULT_SYNTHETIC_CLASSES, TINY_ANCHORS, TINY_DATA_SHAPE, TINY_MATCH_IOU

__all__ = ["VOC_CLASSES", "COCO_CLASSES", "ModelPreset", "PRESETS"]

COCO_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

_R3 = (1, 2, 0.5)
_R5 = (1, 2, 0.5, 3, 1.0 / 3)
_RATIOS_6 = (_R3,) + (_R5,) * 3 + (_R3,) * 2
_RATIOS_7 = (_R3,) + (_R5,) * 4 + (_R3,) * 2

VGG300_VOC = AnchorSpec((30, 60, 111, 162, 213, 264, 315), _RATIOS_6, (8, 16, 32, 64, 100, 300))
VGG300_COCO = AnchorSpec((21, 45, 99, 153, 207, 261, 315), _RATIOS_6, (8, 16, 32, 64, 100, 300))
VGG512 = AnchorSpec((51.2, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6), _RATIOS_7, (8, 16, 32, 64, 128, 256, 512))
R512_VOC = AnchorSpec((51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492), _RATIOS_6, (16, 32, 64, 128, 256, 512))
R512_COCO = AnchorSpec((51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72), _RATIOS_6, (16, 32, 64, 128, 256, 512))


@dataclass(frozen=True)
class ModelPreset:
    """One zoo entry.

    ``classes`` is None for ``*_custom`` models (the caller gives them). ``extras_init`` is the default
    scheme of the extra blocks; heads default to ``"xavier"``. ``transfer_prefix`` + ``"voc"``/``"coco"``
    names the model a custom one can transfer from. ``match_iou`` is the training default that belongs to the
    model's anchors (``TrainConfig.match_iou`` when unset): an anchor with at least this IoU to a ground truth is a
    positive. GluonCV's 0.5 suits its anchors; the tiny models' finest anchors (10 px at a 4 px step) overlap the
    smallest objects (8-12 px) too little for 0.5, and 0.4 gives each of them about three positives.
    ``positive_weights`` (``TrainConfig.positive_weights`` when unset) is how the loss weighs the positives:
    ``"anchor"`` 1 each as GluonCV; the tiny models take ``"object"``, every object alike, since a 60 px shape
    matches several times the anchors of a 10 px one and would otherwise dominate the loss.
    ``nchw_without_avx512``: train in NCHW, not NHWC, in float32 on CPUs without AVX-512
    (:func:`ssdkit.engine.builders.runtime.run_memory_format`).
    """

    name: str
    backbone: str
    data_shape: int
    anchor_spec: AnchorSpec
    classes: tuple[str, ...] | None
    extras_init: str
    transfer_prefix: str | None = None
    default_classes: tuple[str, ...] | None = None
    match_iou: float = 0.5
    positive_weights: str = "anchor"
    nchw_without_avx512: bool = False


def _zoo() -> dict[str, ModelPreset]:
    table = {}
    rows = [
        ("ssd_300_vgg16_atrous_", "vgg16_atrous_300", 300, VGG300_VOC, VGG300_COCO, VGG300_COCO, "kaiming_fan_out"),
        ("ssd_512_vgg16_atrous_", "vgg16_atrous_512", 512, VGG512, VGG512, VGG512, "kaiming_fan_out"),
        ("ssd_512_resnet50_v1_", "resnet50_v1", 512, R512_VOC, R512_COCO, R512_COCO, "uniform"),
        ("ssd_512_mobilenet1.0_", "mobilenet1.0", 512, R512_VOC, R512_VOC, R512_VOC, "uniform"),
    ]
    for prefix, backbone, size, voc, coco, custom, extras_init in rows:
        nchw = backbone.startswith("vgg")
        table[prefix + "voc"] = ModelPreset(
            prefix + "voc", backbone, size, voc, VOC_CLASSES, extras_init, nchw_without_avx512=nchw
        )
        table[prefix + "coco"] = ModelPreset(
            prefix + "coco", backbone, size, coco, COCO_CLASSES, extras_init, nchw_without_avx512=nchw
        )
        table[prefix + "custom"] = ModelPreset(
            prefix + "custom",
            backbone,
            size,
            custom,
            None,
            extras_init,
            transfer_prefix=prefix,
            nchw_without_avx512=nchw,
        )
    for prefix, backbone in (("ssd_tiny48_", "tiny48"), ("ssd_tiny_", "tiny")):
        table[prefix + "synthetic"] = ModelPreset(
            prefix + "synthetic",
            backbone,
            TINY_DATA_SHAPE,
            TINY_ANCHORS,
            None,
            "kaiming_fan_out",
            default_classes=DEFAULT_SYNTHETIC_CLASSES,
            match_iou=TINY_MATCH_IOU,
            positive_weights="object",
        )
        table[prefix + "custom"] = ModelPreset(
            prefix + "custom",
            backbone,
            TINY_DATA_SHAPE,
            TINY_ANCHORS,
            None,
            "kaiming_fan_out",
            match_iou=TINY_MATCH_IOU,
            positive_weights="object",
        )
    return table


PRESETS: dict[str, ModelPreset] = _zoo()
