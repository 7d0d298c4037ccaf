"""ssdkit model zoo: ``get_model(name, ...)``, ``list_models()`` and the building blocks.

``num_classes`` everywhere excludes background; class heads have ``num_classes + 1`` outputs per anchor.
"""

from .presets import COCO_CLASSES, PRESETS, VOC_CLASSES, ModelPreset
from .registry import get_model, list_models, register_model
from .ssd import SSD, ConvPredictor
from .tiny import DEFAULT_SYNTHETIC_CLASSES
from .weights import WeightsError

__all__ = [
    "get_model",
    "list_models",
    "register_model",
    "SSD",
    "ConvPredictor",
    "VOC_CLASSES",
    "COCO_CLASSES",
    "DEFAULT_SYNTHETIC_CLASSES",
    "PRESETS",
    "ModelPreset",
    "WeightsError",
]
