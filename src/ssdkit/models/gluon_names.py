"""Gluon parameter names of GluonCV's SSDs and ImageNet bases, mapped onto ssdkit's module names.

What Gluon's ``save_parameters`` writes for each zoo family (structural names; ``N`` an index):

| family          | Gluon names                                              | ssdkit names                        |
| --------------- | -------------------------------------------------------- | ----------------------------------- |
| all             | ``class_predictors.N.predictor.weight`` / ``box_...``    | the same                            |
| all             | BatchNorm ``gamma`` / ``beta``                           | ``weight`` / ``bias``               |
| all             | BatchNorm ``running_mean`` / ``running_var``             | the same                            |
| all (constants) | ``anchor_generators.N.anchors`` ``[1, 1, S, S, K*4]``    | compared with ssdkit's anchors      |
| VGG16-atrous    | ``features.stages.N.M.*``, ``features.norm4.scale``,     | the same (the scale ``[1, C, 1, 1]`` |
|                 | ``features.extras.N.M.*``; constant ``features.init_scale`` | -> ``[C]``); ``init_scale``       |
|                 |                                                          | compared with ``std * 255``         |
| ResNet-50 v1    | ``features.resnetv1X_conv0_weight``, ``..._batchnorm0_*`` | ``features.body.conv1`` / ``bn1``  |
|                 | ``features.resnetv1X_stageS_convI_*`` / ``_batchnormI_*`` | ``features.body.layerS.B.*``       |
| MobileNet 1.0   | ``features.mobilenetX_convI_weight`` / ``_batchnormI_*`` | ``features.body.features.{3I, 3I+1}`` |
| ResNet,         | ``features.expand_trans_convI_weight``,                  | ``features.extras.I.0``,            |
| MobileNet       | ``expand_trans_bnI_*``, ``expand_convI_weight``,         | ``.1``, ``.3``,                     |
|                 | ``expand_bnI_*`` (``moving_mean/var``)                   | ``.4`` (``running_mean/var``)       |

The ResNet and MobileNet backbones of an SSD are MXNet symbols inside GluonCV's ``FeatureExpander``, so their
names are the symbol names (``X`` is a per-process counter, usually 0). In stage S of the ResNet, block 0 owns
convs/BNs 0-2 (body) and 3 (downsample); block ``B >= 1`` owns ``4 + 3 (B - 1) + j``, j = 0, 1, 2.
Files written by ``mx.model.save_checkpoint`` prefix names with ``arg:`` / ``aux:``; those are removed.
"""

from __future__ import annotations

import re
from typing import Mapping

__all__ = ["map_gluon_ssd_names", "strip_arg_aux", "GLUON_CONSTANT"]

GLUON_CONSTANT = re.compile(r"^(anchor_generators\.\d+\.anchors|(features\.)?init_scale)$")

_BN_FIELDS = {
    "gamma": "weight",
    "beta": "bias",
    "running_mean": "running_mean",
    "running_var": "running_var",
    "moving_mean": "running_mean",
    "moving_var": "running_var",
}
_RESNET_PARTS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
_RESNET_DOWNSAMPLE = ("downsample.0", "downsample.1")

_BACKBONE = re.compile(r"^features\.(resnetv1\d+|mobilenet\d+)_(.*)$")
_EXPAND = re.compile(r"^features\.expand_(trans_)?(conv|bn)(\d+)_(weight|gamma|beta|moving_mean|moving_var)$")
_LAYER = re.compile(r"^(?:stage(\d+)_)?(conv|batchnorm)(\d+)_(weight|bias|gamma|beta|running_mean|running_var)$")


def strip_arg_aux(names: Mapping[str, object]) -> dict[str, object]:
    """Remove ``arg:`` / ``aux:`` prefixes (``save_checkpoint`` files)."""
    return {re.sub(r"^(arg|aux):", "", k): v for k, v in names.items()}


def _field(kind: str, field: str) -> str:
    if kind == "conv":
        return field  # weight / bias
    return _BN_FIELDS[field]


def _resnet_name(stage: str | None, kind: str, index: int, field: str) -> str | None:
    if stage is None:  # the stem
        return None if index != 0 else f"features.body.{'conv1' if kind == 'conv' else 'bn1'}.{_field(kind, field)}"
    if index < 4:
        block, part = 0, index
    else:
        block, part = 1 + (index - 4) // 3, (index - 4) % 3
    names = _RESNET_DOWNSAMPLE if part == 3 else _RESNET_PARTS[part]
    module = names[0] if kind == "conv" else names[1]
    return f"features.body.layer{int(stage)}.{block}.{module}.{_field(kind, field)}"


def _backbone_name(prefix: str, rest: str) -> str | None:
    m = _LAYER.match(rest)
    if m is None:
        return None
    stage, kind, index, field = m.group(1), m.group(2), int(m.group(3)), m.group(4)
    if (kind == "conv") != (field in ("weight", "bias")):
        return None
    if prefix.startswith("resnet"):
        return _resnet_name(stage, kind, index, field)
    if stage is not None:
        return None
    return f"features.body.features.{3 * index + (0 if kind == 'conv' else 1)}.{_field(kind, field)}"


def _expand_name(m: re.Match) -> str:
    trans, kind, index, field = m.group(1), m.group(2), int(m.group(3)), m.group(4)
    position = (0 if kind == "conv" else 1) + (0 if trans else 3)
    return f"features.extras.{index}.{position}.{_field(kind, field)}"


def map_gluon_ssd_names(
    state: Mapping[str, object],
) -> tuple[dict[str, object], dict[str, object], list[str], dict[str, str]]:
    """Split a GluonCV SSD state ``{gluon name: array}`` into ``(ssdkit state, constants, notes, origin)``.

    Names that match no rule pass through unchanged (a strict load then names them); ``notes`` lists
    problems found while mapping (e.g. two backbone prefixes in one file); ``origin`` maps each renamed
    ssdkit name back to the name in the file, for error messages.
    """
    out: dict[str, object] = {}
    origin: dict[str, str] = {}
    constants: dict[str, object] = {}
    prefixes = set()
    collisions: list[str] = []
    for name, value in strip_arg_aux(state).items():
        if GLUON_CONSTANT.match(name):
            constants[name] = value
            continue
        new = None
        m = _BACKBONE.match(name)
        if m is not None:
            prefixes.add(m.group(1))
            new = _backbone_name(m.group(1), m.group(2))
        else:
            e = _EXPAND.match(name)
            if e is not None:
                new = _expand_name(e)
            else:
                new = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
        new = new if new is not None else name
        if new != name:
            origin[new] = name
        if new in out:
            collisions.append(f"{name} -> {new}")
        out[new] = value
    notes = [f"names of {len(prefixes)} backbones in one file: {sorted(prefixes)}"] if len(prefixes) > 1 else []
    if collisions:
        notes.append(f"{len(collisions)} names map onto a parameter given twice, first: {collisions[:5]}")
    return out, constants, notes, origin
