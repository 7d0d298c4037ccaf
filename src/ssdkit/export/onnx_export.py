"""Export a detector to ONNX (network + anchors + decoding + per-class NMS) or TorchScript.

The ONNX file's input is ``images`` float32 ``[N, 3, H, W]`` (N free), the tensor ``net.detect`` takes; its outputs
are ``ids [N, P]``, ``scores [N, P]``, ``boxes [N, P, 4]`` (input pixels, -1 padded), or with ``raw=True``
``cls_preds [N, A, C+1]``, ``box_preds [N, A, 4]`` and the constant ``anchors [A, 4]`` (cx, cy, w, h). The file's
metadata (``ssdkit`` key, JSON) holds the class names and the preprocessing (input size, mean, std).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .detector import DeployDetector, OnnxDetector, RawHeads, check_input_size, preprocessing_info

__all__ = ["export_onnx", "export_torchscript", "read_onnx_metadata", "METADATA_KEY", "DEFAULT_OPSET"]

METADATA_KEY = "ssdkit"
DEFAULT_OPSET = 18


class _RawWithAnchors(nn.Module):
    def __init__(self, net: nn.Module, height: int, width: int):
        super().__init__()
        self.height, self.width = int(height), int(width)
        self.heads = RawHeads(net)
        self.register_buffer("anchors_cxcywh", net.anchors_for_input(height, width).reshape(-1, 4).float().clone())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input_size(images, self.height, self.width)
        cls_preds, box_preds = self.heads(images)
        return cls_preds, box_preds, self.anchors_cxcywh.clone()


def _prepare(net: nn.Module) -> nn.Module:
    """A float32 eval copy without gradients: exporting traces the network, which must not touch the caller's
    anchor cache."""
    net = copy.deepcopy(net).float().eval().requires_grad_(False)
    net._anchor_cache = {}
    return net


def export_onnx(
    net: nn.Module,
    path: str,
    *,
    height: int | None = None,
    width: int | None = None,
    opset: int = DEFAULT_OPSET,
    raw: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> str:
    """Write ``net`` (an ``SSD``) to ``path`` as ONNX; checks the file with ``onnx.checker``. Returns ``path``."""
    import onnx

    from .nms_op import onnx_translation

    height = int(height or net.data_shape)
    width = int(width or height)
    net = _prepare(net)
    module = _RawWithAnchors(net, height, width) if raw else OnnxDetector(net, height, width)
    module.eval()
    outputs = ["cls_preds", "box_preds", "anchors"] if raw else ["ids", "scores", "boxes"]
    example = torch.rand(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=outputs,
            dynamic_shapes={"images": {0: batch}},
            opset_version=opset,
            custom_translation_table=onnx_translation(),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    info = preprocessing_info(net, height, width, mean, std)
    info["outputs"] = "raw" if raw else "detections"
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    model.producer_name = "ssdkit"
    onnx.checker.check_model(model, full_check=True)
    _write_bytes(path, model.SerializeToString())
    return path


def export_torchscript(
    net: nn.Module,
    path: str,
    *,
    height: int | None = None,
    width: int | None = None,
    raw: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> str:
    """Write ``net`` to ``path`` as TorchScript, loadable with ``torch.jit.load`` alone (no ssdkit, no
    torchvision). The network is traced, the post-processing scripted; ``extra_files["ssdkit.json"]`` holds the
    metadata. Returns ``path``."""
    import io

    height = int(height or net.data_shape)
    width = int(width or height)
    net = _prepare(net)
    example = torch.rand(2, 3, height, width)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(RawHeads(net), (example,), check_trace=False)
        if raw:
            module = _RawWithAnchors(net, height, width)
            module.heads = traced
        else:
            module = DeployDetector(net, height, width)
            module.heads = traced
        scripted = torch.jit.script(module.eval())
    info = preprocessing_info(net, height, width, mean, std)
    info["outputs"] = "raw" if raw else "detections"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        torch.jit.save(scripted, buf, _extra_files={"ssdkit.json": json.dumps(info)})
    _write_bytes(path, buf.getvalue())
    return path


def _write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_onnx_metadata(model_or_path) -> dict:
    """The ``ssdkit`` metadata of an exported ONNX file (a path or an ``onnx.ModelProto``)."""
    import onnx

    model = onnx.load(model_or_path, load_external_data=False) if isinstance(model_or_path, str) else model_or_path
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise ValueError("the ONNX file has no ssdkit metadata (not written by `ssdkit export`)")
