"""Deployment: ONNX and TorchScript files of a detector with decoding and NMS inside, and running them."""

import importlib

from .detector import DeployDetector, greedy_class_nms
from .onnx_export import export_onnx, export_torchscript, read_onnx_metadata

__all__ = [
    "DeployDetector",
    "greedy_class_nms",
    "export_onnx",
    "export_torchscript",
    "read_onnx_metadata",
    "ONNX_EXPORT_NEEDS",
    "ONNX_RUN_NEEDS",
    "ONNX_EXTRA",
    "missing_modules",
]

# the optional packages of ``pip install 'ssdkit[onnx]'``; the modules here import them only when used
ONNX_EXPORT_NEEDS = ("onnx", "onnxscript")
ONNX_RUN_NEEDS = ("onnx", "onnxruntime")
ONNX_EXTRA = "pip install -e '.[onnx]' in the ssdkit checkout"


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that do not import here (not installed, or broken), so that a command can say which
    optional packages it needs before it starts instead of failing half-way with a traceback."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing
