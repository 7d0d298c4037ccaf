"""Loading local weight files into ssdkit models (nothing is ever downloaded).

Accepted files: MXNet/Gluon ``.params`` files (GluonCV's model zoo, ``save_parameters``; read without MXNet by
``ssdkit.models.mxnet_params``), anything ``torch.load(path, weights_only=True)`` reads (a state dict, or a
checkpoint dict with the state dict under ``"model"``, ``"state_dict"`` or ``"net"``), or a ``.npz`` of arrays.
Gluon names map onto ssdkit's (``ssdkit.models.gluon_names``); GluonCV's constants stored in a full model's
file (anchors, ``init_scale``) are compared with ssdkit's own and a mismatch is an error.

ImageNet bases (``pretrained_base``):

| backbone      | accepted key layouts                                                                    |
| ------------- | --------------------------------------------------------------------------------------- |
| vgg16_atrous  | torchvision ``vgg16`` (``features.N.*``, ``classifier.0/3.*``: fc6/fc7 reduced as the   |
|               | SSD paper's base, see ``reduce_vgg16_fc``) or GluonCV's ``vgg16_atrous_300/512``         |
|               | (``stages.*`` / ``norm4.scale``, ``.params`` or converted)                               |
| resnet50_v1   | torchvision ``resnet50`` (``conv1``, ``layerN.*``; ``fc.*`` ignored) or Gluon            |
|               | ``resnet50_v1`` (``features.N.*``, ``output.*`` ignored). GluonCV's bottleneck 1x1 biases |
|               | are not in torchvision files and stay zero. Note torchvision's ImageNet weights were     |
|               | trained with the stride in the 3x3 conv (v1.5); the shapes are identical.                |
| mobilenet1.0  | ssdkit's own ``MobileNetV1Body`` names (``features.N.*``), which equal Gluon's           |
|               | ``mobilenet1.0`` layout (``output.*`` ignored). torchvision has no MobileNet v1.         |

Keys of a full ssdkit model (``features.body.*`` / ``features.*``) are accepted for the base too. A file that
does not fit raises ``WeightsError`` naming the file and the first offending keys and shapes.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from .gluon_names import map_gluon_ssd_names
from .mxnet_params import ParamsFormatError, is_mxnet_params, read_mxnet_params

__all__ = [
    "WeightsError",
    "read_weights",
    "gluon_to_torch_names",
    "load_state_strict",
    "load_pretrained_base",
    "load_checkpoint_weights",
    "checkpoint_classes",
    "reduce_vgg16_fc",
    "check_gluon_constants",
]

_SHOW = 5


class WeightsError(ValueError):
    """A weight file that cannot be read or does not fit the model."""


# ----------------------------------------------------------------------------------------------- reading
def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read ``path`` into ``(state_dict, meta)``; ``meta`` is the rest of a checkpoint dict (e.g. ``classes``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weight file {path!r} does not exist")
    if path.endswith(".params") or is_mxnet_params(path):
        try:
            arrays = read_mxnet_params(path)
        except (ParamsFormatError, OSError) as e:
            raise WeightsError(str(e)) from None
        empty = [k for k, v in arrays.items() if v is None]
        if empty or not arrays:
            raise WeightsError(
                f"weight file {path!r} holds no parameters"
                if not arrays
                else f"weight file {path!r}: empty arrays under {empty[:_SHOW]}"
            )
        return {k: torch.from_numpy(v) for k, v in arrays.items()}, {"format": "mxnet"}
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.array(z[k])) for k in z.files}, {}
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
            raise WeightsError(f"cannot read weight file {path!r} as .npz: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"cannot read weight file {path!r} with torch.load(weights_only=True): {e}") from e
    meta: dict = {}
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "net"):
            if key in obj and isinstance(obj[key], Mapping):
                meta = {k: v for k, v in obj.items() if k != key}
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"weight file {path!r} holds no state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"weight file {path!r}: entries that are not tensors: {bad[:_SHOW]}")
    # state dicts of DistributedDataParallel / torch.compile wrappers
    return _strip_prefix(obj, ("module.", "_orig_mod.")), meta


def checkpoint_classes(meta: Mapping) -> tuple[str, ...] | None:
    """Class names stored in a checkpoint (top-level ``classes``), if any."""
    classes = meta.get("classes")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        return tuple(classes)
    return None


_GLUON_DROP = re.compile(r"(^|\.)(anchor_generators\.\d+\.anchors|init_scale)$")


def gluon_to_torch_names(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename Gluon BatchNorm parameters (``.gamma``/``.beta``) and drop GluonCV constants."""
    out = {}
    for k, v in state.items():
        if _GLUON_DROP.search(k):
            continue
        k = re.sub(r"\.gamma$", ".weight", k)
        k = re.sub(r"\.beta$", ".bias", k)
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------- checking
def load_state_strict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    *,
    may_be_missing: Callable[[str], bool] = lambda k: False,
    origin: Mapping[str, str] | None = None,
) -> None:
    """Copy ``state`` into ``module``; every module key must be given unless ``may_be_missing(key)``.

    Raises ``WeightsError`` naming ``source`` and the first missing, unexpected and mismatched keys (as the
    file names them: ``origin`` maps a renamed key back to its name in the file).
    """
    origin = origin or {}

    def shown(k: str) -> str:
        return f"{origin[k]} (= {k})" if k in origin else k

    target = module.state_dict()
    unexpected = [shown(k) for k in state if k not in target]
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked") and not may_be_missing(k)]
    mismatched = [
        f"{shown(k)}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state
        if k in target and not _same_but_unit_dims(state[k].shape, target[k].shape)
    ]
    if unexpected or missing or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches, first: {mismatched[:_SHOW]}")
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {missing[:_SHOW]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:_SHOW]}")
        what = getattr(module, "name", None) or type(module).__name__
        if hint := _class_count_hint(module, state):
            parts.insert(0, hint)
        if unexpected and not any("." in origin.get(k, k) for k in state):
            parts.append(
                "names without dots are what Gluon's deprecated save_params wrote: load the file in GluonCV "
                "(net.load_params) and write it again with net.save_parameters"
            )
        raise WeightsError(f"weight file {source!r} does not fit {what}: " + "; ".join(parts))
    # load_state_dict (not a plain copy) runs the modules' load hooks, e.g. FixedGammaBatchNorm2d's gamma reset
    module.load_state_dict(
        {k: v.to(dtype=target[k].dtype).reshape(target[k].shape) for k, v in state.items()}, strict=False
    )


def _class_count_hint(module: nn.Module, state: Mapping[str, Tensor]) -> str:
    """``"the file predicts 3 classes, the model 2 (a, b)"`` when an SSD's first class head says so, else ``""``:
    one line that names the cause of the many head mismatches that follow from it."""
    weight = state.get("class_predictors.0.predictor.weight")
    spec, classes = getattr(module, "anchor_spec", None), getattr(module, "classes", None)
    if weight is None or spec is None or classes is None:
        return ""
    per_position = spec.anchors_per_position()[0]
    if weight.shape[0] % per_position:
        return ""
    in_file = weight.shape[0] // per_position - 1
    if in_file == len(classes):
        return ""
    return f"the file predicts {in_file} classes, the model {len(classes)} ({', '.join(classes)})"


def _same_but_unit_dims(a: torch.Size, b: torch.Size) -> bool:
    """Whether two shapes differ at most in size-1 dimensions (GluonCV's ``[1, C, 1, 1]`` scale vs ``[C]``)."""
    return tuple(a) == tuple(b) or [d for d in a if d != 1] == [d for d in b if d != 1]


def _strip_prefix(state: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    for p in prefixes:
        if state and all(k.startswith(p) for k in state):
            return {k[len(p) :]: v for k, v in state.items()}
    return dict(state)


def _select_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys under ``prefix`` if there are any (prefix removed), else ``state`` unchanged."""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return sub if sub else dict(state)


# ----------------------------------------------------------------------------------------------- bases
_TV_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_OUR_VGG16_CONVS = tuple(f"stages.{s}.{j}" for s, n in enumerate((2, 2, 3, 3, 3)) for j in range(0, 2 * n, 2))


def reduce_vgg16_fc(fc6_weight: Tensor, fc6_bias: Tensor, fc7_weight: Tensor, fc7_bias: Tensor) -> dict[str, Tensor]:
    """torchvision VGG16's fully connected fc6/fc7 as the SSD paper's convolutional fc6/fc7.

    fc6 ``Tensor[4096, 25088]`` viewed as ``[4096, 512, 7, 7]``: every 4th output and every 3rd spatial
    position, ``Tensor[1024, 512, 3, 3]`` (used with dilation 6); fc7 ``Tensor[4096, 4096]``: every 4th row and
    column, ``Tensor[1024, 1024, 1, 1]``; biases every 4th. Returned under ssdkit's names (``stages.5.0/2``).
    """
    if tuple(fc6_weight.shape) != (4096, 512 * 7 * 7) or tuple(fc7_weight.shape) != (4096, 4096):
        raise ValueError(
            f"expected VGG16 fc6 [4096, 25088] and fc7 [4096, 4096], got {tuple(fc6_weight.shape)} "
            f"and {tuple(fc7_weight.shape)}"
        )
    return {
        "stages.5.0.weight": fc6_weight.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].contiguous(),
        "stages.5.0.bias": fc6_bias[::4].contiguous(),
        "stages.5.2.weight": fc7_weight[::4, ::4].reshape(1024, 1024, 1, 1).contiguous(),
        "stages.5.2.bias": fc7_bias[::4].contiguous(),
    }


_TV_FC = ("classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias")


def _vgg_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Callable[[str], bool]]:
    if any(re.match(r"^features\.\d+\.", k) for k in state):  # torchvision vgg16
        out = {}
        for tv_idx, ours in zip(_TV_VGG16_CONVS, _OUR_VGG16_CONVS):
            for suffix in ("weight", "bias"):
                key = f"features.{tv_idx}.{suffix}"
                if key in state:
                    out[f"{ours}.{suffix}"] = state[key]
        extra = [
            k
            for k in state
            if not k.startswith("classifier.")
            and not any(k == f"features.{i}.{s}" for i in _TV_VGG16_CONVS for s in ("weight", "bias"))
        ]
        for k in extra:  # unknown keys go through so the check names them
            out[k] = state[k]
        required = _OUR_VGG16_CONVS
        if all(k in state for k in _TV_FC):
            try:
                out.update(reduce_vgg16_fc(*(state[k] for k in _TV_FC)))
            except ValueError as e:
                raise WeightsError(f"torchvision VGG16 classifier: {e}") from None
            required = _OUR_VGG16_CONVS + ("stages.5.0.", "stages.5.2.")
        return out, lambda k: not k.startswith(required)
    state = _select_prefix(state, "features.")
    base = {k: v for k, v in state.items() if not k.startswith(("class_predictors.", "box_predictors."))}
    return base, lambda k: not k.startswith(_OUR_VGG16_CONVS)


_GLUON_RESNET_BLOCK = {
    "body.0": "conv1",
    "body.1": "bn1",
    "body.3": "conv2",
    "body.4": "bn2",
    "body.6": "conv3",
    "body.7": "bn3",
    "downsample.0": "downsample.0",
    "downsample.1": "downsample.1",
}


def _resnet_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Callable[[str], bool]]:
    state = _select_prefix(state, "features.body.")
    if any(".body." in k for k in state):  # Gluon resnet50_v1 layout
        out = {}
        for k, v in state.items():
            if k.startswith("output."):
                continue
            m = re.match(r"^features\.(\d+)\.(.*)$", k)
            if m and m.group(1) in ("0", "1"):
                out[("conv1." if m.group(1) == "0" else "bn1.") + m.group(2)] = v
                continue
            m = re.match(r"^features\.([4-7])\.(\d+)\.(body\.\d|downsample\.\d)\.(.*)$", k)
            if m and m.group(3) in _GLUON_RESNET_BLOCK:
                out[f"layer{int(m.group(1)) - 3}.{m.group(2)}.{_GLUON_RESNET_BLOCK[m.group(3)]}.{m.group(4)}"] = v
            else:
                out[k] = v
        state = out
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return state, lambda k: bool(re.match(r"^layer\d\.\d+\.conv[13]\.bias$", k))


def _mobilenet_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], Callable[[str], bool]]:
    state = _select_prefix(state, "features.body.")
    return {k: v for k, v in state.items() if not k.startswith("output.")}, lambda k: False


def load_pretrained_base(net: nn.Module, path: str | os.PathLike) -> None:
    """Load an ImageNet base from ``path`` into ``net``'s backbone (see the module table)."""
    from .feature_expander import MobileNetV1Body, ResNet50V1Body
    from .vgg_atrous import VGGAtrousExtractor

    source = os.fspath(path)
    state, _ = read_weights(source)
    state = gluon_to_torch_names(state)
    features = getattr(net, "features", None)
    if isinstance(features, VGGAtrousExtractor):
        target, mapped = features, _vgg_state(state)
        # the base file may carry fc6/fc7/norm4 (GluonCV vgg16_atrous) and even extras; allow all of those
        state, may_miss = mapped
    else:
        body = getattr(features, "body", None)
        if isinstance(body, ResNet50V1Body):
            target, (state, may_miss) = body, _resnet_state(state)
        elif isinstance(body, MobileNetV1Body):
            target, (state, may_miss) = body, _mobilenet_state(state)
        else:
            raise WeightsError(
                f"{getattr(net, 'name', type(net).__name__)} has no ImageNet backbone to load "
                f"{source!r} into (pretrained_base is for the VGG / ResNet / MobileNet models)"
            )
    load_state_strict(target, state, source, may_be_missing=may_miss)


def check_gluon_constants(net: nn.Module, constants: Mapping[str, Tensor], source: str) -> None:
    """Compare GluonCV's constants stored in a model file with ``net``'s own; a mismatch is a ``WeightsError``.

    ``anchor_generators.i.anchors`` ``Tensor[1, 1, S, S, K*4]`` (layer i on an S x S grid) must equal ssdkit's
    anchors of that layer on the same grid; ``init_scale`` ``Tensor[1, 3, 1, 1]`` the VGG input scale.
    """
    from ..anchors import layer_anchors

    spec = getattr(net, "anchor_spec", None)
    layers = sorted(int(k.split(".")[1]) for k in constants if k.startswith("anchor_generators."))
    if spec is not None and layers and layers != list(range(spec.num_layers)):
        raise WeightsError(
            f"weight file {source!r} has anchors of layers {layers} but {net.name} has "
            f"{spec.num_layers} anchor layers (another model's file?)"
        )
    problems = []
    for i in layers:
        stored = constants[f"anchor_generators.{i}.anchors"].to(torch.float64)
        k = spec.anchors_per_position()[i]
        if stored.dim() != 5 or stored.shape[2] != stored.shape[3] or stored.shape[4] != 4 * k:
            problems.append(
                f"anchor_generators.{i}.anchors: shape {tuple(stored.shape)}, expected [1, 1, S, S, {4 * k}]"
            )
            continue
        side = int(stored.shape[2])
        ours = layer_anchors(
            side,
            side,
            spec.sizes[i],
            spec.sizes[i + 1],
            spec.ratios[i],
            spec.steps[i],
            spec.offsets,
            dtype=torch.float64,
        )
        diff = float((stored.reshape(-1, 4) - ours).abs().max())
        if diff > 1e-3 + 1e-5 * float(ours.abs().max()):
            problems.append(f"anchor_generators.{i}.anchors differ from {net.name}'s by up to {diff:.4g} px")
    stored_scale = next((v for k, v in constants.items() if k.endswith("init_scale")), None)
    own_scale = getattr(getattr(net, "features", None), "init_scale", None)
    if stored_scale is not None:
        if (
            own_scale is None
            or tuple(stored_scale.shape) != tuple(own_scale.shape)
            or not torch.allclose(stored_scale.to(own_scale.dtype), own_scale, rtol=1e-5, atol=1e-4)
        ):
            problems.append(
                f"init_scale {stored_scale.flatten().tolist()} does not match the model's "
                f"{None if own_scale is None else own_scale.flatten().tolist()}"
            )
    if problems:
        raise WeightsError(f"weight file {source!r} does not fit {net.name}: {'; '.join(problems[:_SHOW])}")


def load_checkpoint_weights(net: nn.Module, path: str | os.PathLike, state: Mapping[str, Tensor] | None = None) -> None:
    """Load a full model strictly: an ssdkit state dict / checkpoint, or a GluonCV SSD ``.params`` file
    (Gluon names mapped, stored anchors and ``init_scale`` compared with the model's)."""
    source = os.fspath(path)
    if state is None:
        state, _ = read_weights(source)
    mapped, constants, notes, origin = map_gluon_ssd_names(state)
    if notes:
        raise WeightsError(f"weight file {source!r}: {'; '.join(notes)}")
    check_gluon_constants(net, constants, source)
    load_state_strict(net, mapped, source, origin=origin)
