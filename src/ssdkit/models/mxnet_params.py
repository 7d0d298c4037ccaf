"""Reading MXNet NDArray-list files (``.params``) with numpy only: what Gluon's ``save_parameters`` and
``mx.nd.save`` write, the format of GluonCV's model-zoo files.

Layout (little-endian; MXNet 1.x ``src/ndarray/ndarray.cc``, ``NDArray::Save`` and the list ``Save``):

- list header: ``uint64`` magic ``0x112``, ``uint64`` reserved;
- ``uint64`` number of arrays, then each array;
- ``uint64`` number of names, then each name as ``uint64`` length + bytes (no names, or one per array).

One array:

- ``uint32`` magic: ``0xF993FAC9`` (V2, written by default) or ``0xF993FACA`` (V3, written under numpy shape
  semantics, e.g. ``mx.npx.set_np()``); older files: ``0xF993FAC8`` (V1) or, before that, no magic at all;
- V2/V3: ``int32`` storage type (0 = dense; sparse arrays are refused here);
- shape: ``int32`` ndim, then ``int64`` per dimension (legacy files: ``uint32`` per dimension, the ndim being
  the first word). An empty array ends here: ndim 0 in V1/V2, ndim -1 (or an unknown dimension) in V3;
  in V3 ndim 0 is a scalar with one element;
- context: ``int32`` device type, ``int32`` device id (ignored: everything is read onto the CPU);
- ``int32`` type flag (mshadow: 0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64, 7 bool,
  8 int16, 9 uint16, 10 uint32, 11 uint64);
- the data, C order, ``itemsize * prod(shape)`` bytes.

The reader trusts nothing in the file: every count, dimension and byte size is checked against the bytes
that are left before anything is allocated, and nothing is ever executed (no pickle).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

import numpy as np

__all__ = [
    "read_mxnet_params",
    "is_mxnet_params",
    "ParamsFormatError",
    "LIST_MAGIC",
    "NDARRAY_V1_MAGIC",
    "NDARRAY_V2_MAGIC",
    "NDARRAY_V3_MAGIC",
    "MXNET_DTYPES",
]

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA

MXNET_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    8: np.dtype("<i2"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
}
_MAX_NDIM = 32  # MXNet shapes have far fewer dimensions; more is a corrupt or foreign file
_MIN_ARRAY_BYTES = 8  # magic + the smallest shape record
_NAME_DECODE = "utf-8"


class ParamsFormatError(ValueError):
    """The bytes are not a well-formed MXNet NDArray list (the caller adds the file name)."""


class _Reader:
    def __init__(self, f: BinaryIO, size: int):
        self.f = f
        self.size = size
        self.pos = 0

    @property
    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.left:
            raise ParamsFormatError(
                f"{what} needs {n} bytes at offset {self.pos} but only {self.left} are left (truncated file?)"
            )
        data = self.f.read(n)
        if len(data) != n:
            raise ParamsFormatError(f"{what}: read {len(data)} of {n} bytes at offset {self.pos}")
        self.pos += n
        return data

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array_bytes(self, n: int, what: str) -> np.ndarray:
        """``n`` bytes into a fresh writable ``uint8`` buffer, allocated only once ``n`` is known to be in the file
        (``np.empty``: no zero-filling pass before the read)."""
        if n > self.left:
            raise ParamsFormatError(
                f"{what} claims {n} data bytes at offset {self.pos} but only {self.left} are left (truncated file?)"
            )
        buf = np.empty(n, np.uint8)
        got = self.f.readinto(memoryview(buf)) if n else 0
        if got != n:
            raise ParamsFormatError(f"{what}: read {got} of {n} data bytes at offset {self.pos}")
        self.pos += n
        return buf


def _read_shape(r: _Reader, what: str, *, legacy_ndim: int | None = None) -> tuple[int, ...] | None:
    """A shape, or None for an array whose shape is unknown (V3 ``ndim == -1`` or a ``-1`` dimension)."""
    if legacy_ndim is not None:
        ndim, dim_fmt = legacy_ndim, "I"
    else:
        (ndim,), dim_fmt = r.unpack("i", f"{what}: ndim"), "q"
    if ndim == -1:
        return None
    if ndim < 0 or ndim > _MAX_NDIM:
        raise ParamsFormatError(f"{what}: {ndim} dimensions (expected 0-{_MAX_NDIM}; not an MXNet array?)")
    dims = r.unpack(dim_fmt * ndim, f"{what}: shape")
    if any(d == -1 for d in dims):
        return None
    if any(d < 0 for d in dims):
        raise ParamsFormatError(f"{what}: negative dimension in shape {dims}")
    return tuple(int(d) for d in dims)


def _read_array(r: _Reader, index: int) -> np.ndarray | None:
    what = f"array {index}"
    (magic,) = r.unpack("I", f"{what}: magic")
    version = {NDARRAY_V1_MAGIC: 1, NDARRAY_V2_MAGIC: 2, NDARRAY_V3_MAGIC: 3}.get(magic, 0)
    if version >= 2:
        (stype,) = r.unpack("i", f"{what}: storage type")
        if stype != 0:
            raise ParamsFormatError(f"{what}: storage type {stype} (sparse arrays are not supported, only dense)")
    shape = _read_shape(r, what, legacy_ndim=magic if version == 0 else None)
    if shape is None or (version != 3 and len(shape) == 0):
        return None  # an empty (none) array: nothing else follows
    r.unpack("ii", f"{what}: context")
    (type_flag,) = r.unpack("i", f"{what}: dtype")
    dtype = MXNET_DTYPES.get(type_flag)
    if dtype is None:
        extra = " (bfloat16 is not supported)" if type_flag == 12 else ""
        raise ParamsFormatError(f"{what}: unknown dtype flag {type_flag}{extra}")
    count = 1
    for d in shape:
        count *= d
    buf = r.array_bytes(count * dtype.itemsize, f"{what} {shape} {dtype}")
    return buf.view(dtype).reshape(shape)


def _read_list(f: BinaryIO, size: int) -> list[tuple[str, np.ndarray | None]]:
    r = _Reader(f, size)
    if size == 0:
        raise ParamsFormatError("the file is empty")
    if size < 16:
        raise ParamsFormatError(f"only {size} bytes, shorter than the 16-byte header of an MXNet NDArray list")
    magic, _reserved = r.unpack("QQ", "header")
    if magic != LIST_MAGIC:
        raise ParamsFormatError(
            f"header {magic:#x} is not MXNet's NDArray-list magic {LIST_MAGIC:#x} "
            f"(not a .params file written by MXNet/Gluon)"
        )
    (count,) = r.unpack("Q", "array count")
    if count * _MIN_ARRAY_BYTES > r.left:
        raise ParamsFormatError(f"the header claims {count} arrays but only {r.left} bytes follow (truncated file?)")
    arrays = [_read_array(r, i) for i in range(count)]
    (num_names,) = r.unpack("Q", "name count")
    if num_names not in (0, count):
        raise ParamsFormatError(f"{num_names} names for {count} arrays")
    if num_names * 8 > r.left:
        raise ParamsFormatError(f"the file claims {num_names} names but only {r.left} bytes follow (truncated file?)")
    names = []
    for i in range(num_names):
        (length,) = r.unpack("Q", f"name {i}: length")
        raw = r.take(length, f"name {i}")
        try:
            names.append(raw.decode(_NAME_DECODE))
        except UnicodeDecodeError as e:
            raise ParamsFormatError(f"name {i} is not UTF-8 text ({e})") from None
    if r.left:
        raise ParamsFormatError(f"{r.left} unexpected bytes after the last name (offset {r.pos})")
    if not names:
        names = [str(i) for i in range(count)]
    return list(zip(names, arrays))


def read_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray | None]:
    """Read the MXNet NDArray list at ``path`` into ``{name: array}`` (file order).

    Arrays are numpy arrays in their stored dtype (little-endian), writable, each in its own buffer. An empty
    (none) array is ``None``. A file without names gets ``"0"``, ``"1"``, ... Raises ``ParamsFormatError``
    (a ``ValueError``) with the file name and the offending field for anything that is not a well-formed list.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            items = _read_list(f, size)
        except ParamsFormatError as e:
            raise ParamsFormatError(f"{path!r} is not a readable MXNet .params file: {e}") from None
    out: dict[str, np.ndarray | None] = {}
    for name, arr in items:
        if name in out:
            raise ParamsFormatError(f"{path!r} is not a readable MXNet .params file: name {name!r} appears twice")
        out[name] = arr
    return out


def is_mxnet_params(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with MXNet's NDArray-list header."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and struct.unpack("<Q", head)[0] == LIST_MAGIC
