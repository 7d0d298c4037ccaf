"""Deployment: ONNX and TorchScript files of a detector with decoding and NMS inside, and running them."""

from .detector import DeployDetector, greedy_class_nms
from .onnx_export import export_onnx, export_torchscript, read_onnx_metadata

__all__ = ["DeployDetector", "greedy_class_nms", "export_onnx", "export_torchscript", "read_onnx_metadata"]
