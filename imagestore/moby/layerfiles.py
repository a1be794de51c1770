"""A layer's file list from ``layerdb/sha256/<chain>/tar-split.json.gz``, without reading a
byte of layer data: the tar headers are in the tar-split's raw segments (type 2), each file
entry (type 1) follows its headers and carries the CRC-64 of the file's bytes.

The headers are parsed here as Go's ``archive/tar`` reads them (ustar with its prefix field,
GNU long names ``L``/``K``, PAX ``path``/``linkpath``/``size``/``uid``/``gid``/``mtime``
records, octal or base-256 numbers), because the tar-split's own ``name`` is all it keeps of
the header. The file is someone else's data: a name that is absolute, climbs out with ``..``,
holds a NUL or a newline, a header larger than ``MAX_HEADERS`` or a tar-split that does not
parse is a problem of that layer (the entry, or the rest of the list, is left out), never an
exception and never a path outside the layer.
"""

from __future__ import annotations

import base64
import binascii
import errno
import gzip
import json
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TAR_SPLIT = "tar-split.json.gz"
BLOCK = 512
MAX_LINE = 1 << 24  # one JSON line (tarsplit.py's own bound)
# Headers of one entry (PAX records, long names included): real ones are a few KiB.
MAX_HEADERS = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_TYPES = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
          b"3": "char", b"4": "block", b"5": "dir", b"6": "fifo"}
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class LayerFile:
    """One entry of a layer's tar. ``path`` is clean and relative (no ``./``, no trailing
    ``/``); ``crc64`` is the hex of the tar-split's CRC-64 of the file's bytes (``None``
    for an entry without bytes). ``whiteout`` is ``"remove"`` for ``.wh.NAME`` (``target``
    is the path it removes), ``"opaque"`` for ``.wh..wh..opq`` (``target`` is its folder,
    ``""`` for the root), ``None`` for an entry that lands in the filesystem."""

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    link: str | None
    crc64: str | None
    whiteout: str | None = None
    target: str | None = None


@dataclass
class LayerFiles:
    """Every entry of one layer (the last one of a path given twice, as extracting keeps),
    and what was wrong with the tar-split, one line each."""

    entries: list[LayerFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _Bad(ValueError):
    """One entry left out (the list goes on)."""


def _shown(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:200]


def _number(raw: bytes) -> int:
    """A numeric header field: octal text, or base-256 when the first byte has 0x80 set."""
    if raw and raw[0] & 0x80:
        value = int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
        if raw[0] & 0x40:  # negative in two's complement
            value -= 1 << (len(raw) * 8 - 1)
        return value
    text = raw.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise _Bad(f"numeric field {text[:24]!r} is not octal") from None


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _pax(data: bytes) -> dict[bytes, bytes]:
    """PAX records ``"<len> key=value\\n"``."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\0") == b"":
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise _Bad("PAX record without a length")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _Bad("PAX record length is not a number") from None
        if length <= space - pos or pos + length > len(data):
            raise _Bad("PAX record length is out of range")
        record = data[space + 1:pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise _Bad("PAX record is malformed")
        key, value = record[:-1].split(b"=", 1)
        out[key] = value
        pos += length
    return out


def _headers(raw: bytes, pad: int) -> tuple[dict[str, object], bytes]:
    """The entry's fields from the raw bytes between two file entries: ``pad`` bytes of the
    previous file's padding, then its headers (extension headers first)."""
    pos = pad
    long_name = long_link = None
    pax: dict[bytes, bytes] = {}
    while True:
        block = raw[pos:pos + BLOCK]
        if len(block) < BLOCK:
            raise _Bad("header is truncated")
        pos += BLOCK
        flag = block[156:157]
        if flag in (b"L", b"K", b"x", b"g"):
            size = _number(block[124:136])
            if not 0 <= size <= MAX_HEADERS:
                raise _Bad(f"extension header of {size} bytes")
            data = raw[pos:pos + size]
            if len(data) < size:
                raise _Bad("extension header is truncated")
            pos += -(-size // BLOCK) * BLOCK
            if flag == b"L":
                long_name = _cstr(data)
            elif flag == b"K":
                long_link = _cstr(data)
            elif flag == b"x":
                pax.update(_pax(data))
            continue  # a global header ('g') changes nothing docker writes
        break
    if sum(block) == 0:
        raise _Bad("entry without a header")
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\0" and block[345:500].strip(b"\0"):
        name = _cstr(block[345:500]) + b"/" + name
    name = pax.get(b"path", long_name if long_name is not None else name)
    link = pax.get(b"linkpath", long_link if long_link is not None else _cstr(block[157:257]))
    fields: dict[str, object] = {
        "type": flag, "mode": _number(block[100:108]) & 0o7777,
        "uid": _number(block[108:116]), "gid": _number(block[116:124]),
        "size": _number(block[124:136]), "mtime": _number(block[136:148]), "link": link}
    for key, name_ in ((b"uid", "uid"), (b"gid", "gid"), (b"size", "size")):
        if key in pax:
            try:
                fields[name_] = int(pax[key])
            except ValueError:
                raise _Bad(f"PAX {key.decode()} is not a number") from None
    if b"mtime" in pax:
        try:
            fields["mtime"] = int(float(pax[b"mtime"]))
        except (ValueError, OverflowError):
            raise _Bad("PAX mtime is not a number") from None
    return fields, name


def clean(name: bytes) -> str:
    """The entry's path as extraction resolves it (Go's ``filepath.Clean``), refused
    (``_Bad``) when absolute, climbing out, or holding a NUL, a newline or invalid UTF-8."""
    if b"\0" in name or b"\n" in name:
        raise _Bad("name holds a NUL or a newline")
    if name.startswith(b"/"):
        raise _Bad("name is absolute")
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            raise _Bad("name climbs out with ..")
        parts.append(part)
    try:
        return b"/".join(parts).decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("name is not valid UTF-8") from None


def _entry(fields: dict[str, object], name: bytes, crc: bytes | None) -> LayerFile:
    kind = _TYPES.get(fields["type"])  # type: ignore[call-overload]
    if kind is None:
        raise _Bad(f"tar type {fields['type']!r} is not one extraction keeps")
    path = clean(name)
    if not path:
        return LayerFile("", "dir", 0, int(fields["mode"]), 0, 0, 0, None, None,  # type: ignore[call-overload]
                         "root", None)
    link_raw = fields["link"]
    assert isinstance(link_raw, bytes)
    link = None
    if kind in ("symlink", "hardlink"):
        if b"\0" in link_raw or b"\n" in link_raw:
            raise _Bad("link target holds a NUL or a newline")
        link = link_raw.decode("utf-8", "replace") if kind == "symlink" else clean(link_raw)
    size = int(fields["size"]) if kind == "file" else 0  # type: ignore[call-overload]
    if size < 0:
        raise _Bad("negative size")
    folder, _, base = path.rpartition("/")
    whiteout = target = None
    if base == OPAQUE:
        whiteout, target = "opaque", folder
    elif base.startswith(WHITEOUT):
        rest = base[len(WHITEOUT):]
        if rest.startswith(WHITEOUT):  # aufs' own (.wh..wh.plnk and the like): not files
            whiteout, target = "meta", None
        elif rest in ("", ".", ".."):
            raise _Bad("whiteout without a name")
        else:
            whiteout, target = "remove", f"{folder}/{rest}" if folder else rest
    return LayerFile(path, kind, size, int(fields["mode"]), int(fields["uid"]),  # type: ignore[call-overload]
                     int(fields["gid"]), int(fields["mtime"]), link,  # type: ignore[call-overload]
                     crc.hex() if crc else None, whiteout, target)


def _b64(value: object) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ValueError("payload is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("payload is not valid base64") from None


def _lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, JSON document) of each line; raises ``OSError``/``ValueError``."""
    fd = os.open(path, _OPEN)
    with os.fdopen(fd, "rb") as raw:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("tar-split is not a regular file")
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            number = 0
            while line := gz.readline(MAX_LINE + 1):
                number += 1
                if len(line) > MAX_LINE:
                    raise ValueError(f"line {number} is longer than {MAX_LINE} bytes")
                if line.strip():
                    yield number, json.loads(line)


def read_layer_files(folder: Path) -> LayerFiles:
    """The entries of the layer whose layerdb folder is ``folder`` (``layerdb/sha256/<hex>``).
    Never raises for what is in the file: every fault is a line of ``problems``."""
    out = LayerFiles()
    found: dict[str, LayerFile] = {}
    pending = bytearray()
    pad = 0  # padding of the previous file, first in the next segment
    number = 0
    path = folder / TAR_SPLIT
    try:
        for number, doc in _lines(path):
            if not isinstance(doc, dict) or type(doc.get("type")) is not int:
                raise ValueError("entry is not an object with an integer type")
            if doc["type"] == 2:
                if len(pending) <= MAX_HEADERS + BLOCK * 4:
                    pending += _b64(doc.get("payload"))
                continue
            if doc["type"] != 1:
                continue
            raw, pending = bytes(pending), bytearray()
            size = doc.get("size", 0)
            if type(size) is not int or size < 0:
                raise ValueError(f"entry {number}: size is not a non-negative integer")
            try:
                if len(raw) > MAX_HEADERS + BLOCK * 4:
                    raise _Bad(f"headers are longer than {MAX_HEADERS} bytes")
                fields, name = _headers(raw, pad)
                if fields["size"] != size and fields["type"] in (b"0", b"\0", b"7"):
                    raise _Bad(f"header size {fields['size']} is not the tar-split's {size}")
                entry = _entry(fields, name, _b64(doc.get("payload")) if size else None)
            except _Bad as exc:
                out.problems.append(f"entry {number} ({_shown(str(doc.get('name', '')))}): "
                                    f"{exc}")
            else:
                if entry.whiteout != "root":
                    found.pop(entry.path, None)  # a path given again moves to its new place
                    found[entry.path] = entry
            pad = -size % BLOCK
    except OSError as exc:
        why = "is missing" if exc.errno == errno.ENOENT else \
            "is a symlink (not followed)" if exc.errno == errno.ELOOP else \
            f"is unreadable: {exc.strerror or exc}"
        out.problems.append(f"tar-split {why}")
    except (EOFError, zlib.error) as exc:
        out.problems.append(f"tar-split is not a readable gzip file: {exc or 'truncated'}")
    except (ValueError, RecursionError) as exc:
        out.problems.append(f"tar-split line {number + 1} is invalid: {_shown(str(exc))}")
    out.entries = list(found.values())
    return out


__all__ = ["MAX_HEADERS", "OPAQUE", "TAR_SPLIT", "WHITEOUT", "LayerFile", "LayerFiles",
           "clean", "read_layer_files"]
