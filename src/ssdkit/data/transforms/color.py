"""GluonCV's ``random_color_distort`` as one affine map of the RGB vector.

The four steps (brightness, contrast, saturation, hue) are affine maps of each pixel's RGB vector, so they are
composed into one 3x3 matrix + offset and applied in a single pass (equal to the step-by-step result up to float32
rounding). Output float32, never clipped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from ._tv import is_image, randint, rewrap, uniform

__all__ = ["color_distort_affine", "apply_color_affine", "RandomColorDistort"]

# GluonCV's YIQ matrices (GluonCV 0.10.5, ``experimental.image``)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.321), (0.211, -0.523, 0.311))
_YIQ_TO_RGB = ((1.0, 0.956, 0.621), (1.0, -0.272, -0.647), (1.0, -1.107, 1.705))
_GRAY = (0.299, 0.587, 0.114)


def color_distort_affine(
    brightness: float | None = None,
    contrast: float | None = None,
    saturation: float | None = None,
    hue: float | None = None,
    contrast_first: bool = True,
) -> tuple[Tensor, Tensor]:
    """Compose GluonCV's colour steps into ``rgb' = A @ rgb + b``; returns ``(A [3, 3], b [3])`` float64.

    ``brightness`` delta added first; then contrast -> saturation -> hue when ``contrast_first``,
    else saturation -> hue -> contrast. ``contrast``/``saturation`` are alphas, ``hue`` the angle in
    radians (GluonCV draws ``pi * U(-18, 18)``). ``None`` skips a step.
    """
    a = torch.eye(3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    if brightness is not None:
        b = b + brightness

    def contrast_step(a, b):
        return (a * contrast, b * contrast) if contrast is not None else (a, b)

    def saturation_step(a, b):
        if saturation is None:
            return a, b
        m = saturation * torch.eye(3, dtype=torch.float64) + (1.0 - saturation) * torch.tensor(
            [_GRAY] * 3, dtype=torch.float64
        )
        return m @ a, m @ b

    def hue_step(a, b):
        if hue is None:
            return a, b
        u, w = math.cos(hue), math.sin(hue)
        rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, u, -w], [0.0, w, u]], dtype=torch.float64)
        m = torch.tensor(_YIQ_TO_RGB, dtype=torch.float64) @ rot @ torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        return m @ a, m @ b

    steps = (contrast_step, saturation_step, hue_step) if contrast_first else (saturation_step, hue_step, contrast_step)
    for step in steps:
        a, b = step(a, b)
    return a, b


def apply_color_affine(image: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``image [3, H, W]`` (any dtype) -> float32 ``a @ pixel + b`` for every pixel; never clipped."""
    x = image.as_subclass(Tensor).to(torch.float32)
    c, h, w = x.shape[-3:]
    if c != 3:
        raise ValueError(f"colour distortion needs a 3-channel RGB image, got {c} channels")
    flat = x.reshape(-1, 3, h * w)
    out = torch.baddbmm(
        b.to(torch.float32).view(1, 3, 1).expand(flat.shape[0], 3, 1),
        a.to(torch.float32).expand(flat.shape[0], 3, 3),
        flat,
    )
    return out.reshape(x.shape)


class RandomColorDistort(v2.Transform):
    """GluonCV's ``random_color_distort`` on the image; boxes untouched. Output float32, unclipped.

    Each step fires with probability ``p`` (GluonCV: ``uniform(0, 1) > 0.5``): brightness
    ``U(-brightness_delta, brightness_delta)``, contrast ``x * U(*contrast_range)`` (no mean
    subtraction), saturation ``alpha * x + (1 - alpha) * gray`` with ``alpha ~ U(*saturation_range)``,
    hue: YIQ rotation by ``pi * U(-hue_delta, hue_delta)`` radians (GluonCV's quirk).
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18,
        p: float = 0.5,
    ):
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def fires() -> bool:
            return float(torch.rand(())) < self.p

        brightness = uniform(-self.brightness_delta, self.brightness_delta) if fires() else None
        contrast_first = bool(randint(0, 2))
        # draw in the order the steps run, as GluonCV does
        names = ("contrast", "saturation", "hue") if contrast_first else ("saturation", "hue", "contrast")
        values: dict[str, float | None] = {}
        for name in names:
            if not fires():
                values[name] = None
            elif name == "contrast":
                values[name] = uniform(*self.contrast_range)
            elif name == "saturation":
                values[name] = uniform(*self.saturation_range)
            else:
                values[name] = math.pi * uniform(-self.hue_delta, self.hue_delta)
        a, b = color_distort_affine(brightness, values["contrast"], values["saturation"], values["hue"], contrast_first)
        return dict(a=a, b=b, brightness=brightness, contrast_first=contrast_first, **values)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not is_image(inpt):
            return inpt
        return rewrap(apply_color_affine(inpt, params["a"], params["b"]), inpt)
