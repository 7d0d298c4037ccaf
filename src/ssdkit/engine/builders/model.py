"""The model of a run: a zoo model for the data set's classes, its input size and its anchors."""

from __future__ import annotations

from typing import Any

import torch

from ..config import ConfigError, TrainConfig

__all__ = ["build_model", "check_model_name", "model_anchors", "model_data_shape"]


def check_model_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a registered model (checked before any process is started)."""
    from ...models import list_models

    if name not in list_models():
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def model_data_shape(name: str) -> int:
    """The input size (pixels, square) of zoo model ``name``."""
    from ...models import list_models
    from ...models.presets import PRESETS

    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return PRESETS[name].data_shape


def build_model(cfg: TrainConfig, classes: tuple[str, ...] | None):
    from ...models import get_model

    check_model_name(cfg.model)
    kwargs: dict[str, Any] = dict(init=cfg.init, decoder=cfg.decoder)
    fixed = cfg.model.endswith("_voc") or cfg.model.endswith("_coco")
    if fixed and classes is not None and cfg.dataset in ("synthetic", "voc-folder"):
        raise ConfigError(
            f"model {cfg.model} has the fixed {cfg.model.rsplit('_', 1)[-1].upper()} classes; "
            f"use a *_custom model (e.g. {cfg.model.rsplit('_', 1)[0]}_custom) for your classes"
        )
    try:
        net = get_model(
            cfg.model,
            pretrained=cfg.pretrained or False,
            pretrained_base=cfg.pretrained_base or False,
            classes=None if fixed else classes,
            **kwargs,
        )
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ConfigError(str(err).strip('"')) from None
    if classes is not None and tuple(net.classes) != tuple(classes):
        raise ConfigError(
            f"model {cfg.model} predicts {len(net.classes)} classes but the data set has "
            f"{len(classes)}: use a *_custom model"
        )
    return net


def model_anchors(net, data_shape: int, device: torch.device) -> torch.Tensor:
    """Anchors ``Tensor[1, A, 4]`` of ``net`` at ``data_shape`` x ``data_shape`` (as GluonCV: one forward on zeros)."""
    was_training = net.training
    net.eval()
    with torch.no_grad():
        _, _, anchors = net(torch.zeros(1, 3, data_shape, data_shape, device=device))
    net.train(was_training)
    return anchors.detach().cpu()
