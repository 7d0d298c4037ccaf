"""Model registry: ``get_model(name, ...)`` and ``list_models()``, GluonCV zoo names.

Build order of a zoo model: backbone (VGG: every conv Kaiming-normal fan_out; ResNet / MobileNet / tiny:
torchvision-style init), extras with the preset's scheme (VGG: Kaiming fan_out; ResNet / MobileNet:
Uniform(0.07), GluonCV's effective init; tiny: Kaiming fan_out) and heads with Xavier (``init=`` overrides
the scheme of extras and heads), then ``pretrained_base`` (an ImageNet file for the backbone), then
``pretrained`` (a whole model: GluonCV ``.params`` or an ssdkit state dict / checkpoint, which makes
``pretrained_base`` moot).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from torch import nn

from ..init import INIT_SCHEMES, init_weights
from .feature_expander import FeatureExpander, MobileNetV1Body, ResNet50V1Body
from .presets import PRESETS, ModelPreset
from .ssd import SSD
from .tiny import TinyExtractor
from .vgg_atrous import vgg16_atrous_300, vgg16_atrous_512
from .weights import checkpoint_classes, load_checkpoint_weights, load_pretrained_base, read_weights

__all__ = ["get_model", "list_models", "register_model", "BACKBONES"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "vgg16_atrous_300": lambda: vgg16_atrous_300(),
    "vgg16_atrous_512": lambda: vgg16_atrous_512(),
    "resnet50_v1": lambda stride_in_1x1=True: FeatureExpander(ResNet50V1Body(stride_in_1x1=stride_in_1x1)),
    "mobilenet1.0": lambda: FeatureExpander(MobileNetV1Body()),
    "tiny": lambda: TinyExtractor(),
    "tiny48": lambda: TinyExtractor(stem_channels=48),
}

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, builder: Callable[..., nn.Module] | None = None):
    """Register ``builder(pretrained=..., pretrained_base=..., classes=..., **kw) -> nn.Module`` under ``name``.

    Usable as ``register_model("name", fn)`` or as a decorator ``@register_model("name")``.
    """

    def _add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return _add(builder) if builder is not None else _add


def list_models() -> list[str]:
    """Names accepted by ``get_model``, sorted."""
    return sorted(_REGISTRY)


def get_model(
    name: str,
    pretrained: str | os.PathLike | bool = False,
    pretrained_base: str | os.PathLike | bool = False,
    classes: Sequence[str] | None = None,
    **kwargs,
) -> nn.Module:
    """Build zoo model ``name``.

    Args:
        pretrained: ``False`` or a local file of the whole model: GluonCV's ``.params`` file of this zoo model
            (read without MXNet; its stored anchors must equal this model's), or an ssdkit state dict /
            checkpoint (``"model"`` key).
        pretrained_base: ``False`` or a local ImageNet file for the backbone: torchvision's or GluonCV's
            (``.params``) base, see ``ssdkit.models.weights``.
        classes: class names; required for ``*_custom`` (unless the ``pretrained`` checkpoint stores them).
        **kwargs: ``init`` (scheme of extras + heads), ``decoder`` (``"per_class"``/``"argmax"``),
            ``nms_thresh``, ``nms_topk``, ``post_nms``, ``transfer`` (``"voc"``/``"coco"``, custom models:
            ``pretrained`` is then the file of that model and shared class rows are reused), and backbone
            options (``stride_in_1x1`` for ResNet-50).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return _REGISTRY[name](pretrained=pretrained, pretrained_base=pretrained_base, classes=classes, **kwargs)


def _as_path(value, what: str, model: str):
    if value is False or value is None:
        return None
    if value is True:
        raise ValueError(
            f"{model}: {what}=True would mean downloading weights, which ssdkit never does; "
            f"pass a local file path instead"
        )
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{model}: {what} must be False or a file path, got {value!r}")
    return os.fspath(value)


def build_from_preset(
    preset: ModelPreset,
    *,
    pretrained=False,
    pretrained_base=False,
    classes: Sequence[str] | None = None,
    init: str | None = None,
    decoder: str = "per_class",
    nms_thresh: float = 0.45,
    nms_topk: int = 400,
    post_nms: int = 100,
    transfer: str | None = None,
    **backbone_kwargs,
) -> SSD:
    name = preset.name
    pretrained = _as_path(pretrained, "pretrained", name)
    pretrained_base = _as_path(pretrained_base, "pretrained_base", name)
    if init is not None and init not in INIT_SCHEMES:
        raise ValueError(f"{name}: unknown init scheme {init!r}; choose one of {', '.join(INIT_SCHEMES)}")
    common: dict[str, Any] = dict(
        init=init, decoder=decoder, nms_thresh=nms_thresh, nms_topk=nms_topk, post_nms=post_nms
    )

    if transfer is not None:
        if preset.transfer_prefix is None:
            raise ValueError(f"{name}: transfer= is only for the *_custom zoo models")
        if transfer not in ("voc", "coco"):
            raise ValueError(f"{name}: transfer must be 'voc' or 'coco', got {transfer!r}")
        if pretrained is None:
            raise ValueError(
                f"{name}: transfer={transfer!r} needs pretrained=<file of "
                f"{preset.transfer_prefix}{transfer}> (nothing is downloaded)"
            )
        if classes is None:
            raise ValueError(f"{name} needs classes=[...] (on the command line: --classes a,b,c)")
        source = PRESETS[preset.transfer_prefix + transfer]
        net = build_from_preset(source, pretrained=pretrained, **common, **backbone_kwargs)
        net.reset_class(classes, reuse_weights=[c for c in classes if c in net.classes])
        net.name = name
        return net

    state = None
    if preset.classes is not None:
        if classes is not None and tuple(classes) != preset.classes:
            raise ValueError(
                f"{name} has fixed classes ({len(preset.classes)} {name.rsplit('_', 1)[-1]} classes); "
                f"use the *_custom model or net.reset_class() for other classes"
            )
        classes = preset.classes
    elif classes is None:
        if pretrained is not None:
            state, meta = read_weights(pretrained)
            classes = checkpoint_classes(meta)
        classes = classes or preset.default_classes
        if classes is None:
            raise ValueError(
                f"{name} needs classes=[...], the names of the foreground classes "
                "(on the command line: --classes a,b,c)"
            )

    try:
        features: Any = BACKBONES[preset.backbone](**backbone_kwargs)
    except TypeError as e:
        raise ValueError(f"{name}: unexpected keyword arguments {sorted(backbone_kwargs)}") from e
    net = SSD(
        features,
        features.out_channels,
        preset.anchor_spec,
        classes,
        data_shape=preset.data_shape,
        name=name,
        decoder=decoder,
        nms_thresh=nms_thresh,
        nms_topk=nms_topk,
        post_nms=post_nms,
        head_init=init or "xavier",
    )
    for extra in features.added_layers():
        init_weights(extra, init or preset.extras_init)
    if pretrained is not None:
        load_checkpoint_weights(net, pretrained, state)
    elif pretrained_base is not None:
        load_pretrained_base(net, pretrained_base)
    return net


def _register_presets() -> None:
    for preset_name, preset in PRESETS.items():

        def builder(pretrained=False, pretrained_base=False, classes=None, _preset=preset, **kw):
            return build_from_preset(
                _preset, pretrained=pretrained, pretrained_base=pretrained_base, classes=classes, **kw
            )

        builder.__name__ = preset_name.replace(".", "_")
        builder.__doc__ = f"Build ``{preset_name}`` (see ``ssdkit.models.get_model``)."
        register_model(preset_name, builder)


_register_presets()
