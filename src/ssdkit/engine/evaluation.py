"""Using a trained checkpoint: rebuild its model, evaluate it on a data set, run it on image files."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import torch

from .builders import build_datasets, build_loader, build_metric, build_model, select_device
from .checkpoint import load_checkpoint
from .config import ConfigError, TrainConfig, resolve_config
from .trainer import evaluate

__all__ = ["load_trained_model", "evaluate_checkpoint", "int8_detector", "predict_images", "load_onnx_detector"]


def load_trained_model(path: str, device: torch.device, decoder: str | None = None):
    """``(net, config, checkpoint)`` from a checkpoint written by ``ssdkit train``."""
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(ckpt["config"])
    if decoder is not None:
        cfg.decoder = decoder
    cfg.pretrained = None
    cfg.pretrained_base = None
    net = build_model(cfg, tuple(ckpt["classes"]))
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise ConfigError(f"{path}: the weights do not fit model {cfg.model} ({str(err).splitlines()[0]})") from None
    return net.to(device).eval(), cfg, ckpt


def evaluate_checkpoint(
    path: str,
    dataset: str | None = None,
    data_root: str | None = None,
    val_splits: str | None = None,
    decoder: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    num_workers: int = 0,
    int8_calibration: int = 0,
    on_bad_sample: str = "skip",
) -> tuple[list[str], list[float], str]:
    """Evaluate ``path`` on its own validation split or on the given one: ``(names, values, table)``.
    ``int8_calibration`` > 0: evaluate the int8 network (:class:`~ssdkit.export.quantized.Int8Detector`) calibrated
    on that many images of the checkpoint's training split instead (CPU only). ``on_bad_sample``: ``"skip"`` leaves
    an unreadable image out (the title says so), ``"error"`` raises ``BadSampleError`` at it."""
    from ..data.errors import BadSampleLog
    from ..metrics.report import format_ap_table

    if int8_calibration < 0:
        raise ConfigError(f"--int8 {int8_calibration}: give a positive number of calibration images")
    dev = select_device(device)
    net, cfg, ckpt = load_trained_model(path, dev, decoder)
    changes: dict[str, Any] = {
        "num_workers": num_workers,
        "device": device,
        "resume": None,
        "on_bad_sample": on_bad_sample,
    }
    if dataset is not None:
        changes.update(dataset=dataset, train_splits=None, val_splits=None, data_root=None)
    if data_root is not None:
        changes["data_root"] = data_root
    if val_splits is not None:
        changes["val_splits"] = val_splits
    if batch_size is not None:
        changes["batch_size"] = batch_size
    cfg = resolve_config(dataclasses.replace(cfg, **changes))
    data_shape = int(ckpt.get("data_shape") or cfg.data_shape or net.data_shape)
    _, val_set, classes = build_datasets(cfg, data_shape, train=False, val=True)
    if tuple(classes) != tuple(net.classes):
        raise ConfigError(f"the checkpoint predicts {list(net.classes)} but the data set has {list(classes)}")
    loader = build_loader(val_set, cfg, train=False)
    metric = build_metric(cfg, classes, val_set, data_shape)
    model, precision = net, ""
    if int8_calibration > 0:
        if dev.type != "cpu":
            raise ConfigError("--int8 runs on the CPU: add --device cpu")
        model = int8_detector(net, cfg, data_shape, int8_calibration)
        precision = f", int8 calibrated on {int8_calibration} training images"
    bad = BadSampleLog()
    names, values = evaluate(model, loader, metric, dev, bad, decoder=cfg.decoder)
    left_out = f", {bad.dropped} unreadable left out: {', '.join(bad.paths)}" if bad.dropped else ""
    images = f"{len(val_set) - bad.dropped} images{left_out}"
    title = f"{os.path.basename(path)} on {cfg.dataset} ({images}, decoder {cfg.decoder}{precision})"
    return names, values, format_ap_table(names, values, title=title)


def int8_detector(net, cfg: TrainConfig, data_shape: int, count: int):
    """``Int8Detector`` of ``net`` calibrated on ``count`` images spread evenly over the training split of ``cfg``,
    preprocessed for evaluation (no augmentation): the split that is scored never sets the ranges."""
    from ..export.quantized import Int8Detector

    train_set, _, _ = build_datasets(dataclasses.replace(cfg, augment="none"), data_shape, train=True, val=False)
    picks = torch.linspace(0, len(train_set) - 1, min(count, len(train_set))).round().long().unique().tolist()
    images = [train_set[i][0] for i in picks]
    batch = max(1, cfg.batch_size)
    try:
        return Int8Detector(net, [torch.stack(images[i : i + batch]) for i in range(0, len(images), batch)])
    except ImportError as err:
        raise ConfigError(str(err)) from None


@torch.no_grad()
def predict_images(
    path: str | None,
    images: Sequence[str],
    score_thresh: float = 0.3,
    output: str | None = None,
    device: str = "auto",
    onnx: str | None = None,
) -> list[dict[str, Any]]:
    """Detect objects in ``images`` with the checkpoint ``path`` or the ONNX file ``onnx`` (ONNX Runtime); boxes
    in original pixels. Writes ``<name>.pred.png`` with the boxes drawn by ``ssdkit.viz.plot_bbox``.

    One entry per image, in order: ``{"image", "detections", "picture"}``, or ``{"image", "error"}`` for a file
    that is missing or does not decode; such a file does not stop the others."""
    from ..data.errors import BadSampleError
    from ..data.image_io import read_image
    from ..data.transforms import SSDValTransform
    from ..viz import save_detections

    if (path is None) == (onnx is None):
        raise ConfigError("give either a checkpoint or an ONNX file")
    if onnx is not None:
        runner = load_onnx_detector(onnx)
        classes, (height, width) = runner.classes, runner.input_size
        transform = SSDValTransform((height, width), mean=runner.mean, std=runner.std)

        def detect(x):
            return tuple(torch.from_numpy(t) for t in runner.detect(x.numpy()))
    else:
        dev = select_device(device)
        net, cfg, ckpt = load_trained_model(path, dev)
        classes = net.classes
        height = width = int(ckpt.get("data_shape") or net.data_shape)
        transform = SSDValTransform(height)

        def detect(x):
            ids, scores, boxes = net.detect(x.to(dev))
            return ids[..., 0].cpu(), scores[..., 0].cpu(), boxes.cpu()

    out_dir = output or os.path.join(os.path.dirname(os.path.abspath(path or onnx)), "predictions")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the output folder {out_dir}: {err.strerror}") from None
    results = []
    for image_path in images:
        try:
            image = read_image(image_path)
        except BadSampleError as err:
            results.append({"image": image_path, "error": err.reason})
            continue
        h, w = image.shape[-2:]
        x, _ = transform(image, {"boxes": _empty_boxes(h, w), "labels": torch.zeros(0, dtype=torch.int64)})
        ids, scores, boxes = detect(x[None])
        keep = (ids[0] >= 0) & (scores[0] > score_thresh)
        scale = torch.tensor([w / width, h / height, w / width, h / height])
        kept = boxes[0][keep] * scale
        kept[:, 0::2] = kept[:, 0::2].clamp(0, w)
        kept[:, 1::2] = kept[:, 1::2].clamp(0, h)
        kept_ids = ids[0, keep].long()
        dets = [
            {"label": classes[int(i)], "score": round(float(s), 4), "box_xyxy": [round(float(v), 1) for v in b]}
            for i, s, b in zip(kept_ids.tolist(), scores[0, keep].tolist(), kept)
        ]
        picture = os.path.join(out_dir, os.path.splitext(os.path.basename(image_path))[0] + ".pred.png")
        try:
            save_detections(image, picture, kept, scores[0, keep], kept_ids, class_names=classes)
        except OSError as err:
            raise ConfigError(f"cannot write {picture}: {err.strerror or err}") from None
        results.append({"image": image_path, "detections": dets, "picture": picture})
    return results


def load_onnx_detector(path: str):
    """An ``OnnxRuntimeDetector`` for ``path``; a missing, unreadable or foreign file is a ``ConfigError``."""
    if not os.path.isfile(path):
        raise ConfigError(f"ONNX file not found: {path}")
    from ..export import ONNX_RUN_NEEDS, install_hint
    from ..export.runtime import OnnxRuntimeDetector

    if hint := install_hint(ONNX_RUN_NEEDS):
        raise ConfigError(f"running ONNX files needs {hint}")
    try:
        return OnnxRuntimeDetector(path)
    except ValueError as err:
        raise ConfigError(str(err) if str(err).startswith(path) else f"{path}: {err}") from None
    except Exception as err:  # protobuf's decode errors and ONNX Runtime's load errors have no common base
        raise ConfigError(
            f"{path} is not a readable ONNX file ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None


def _empty_boxes(h: int, w: int):
    from torchvision import tv_tensors

    return tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w))
