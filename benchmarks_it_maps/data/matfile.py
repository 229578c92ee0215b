"""MATLAB files, read and written: v5 (scipy) and v7.3 (HDF5, via h5py) with MATLAB's axis order.

v7.3 files store arrays column-major, so h5py returns them with reversed axes; they are transposed back here. Cell
arrays of strings are object references to uint16 char arrays (v7.3) or nested object arrays (v5); both come back as
``list[str]`` in MATLAB's column-major order. The writers are used by the simulated twin and by the tests.
"""
from __future__ import annotations

import datetime
import io
import struct
import zlib
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import scipy.io


class MatFileError(ValueError):
    """A MATLAB file or variable is unreadable; ``file``/``field``/``expected``/``got`` say what and where."""

    def __init__(self, file: str | Path, field: str, expected: str, got: str | None = None):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        message = f"{file}: field '{field}': expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)


def is_mat73(path: str | Path) -> bool:
    """True if ``path`` is a MATLAB v7.3 (HDF5) file."""
    return bool(h5py.is_hdf5(str(path)))


def read_mat(path: str | Path, keys: Sequence[str], label: str | None = None) -> dict:
    """Read ``keys`` (those present) from a MATLAB v5 or v7.3 file, with MATLAB axis order and cells as lists.

    v7.3 files are HDF5 with reversed axes (they are transposed back here); cell arrays of strings are returned as
    ``list[str]`` in MATLAB's column-major order for both versions. ``out['__keys__']()`` lists the file's
    variables (computed on demand, for error messages).
    """
    label = label or str(path)
    if is_mat73(path):
        return _read_mat73(path, keys, label)
    return _read_mat5(path, keys, label)


def _read_mat5(path, keys, label) -> dict:
    try:
        raw = scipy.io.loadmat(str(path), variable_names=list(keys), chars_as_strings=True)
    except Exception as error:  # scipy raises several types for non-MAT content
        raise MatFileError(label, "file", "a MATLAB v5 or v7.3 .mat file",
                              f"unreadable ({type(error).__name__}: {error})") from None

    def variables() -> list[str]:
        return [name for name, _, _ in scipy.io.whosmat(str(path))]

    out: dict = {"__keys__": variables}
    for key in keys:
        if key in raw:
            value = raw[key]
            out[key] = _cell_strings(value) if value.dtype == object or value.dtype.kind == "U" else value
    return out


def _cell_strings(value) -> list[str] | np.ndarray:
    """Flatten a loadmat cell/char array into strings (column-major, as MATLAB indexes a 1xN or Nx1 cell)."""
    if isinstance(value, str):
        return [value]
    value = np.asarray(value)
    if value.dtype.kind == "U":
        return [str(v) for v in value.ravel(order="F")]
    strings = []
    for item in value.ravel(order="F"):
        flat = _cell_strings(item)
        if not isinstance(flat, list):
            return value
        strings.append("".join(flat) if len(flat) != 1 else flat[0])
    return strings


def _read_mat73(path, keys, label) -> dict:
    out: dict = {}
    try:
        with h5py.File(str(path), "r") as f:
            names = [k for k in f.keys() if not k.startswith("#")]
            out["__keys__"] = lambda: names
            for key in keys:
                if key not in f:
                    continue
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise MatFileError(label, key, "a MATLAB array", "a struct/group")
                cls = node.attrs.get("MATLAB_class", b"")
                cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                if cls == "cell" or node.dtype == h5py.ref_dtype:
                    refs = node[()].T  # back to MATLAB shape
                    out[key] = [_h5_char(f[ref]) for ref in refs.ravel(order="F")]
                elif cls == "char":
                    chars = node[()].T  # MATLAB char matrix: one string per row
                    out[key] = ["".join(map(chr, row)).rstrip("\x00 ") for row in np.atleast_2d(chars)]
                else:
                    out[key] = node[()].T
    except MatFileError:
        raise
    except Exception as error:
        raise MatFileError(label, "file", "a readable MATLAB v7.3 (HDF5) .mat file",
                              f"unreadable ({type(error).__name__}: {error})") from None
    return out


def _h5_char(dataset) -> str:
    data = np.asarray(dataset[()])
    if dataset.attrs.get("MATLAB_empty", 0) or data.size == 0:
        return ""
    return "".join(map(chr, data.T.ravel(order="C")))



def write_mat(path: str | Path, variables: dict, version: str = "5") -> None:
    """Write a MATLAB file: ``version`` '5' (scipy, compressed) or '7.3' (HDF5 in MATLAB's layout, via h5py).

    Values: numeric arrays (MATLAB shape = numpy shape) or lists of strings (written as 1xN cell arrays).
    """
    if version == "5":
        write_mat5(path, variables)
    elif version == "7.3":
        write_mat73(path, variables)
    else:
        raise ValueError(f"MATLAB version must be '5' or '7.3', got {version!r}")


_MI_COMPRESSED = 15
_MAT5_HEADER_BYTES = 128


def write_mat5(path: str | Path, variables: dict, level: int = 1) -> None:
    """MATLAB v5 file with every variable zlib-compressed (``miCOMPRESSED``) at ``level``.

    scipy's writer compresses at zlib's default level, which is slow for the twin's ~0.6 GB of arrays; here scipy
    serialises each variable uncompressed and the element is compressed as MATLAB does (tag type 15 + zlib stream).
    """

    with open(path, "wb") as f:
        for i, (key, value) in enumerate(variables.items()):
            if isinstance(value, (list, tuple)):
                cell = np.empty((1, len(value)), dtype=object)
                for j, text in enumerate(value):
                    cell[0, j] = text
                value = cell
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {key: value}, do_compression=False, oned_as="row")
            raw = buffer.getbuffer()
            if i == 0:
                f.write(raw[:_MAT5_HEADER_BYTES])
            packed = zlib.compress(raw[_MAT5_HEADER_BYTES:], level)
            del raw
            buffer.close()
            f.write(struct.pack("<II", _MI_COMPRESSED, len(packed)))
            f.write(packed)


_MATLAB_CLASS = {"f8": "double", "f4": "single", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
                 "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64", "b1": "logical"}


def write_mat73(path: str | Path, variables: dict) -> None:
    """MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the MAT header, arrays stored
    with reversed axes (column-major), cell arrays of strings as object references to uint16 char arrays in
    ``#refs#``."""
    path = Path(path)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        for key, value in variables.items():
            if isinstance(value, (list, tuple)):
                references = []
                for i, s in enumerate(value):
                    chars = np.array([ord(c) for c in s], dtype=np.uint16).reshape(len(s), 1)  # MATLAB 1xL
                    ds = refs.create_dataset(f"s{key}_{i}", data=chars)
                    ds.attrs["MATLAB_class"] = np.bytes_("char")
                    ds.attrs["MATLAB_int_decode"] = np.int32(2)
                    references.append(ds.ref)
                cell = f.create_dataset(key, data=np.array(references, dtype=h5py.ref_dtype).reshape(len(value), 1),
                                        dtype=h5py.ref_dtype)
                cell.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                array = np.asarray(value)
                ds = f.create_dataset(key, data=array.T, compression="gzip", compression_opts=1)
                ds.attrs["MATLAB_class"] = np.bytes_(_MATLAB_CLASS[array.dtype.str[1:]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {now} HDF5 schema 1.00 .".ljust(116).encode()
    header = text + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header)
