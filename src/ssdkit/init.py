"""Weight initialisation schemes, named after the MXNet initializers GluonCV uses.

Fans follow MXNet (and PyTorch): for a conv weight ``[out, in/groups, kh, kw]``,
``fan_in = in/groups * kh * kw`` and ``fan_out = out * kh * kw``.

| scheme | conv / linear weight | MXNet name |
| --- | --- | --- |
| ``"xavier"`` | U(-b, b), ``b = sqrt(2 / ((fan_in + fan_out) / 2))`` | Xavier(uniform, avg, magnitude=2) |
| ``"xavier_gaussian_out"`` | N(0, ``sqrt(2 / fan_out)``) | Xavier(gaussian, out, magnitude=2) |
| ``"kaiming_fan_out"`` | N(0, ``sqrt(2 / fan_out)``) (same numbers as above) | ``kaiming_normal_(fan_out, relu)`` |
| ``"uniform"`` | U(-0.07, 0.07) | Uniform(0.07), MXNet's default |

Biases start at zero. Batch norms get gamma 1, beta 0 and fresh running statistics (mean 0, var 1),
except for the ``"uniform"`` scheme on a fixed-gamma batch norm (the extras of GluonCV's
``FeatureExpander``, marked by ``fix_gamma = True``): there GluonCV's effective initialisation draws beta
from U(-0.07, 0.07) too (spec §1.3); gamma stays 1 because it is fixed. GluonCV also draws those running
statistics from U(-0.07, 0.07); ssdkit keeps them at 0 / 1, because a negative running variance makes an
untrained network return NaN in eval mode (the first training iterations overwrite them either way).
Other parameters (e.g. the L2Norm scale of the VGG backbone) are left alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "init_weights", "init_added_layers", "xavier_bound"]

INIT_SCHEMES = ("xavier", "xavier_gaussian_out", "kaiming_fan_out", "uniform")
_UNIFORM_SCALE = 0.07
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def _check_scheme(scheme: str) -> str:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    return scheme


def xavier_bound(weight: torch.Tensor, magnitude: float = 2.0) -> float:
    """Bound of MXNet's Xavier(uniform, factor 'avg', magnitude) for ``weight``."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return math.sqrt(magnitude / ((fan_in + fan_out) / 2.0))


@torch.no_grad()
def _init_weight(weight: torch.Tensor, scheme: str) -> None:
    if scheme == "xavier":
        # xavier_uniform_ bound is gain * sqrt(6 / (fi + fo)); gain sqrt(2/3) gives sqrt(4 / (fi + fo)).
        nn.init.xavier_uniform_(weight, gain=math.sqrt(2.0 / 3.0))
    elif scheme in ("xavier_gaussian_out", "kaiming_fan_out"):
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    else:  # uniform
        nn.init.uniform_(weight, -_UNIFORM_SCALE, _UNIFORM_SCALE)


@torch.no_grad()
def _init_norm(module: nn.Module, scheme: str) -> None:
    if getattr(module, "weight", None) is not None:
        nn.init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        if scheme == "uniform" and getattr(module, "fix_gamma", False):
            nn.init.uniform_(module.bias, -_UNIFORM_SCALE, _UNIFORM_SCALE)
        else:
            nn.init.zeros_(module.bias)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
        module.reset_running_stats()


def init_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Initialise every conv / linear / norm layer inside ``module`` (itself included) with ``scheme``.

    Returns ``module`` for chaining. Raises ``ValueError`` for an unknown scheme.
    """
    _check_scheme(scheme)
    for m in module.modules():
        if isinstance(m, _CONV_TYPES):
            _init_weight(m.weight, scheme)
            if m.bias is not None:
                with torch.no_grad():
                    nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_TYPES):
            _init_norm(m, scheme)
    return module


def init_added_layers(net: nn.Module, scheme: str) -> nn.Module:
    """Initialise only the layers an SSD adds to its ImageNet backbone (extras + heads).

    ``net`` must provide ``added_layers()`` (every ssdkit model does).
    """
    _check_scheme(scheme)
    if not hasattr(net, "added_layers"):
        raise ValueError(f"{type(net).__name__} has no added_layers(); cannot tell extras and heads apart")
    for m in net.added_layers():
        init_weights(m, scheme)
    return net
