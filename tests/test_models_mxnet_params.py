"""The MXNet NDArray-list reader: files MXNet itself wrote (both format versions, every dtype), and bad files."""

from __future__ import annotations

import importlib.util
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from ssdkit.models.mxnet_params import ParamsFormatError, is_mxnet_params, read_mxnet_params

DATA = os.path.join(os.path.dirname(__file__), "data")
_spec = importlib.util.spec_from_file_location(
    "_model_fixture_generators", Path(__file__).resolve().parents[1] / "tools" / "make_model_fixtures.py"
)
_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tool)
reader_fixture_arrays, write_params = _tool.reader_fixture_arrays, _tool.write_params


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_reads_files_mxnet_wrote(version):
    got = read_mxnet_params(os.path.join(DATA, f"model_mxnet_{version}.params"))
    expected = reader_fixture_arrays(version == "v3")
    assert list(got) == list(expected)
    with np.load(os.path.join(DATA, "model_mxnet_expected.npz")) as stored:
        for name, want in expected.items():
            np.testing.assert_array_equal(stored[f"{version}/{name}"], want)  # the fixture holds these arrays
            assert got[name].dtype == want.dtype, name
            assert got[name].shape == want.shape, name
            np.testing.assert_array_equal(got[name], want)
            assert got[name].flags.writeable


def test_v3_scalar_and_empty_shape():
    got = read_mxnet_params(os.path.join(DATA, "model_mxnet_v3.params"))
    assert got["scalar"].shape == () and float(got["scalar"]) == 3.5
    assert got["empty"].shape == (2, 0, 3)
    assert got["bool"].dtype == np.bool_


def test_numpy_writer_matches_mxnet_bytes(tmp_path):
    """The tests' writer rebuilds MXNet's own V2 file byte for byte."""
    path = tmp_path / "w.params"
    write_params(str(path), reader_fixture_arrays(False))
    assert path.read_bytes() == open(os.path.join(DATA, "model_mxnet_v2.params"), "rb").read()


def _legacy_file(path, v1: bool):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    with open(path, "wb") as f:
        f.write(struct.pack("<QQQ", 0x112, 0, 1))
        if v1:
            f.write(struct.pack("<Iiqq", 0xF993FAC8, 2, 2, 3))
        else:
            f.write(struct.pack("<III", 2, 2, 3))  # no magic: the first word is ndim, uint32 dims
        f.write(struct.pack("<iii", 1, 0, 0) + arr.tobytes())
        f.write(struct.pack("<QQ", 1, 1) + b"w")
    return arr


@pytest.mark.parametrize("v1", [True, False])
def test_older_array_layouts(tmp_path, v1):
    path = tmp_path / "old.params"
    arr = _legacy_file(path, v1)
    np.testing.assert_array_equal(read_mxnet_params(path)["w"], arr)


def test_unnamed_list(tmp_path):
    path = tmp_path / "list.params"
    write_params(str(path), {"x": np.ones(2, np.float32)})
    raw = path.read_bytes()
    path.write_bytes(raw[: -(8 + 8 + 1)] + struct.pack("<Q", 0))  # drop the one name
    assert list(read_mxnet_params(path)) == ["0"]


# ----------------------------------------------------------------------------------------------- bad files
@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.params"
    write_params(str(path), {"a.weight": np.ones((4, 3), np.float32), "a.bias": np.zeros(4, np.float32)})
    return path


def _expect(path, *words):
    with pytest.raises(ParamsFormatError) as e:
        read_mxnet_params(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.params"
    path.write_bytes(b"")
    _expect(path, "empty")


def test_foreign_file(tmp_path):
    path = tmp_path / "foreign.params"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 60)  # a zip (torch) file
    _expect(path, "not MXNet's NDArray-list magic")
    assert not is_mxnet_params(path)


@pytest.mark.parametrize("cut", [8, 20, 30, 60, 100, -3])
def test_truncated(good, cut):
    raw = good.read_bytes()
    good.write_bytes(raw[:cut])
    _expect(good, "truncated" if cut not in (8,) else "shorter than")


def test_trailing_bytes(good):
    good.write_bytes(good.read_bytes() + b"xx")
    _expect(good, "unexpected bytes")


def _patch(path, offset, fmt, value):
    raw = bytearray(path.read_bytes())
    struct.pack_into(fmt, raw, offset, value)
    path.write_bytes(bytes(raw))


def test_huge_counts_refused_before_allocating(good):
    _patch(good, 16, "<Q", 2**62)  # array count
    _expect(good, "claims 4611686018427387904 arrays")


def test_huge_dims_refused(good):
    _patch(good, 24 + 12, "<q", 2**40)  # first dimension of the first array
    _expect(good, "claims", "data bytes")


def test_bad_ndim_and_dtype_and_sparse(good, tmp_path):
    _patch(good, 24 + 8, "<i", 1000)
    _expect(good, "1000 dimensions")
    write_params(str(good), {"x": np.ones(2, np.float32)})
    _patch(good, 24 + 12 + 8 + 8, "<i", 12)  # dtype flag -> bfloat16
    _expect(good, "bfloat16")
    write_params(str(good), {"x": np.ones(2, np.float32)})
    _patch(good, 24 + 4, "<i", 1)  # storage type -> row_sparse
    _expect(good, "sparse")


def test_name_count_mismatch(good):
    raw = good.read_bytes()
    names_at = len(raw) - (8 + 8 + len("a.weight") + 8 + len("a.bias"))
    _patch(good, names_at, "<Q", 1)
    _expect(good, "1 names for 2 arrays")
