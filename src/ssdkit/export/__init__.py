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
    "missing_modules",
    "install_hint",
]

# the optional packages of ``pip install 'ssdkit[onnx]'``; the modules here import them only when used
ONNX_EXPORT_NEEDS = ("onnx", "onnxscript")
ONNX_RUN_NEEDS = ("onnx", "onnxruntime")


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


def install_hint(names: tuple[str, ...]) -> str | None:
    """``"onnx and onnxscript: pip install onnx onnxscript (or ...)"`` for those of ``names`` that are missing, for
    a command's one-line error; None when all import."""
    missing = missing_modules(names)
    if not missing:
        return None
    return (
        f"{' and '.join(missing)}: pip install {' '.join(missing)} "
        "(or the extra pip install -e '.[onnx]' in the ssdkit checkout)"
    )
