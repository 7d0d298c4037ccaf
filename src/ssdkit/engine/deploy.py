"""``ssdkit export``: a checkpoint or zoo model to an ONNX or TorchScript file with decoding and NMS inside."""

from __future__ import annotations

import os

import torch

from .config import ConfigError

__all__ = ["export_model", "FORMATS"]

FORMATS = ("onnx", "torchscript")


def _load_net(checkpoint: str | None, model: str | None, pretrained: str | None, classes: list[str] | None = None):
    from .evaluation import load_trained_model

    if (checkpoint is None) == (model is None):
        raise ConfigError("give either --checkpoint or --model")
    if classes is not None and checkpoint is not None:
        raise ConfigError("--classes goes with --model (a checkpoint holds its own class names)")
    if checkpoint is not None:
        net, cfg, ckpt = load_trained_model(checkpoint, torch.device("cpu"))
        return net, int(ckpt.get("data_shape") or cfg.data_shape or net.data_shape)
    from ..models import get_model, list_models

    if model not in list_models():
        raise ConfigError(f"unknown model {model!r}; choose one of: {', '.join(list_models())}")
    if pretrained is not None and not os.path.isfile(pretrained):
        raise ConfigError(f"weights file not found: {pretrained}")
    try:
        net = get_model(model, pretrained=pretrained or False, classes=classes)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(f"{pretrained or model}: {str(err).splitlines()[0]}") from None
    return net.eval(), net.data_shape


def _check_writable(output: str) -> None:
    folder = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the output folder {folder}: {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write into the output folder {folder}")
    if os.path.isdir(output):
        raise ConfigError(f"--output {output} is a folder; give a file name such as model.onnx")


def export_model(
    output: str,
    checkpoint: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    fmt: str = "onnx",
    opset: int | None = None,
    raw: bool = False,
    classes: list[str] | None = None,
) -> dict:
    """Export and return a summary (file, format, model, classes, input size, outputs)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from ..export import ONNX_EXPORT_NEEDS, export_onnx, export_torchscript, install_hint

    if fmt == "onnx" and (hint := install_hint(ONNX_EXPORT_NEEDS)):
        raise ConfigError(f"exporting to ONNX needs {hint}; --format torchscript needs nothing more")
    net, size = _load_net(checkpoint, model, pretrained, classes)
    _check_writable(output)
    try:
        if fmt == "onnx":
            from ..export.onnx_export import DEFAULT_OPSET

            if opset is not None and opset < DEFAULT_OPSET:
                raise ConfigError(f"--opset must be at least {DEFAULT_OPSET}, got {opset}")
            export_onnx(net, output, height=size, width=size, opset=opset or DEFAULT_OPSET, raw=raw)
        else:
            export_torchscript(net, output, height=size, width=size, raw=raw)
    except OSError as err:
        raise ConfigError(f"cannot write {output}: {err.strerror or err}") from None
    outputs = ["cls_preds", "box_preds", "anchors"] if raw else ["ids", "scores", "boxes"]
    return {
        "file": output,
        "format": fmt,
        "model": net.name,
        "classes": list(net.classes),
        "input": [None, 3, size, size],
        "outputs": outputs,
    }
