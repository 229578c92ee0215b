"""A TensorFlow-free reader for TFRecord files and ``tf.train.Example`` protobufs.

TFRecord framing (one record)::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)

with ``masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32)`` and crc = CRC-32C (Castagnoli).
Both CRCs are verified; a mismatch or a truncated file raises :class:`TFRecordError` naming the file, the record
index and its byte offset.

``tf.train.Example`` = ``Features features = 1``; ``Features`` = ``map<string, Feature> feature = 1``; ``Feature`` is
one of ``BytesList bytes_list = 1``, ``FloatList float_list = 2``, ``Int64List int64_list = 3``; each list holds
``repeated value = 1`` (floats and int64 packed or not). Parsed by a small protobuf wire-format decoder.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

try:  # C implementation (optional speed-up); the pure-Python table below gives identical values
    import google_crc32c as _google_crc32c
    if getattr(_google_crc32c, "implementation", "c") != "c":  # its own Python fallback is slower than ours
        _google_crc32c = None
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _google_crc32c = None

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


class TFRecordError(ValueError):
    """A TFRecord file or tf.train.Example that cannot be read (bad CRC, truncation, malformed protobuf)."""


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) in pure Python."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (C implementation when ``google-crc32c`` is installed)."""
    if _google_crc32c is not None:
        return _google_crc32c.value(bytes(data))
    return crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC that TFRecord stores."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _read_header(f, path: Path, index: int, offset: int, verify: bool) -> int | None:
    header = f.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise TFRecordError(f"{path}: record {index} at byte {offset}: truncated header "
                            f"({len(header)} of {_HEADER.size} bytes); the file is incomplete, download it again")
    length, length_crc = _HEADER.unpack(header)
    if verify and masked_crc32c(header[:8]) != length_crc:
        raise TFRecordError(f"{path}: record {index} at byte {offset}: length CRC mismatch (corrupt file or not a "
                            f"TFRecord file); download it again")
    return length


def index_records(path: str | os.PathLike, verify: bool = True) -> list[tuple[int, int]]:
    """``(data offset, data length)`` of every record, reading only the headers (length CRCs verified)."""
    path = Path(path)
    size = path.stat().st_size
    records = []
    with open(path, "rb") as f:
        offset = 0
        while True:
            length = _read_header(f, path, len(records), offset, verify)
            if length is None:
                break
            end = offset + _HEADER.size + length + _FOOTER.size
            if end > size:
                raise TFRecordError(f"{path}: record {len(records)} at byte {offset}: truncated data (needs {end} "
                                    f"bytes, file has {size}); the file is incomplete, download it again")
            records.append((offset + _HEADER.size, length))
            f.seek(end)
            offset = end
    return records


def read_record(path: str | os.PathLike, offset: int, length: int, *, index: int | None = None,
                verify: bool = True, handle=None) -> bytes:
    """The data of one record (its data CRC verified), given an entry of :func:`index_records`."""
    path = Path(path)
    f = handle if handle is not None else open(path, "rb")
    try:
        f.seek(offset)
        chunk = f.read(length + _FOOTER.size)
    finally:
        if handle is None:
            f.close()
    where = f"{path}: record {'?' if index is None else index} at byte {offset - _HEADER.size}"
    if len(chunk) < length + _FOOTER.size:
        raise TFRecordError(f"{where}: truncated data; the file is incomplete, download it again")
    data = chunk[:length]
    if verify and masked_crc32c(data) != _FOOTER.unpack(chunk[length:])[0]:
        raise TFRecordError(f"{where}: data CRC mismatch (corrupt record); download the file again")
    return data


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
    """Every record's data, in order, with both CRCs verified."""
    path = Path(path)
    with open(path, "rb") as f:
        for i, (offset, length) in enumerate(index_records(path, verify)):
            yield read_record(path, offset, length, index=i, verify=verify, handle=f)


# --- protobuf wire format -----------------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFRecordError("malformed protobuf: truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFRecordError("malformed protobuf: varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field; value = int (varint/fixed) or bytes (length-delimited)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise TFRecordError(f"malformed protobuf: unsupported wire type {wire} for field {number}")
        if pos > end:
            raise TFRecordError(f"malformed protobuf: field {number} runs past the end of the message")
        yield number, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_feature(buf: bytes) -> list[bytes] | np.ndarray:
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        if number == 1:  # BytesList
            return [bytes(v) for n, w, v in _fields(value) if n == 1 and w == 2]
        if number == 2:  # FloatList: packed (wire 2) or one fixed32 per value (wire 5)
            out = bytearray()
            for n, w, v in _fields(value):
                if n == 1 and w in (2, 5):
                    if w == 2 and len(v) % 4:
                        raise TFRecordError("malformed protobuf: packed float list length not a multiple of 4")
                    out += v
            return np.frombuffer(bytes(out), dtype="<f4").astype(np.float32)
        if number == 3:  # Int64List: packed varints (wire 2) or one varint per value (wire 0)
            values = []
            for n, w, v in _fields(value):
                if n != 1:
                    continue
                if w == 0:
                    values.append(_signed64(v))
                elif w == 2:
                    pos = 0
                    while pos < len(v):
                        x, pos = _varint(v, pos)
                        values.append(_signed64(x))
            return np.asarray(values, dtype=np.int64)
    return []  # a Feature with no kind set


def parse_example(buf: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """Parse a serialized ``tf.train.Example`` into ``{name: list of bytes | float32 array | int64 array}``."""
    features: dict[str, list[bytes] | np.ndarray] = {}
    for number, wire, value in _fields(bytes(buf)):
        if number != 1 or wire != 2:
            continue
        for n, w, entry in _fields(value):  # Features.feature map entries
            if n != 1 or w != 2:
                continue
            key, feature = None, b""
            for en, ew, ev in _fields(entry):
                if en == 1 and ew == 2:
                    key = bytes(ev).decode("utf-8")
                elif en == 2 and ew == 2:
                    feature = ev
            if key is None:
                raise TFRecordError("malformed tf.train.Example: a feature map entry has no key")
            features[key] = _parse_feature(feature)
    return features
