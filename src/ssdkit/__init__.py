"""ssdkit: SSD object detectors on PyTorch, numerically equal to GluonCV's SSD training system.

``num_classes`` always excludes background; class heads have ``num_classes + 1`` outputs (index 0 = background).
The public names below load on first use, so ``import ssdkit`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "get_model": "ssdkit.models",
    "list_models": "ssdkit.models",
    "PostProcessor": "ssdkit.postprocess",
    "SSDTargetGenerator": "ssdkit.targets",
    "SSDMultiBoxLoss": "ssdkit.loss",
    "NormalizedBoxCenterEncoder": "ssdkit.coder",
    "NormalizedBoxCenterDecoder": "ssdkit.coder",
    "MultiClassEncoder": "ssdkit.coder",
    "MultiClassDecoder": "ssdkit.coder",
    "MultiPerClassDecoder": "ssdkit.coder",
    "init_weights": "ssdkit.init",
    "VOC07MApMetric": "ssdkit.metrics",
    "VOCMApMetric": "ssdkit.metrics",
    "COCODetectionMetric": "ssdkit.metrics",
    "load_test": "ssdkit.data.transforms.presets.ssd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssdkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
