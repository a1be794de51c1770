"""containerd's value encodings in bbolt (core/metadata/boltutil, core/snapshots/storage):
Go's ``binary.PutVarint`` (zig-zag) and ``PutUvarint``, and ``time.Time.MarshalBinary``."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

UNIX_OFFSET = 62135596800  # seconds from 0001-01-01 to 1970-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class DecodeError(ValueError):
    pass


def uvarint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Go's ``binary.Uvarint``: the value and the offset after it."""
    value = shift = 0
    for i in range(offset, min(len(data), offset + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise DecodeError("truncated or overlong varint")


def varint(data: bytes) -> int:
    """Go's ``binary.Varint`` (zig-zag signed)."""
    u, _ = uvarint(data)
    return (u >> 1) ^ -(u & 1)


def gotime(data: bytes) -> datetime:
    """Go's ``Time.MarshalBinary`` (versions 1 and 2), as an aware UTC datetime."""
    if len(data) not in (15, 16) or data[0] not in (1, 2) or len(data) != 14 + data[0]:
        raise DecodeError(f"not a Go binary time ({len(data)} bytes)")
    seconds, nanos = struct.unpack_from(">qi", data, 1)
    if not 0 <= nanos < 1_000_000_000:
        raise DecodeError("nanoseconds out of range")
    try:
        return _EPOCH + timedelta(seconds=seconds - UNIX_OFFSET, microseconds=nanos // 1000)
    except OverflowError as exc:
        raise DecodeError("time out of range") from exc


def gotime_nanos(data: bytes) -> tuple[int, int]:
    """Unix seconds and nanoseconds of a Go binary time (no precision lost)."""
    gotime(data)  # validates
    seconds, nanos = struct.unpack_from(">qi", data, 1)
    return seconds - UNIX_OFFSET, nanos


def rfc3339(data: bytes | None) -> str | None:
    """A Go binary time as Go's RFC 3339 with nanoseconds (``…05.805982367Z``)."""
    if data is None:
        return None
    try:
        seconds, nanos = gotime_nanos(data)
    except DecodeError:
        return None
    base = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{frac.rstrip('.')}Z"


__all__ = ["DecodeError", "gotime", "gotime_nanos", "rfc3339", "uvarint", "varint"]
