"""ssdkit.data.image_io.read_image: RGB uint8 images, and bad files named in the error."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import write_png

from ssdkit.data.errors import BadSampleError
from ssdkit.data.image_io import read_image


def test_reads_rgb_uint8(tmp_path):
    gray = torch.randint(0, 256, (1, 5, 7), dtype=torch.uint8)
    write_png(gray, str(tmp_path / "g.png"))
    image = read_image(str(tmp_path / "g.png"))
    assert image.shape == (3, 5, 7) and image.dtype == torch.uint8
    assert torch.equal(image[0], gray[0]) and torch.equal(image[2], gray[0])


@pytest.mark.parametrize("content,reason", [(None, "not found"), (b"", "empty"), (b"not an image", "cannot decode")])
def test_bad_files_are_named(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadSampleError, match=reason) as err:
        read_image(str(path))
    assert err.value.path == str(path)


def test_folder_is_not_called_missing(tmp_path):
    with pytest.raises(BadSampleError, match="is a folder"):
        read_image(str(tmp_path))


def test_truncated_jpeg_reason_without_decoder_source_path(tmp_path):
    from torchvision.io import encode_jpeg

    data = encode_jpeg(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)).numpy().tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSampleError, match="cannot decode image") as err:
        read_image(str(path))
    assert ".cpp" not in str(err.value) and "/__w/" not in str(err.value)
    assert err.value.reason.endswith(")") and len(err.value.reason) > len("cannot decode image ()")
