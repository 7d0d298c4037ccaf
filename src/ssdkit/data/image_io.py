"""Image decoding for the file-backed data sets: RGB uint8 ``tv_tensors.Image`` or :class:`BadSampleError`."""

from __future__ import annotations

import os
import re
import warnings

from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file

from .errors import BadSampleError

__all__ = ["read_image"]


def _decoder_reason(err: Exception) -> str:
    """The decoder's own words: torchvision's C++ errors start with the function and the source file of its build
    (``decode_jpeg, /__w/vision/.../decode_jpeg.cpp:171, Image is incomplete or truncated``), which says nothing
    about the image."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    parts = [part.strip() for part in text.split(", ")]
    if len(parts) >= 3 and re.search(r"\.(cpp|cc|h):\d+$", parts[1]):
        return ", ".join(parts[2:])
    return text


def read_image(path: str) -> tv_tensors.Image:
    """Decode ``path`` to an RGB uint8 ``tv_tensors.Image`` ``[3, H, W]``.

    Raises :class:`BadSampleError` naming the file when it is missing, empty or cannot be decoded.
    """
    if os.path.isdir(path):
        raise BadSampleError(path, "is a folder, not an image file")
    if not os.path.isfile(path):
        raise BadSampleError(path, "image file not found")
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs in favour of TorchCodec
            warnings.filterwarnings(
                "ignore", message=".*image decoding and encoding capabilities", category=DeprecationWarning
            )
            data = read_file(path)
            if data.numel() == 0:
                raise BadSampleError(path, "image file is empty")
            image = decode_image(data, mode=ImageReadMode.RGB)
    except BadSampleError:
        raise
    except Exception as err:  # torchvision raises RuntimeError/ValueError for corrupt data
        raise BadSampleError(path, f"cannot decode image ({type(err).__name__}: {_decoder_reason(err)})") from None
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        raise BadSampleError(path, f"decoded image has unusable shape {tuple(image.shape)}")
    return tv_tensors.Image(image)
