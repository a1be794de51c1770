"""The entries of a tar-split (``tar-split.json.gz``, gunzipped): one JSON object a line,
as vbatts/tar-split's ``storage.Entry``: a segment (type 2: raw bytes of the tar, base64) or a
file (type 1: its name, size and CRC-64). Lines as Go's ``encoding/json`` writes them are
taken apart without a JSON decoder (a layer of many small files has a line per header and
one per file); every other line goes through ``json.loads``, with the same checks. Names are
cleaned here as tar-split's ``FileGetter`` joins them (``clean_name``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Callable, Iterator

MAX_ENTRY = 1 << 24  # one JSON line; real ones are a few KiB (headers, PAX records)
BLOCK = 1 << 20  # gunzipped bytes split into lines at a time

Entry = tuple[int, bytes, int, bytes]
"""``(type, name, size, payload)``: a segment's size is its payload's length, its payload
``b""`` when not decoded; a file's payload is its CRC-64 (8 bytes, big-endian)."""


class InvalidEntry(ValueError):
    """Line ``line`` (from 1) is not a tar-split entry: ``why``."""

    def __init__(self, line: int, why: str) -> None:
        super().__init__(line, why)
        self.line = line
        self.why = why


def read_entries(read: Callable[[int], bytes], decode: bool = True) -> Iterator[Entry]:
    """Each entry of the gunzipped stream that ``read`` reads, block by block (entries of
    unknown types come too: tar-split skips them); segments undecoded unless ``decode``.
    Raises ``InvalidEntry``; the stream's own errors pass through."""
    line_no = 0
    rest = b""
    try:
        while True:
            block = read(BLOCK)
            lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
            rest = lines.pop() if block else b""
            if len(rest) > MAX_ENTRY:
                line_no += len(lines) + 1
                raise ValueError(f"longer than {MAX_ENTRY} bytes")
            for line in lines:
                line_no += 1
                if len(line) > MAX_ENTRY:
                    raise ValueError(f"longer than {MAX_ENTRY} bytes")
                if line and not line.isspace():
                    yield _parse(line, decode)
            if not block:
                return
    except (ValueError, RecursionError) as exc:
        raise InvalidEntry(line_no, str(exc)) from None


def clean_name(name: bytes) -> list[bytes] | None:
    """An entry's name as Go's ``filepath.Join(root, name)`` cleans it, as parts; ``None``
    for a name that is absolute or climbs out of the layer's folder."""
    if name.startswith(b"/") or b"\0" in name:
        return None
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


def _b64(value: object, what: str) -> bytes:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value or "", validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not valid base64") from None


# tar-split's own lines, as Go's encoding/json writes its Entry struct (or Python's json with
# its default separators), are taken apart without a JSON decoder; these patterns accept only
# valid JSON that means what the decoder would make of it (an ASCII name without escapes, a
# size that fits). Every other line goes through ``json.loads`` and ``_entry``.
_SEGMENT = (b'{"type":2,"payload":"', b'{"type": 2, "payload": "')  # 21, 24 bytes
_SEGMENT_END = re.compile(rb'", ?"position": ?(?:0|[1-9][0-9]{0,18})\}\r?')
_FILE_LINE = re.compile(rb'\{"type": ?1, ?"name": ?"([\x20\x21\x23-\x5b\x5d-\x7e]*)", ?'
                        rb'(?:"size": ?(0|[1-9][0-9]{0,17}), ?)?"payload": ?'
                        rb'(?:"([A-Za-z0-9+/]*={0,2})"|null), ?'
                        rb'"position": ?(?:0|[1-9][0-9]{0,18})\}\r?')
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
if sys.version_info >= (3, 11):
    def _unb64(text: bytes) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)
else:  # pragma: no cover - Python 3.10
    def _unb64(text: bytes) -> bytes:
        return base64.b64decode(text, validate=True)


def _b64_length(text: bytes) -> int:
    """The length ``_unb64`` would give, or ``binascii.Error`` where it would fail."""
    body = text.rstrip(b"=")
    pad = len(text) - len(body)
    if len(text) % 4 or pad > 2 or body.translate(None, _ALPHABET):
        raise binascii.Error
    return len(text) // 4 * 3 - pad


def _parse(line: bytes, decode: bool) -> Entry:
    try:
        if line.startswith(_SEGMENT[0]) or line.startswith(_SEGMENT[1]):
            start = 21 if line[8] == 50 else 24  # "2": the compact head
            end = line.find(b'"', start)
            if end > 0 and _SEGMENT_END.fullmatch(line, end):
                if not decode:
                    return 2, b"", _b64_length(line[start:end]), b""
                payload = _unb64(line[start:end])
                return 2, b"", len(payload), payload
        elif (m := _FILE_LINE.fullmatch(line)) is not None:
            size = int(m[2] or 0)
            crc = m[3] or b""
            if not size:
                return 1, m[1], 0, _unb64(crc)
            if len(crc) == 12 and crc[-1] == 61 and crc[-2] != 61:  # "=": 8 bytes
                return 1, m[1], size, _unb64(crc)
    except binascii.Error:
        pass
    return _entry(json.loads(line))


def _entry(doc: object) -> Entry:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    kind = doc.get("type")
    if type(kind) is not int:
        raise ValueError("type is not an integer")
    payload = _b64(doc.get("payload"), "payload")
    if kind != 1:
        return kind, b"", len(payload), payload
    raw = _b64(doc.get("name_raw"), "name_raw")
    name = doc.get("name") or ""
    if not isinstance(name, str):
        raise ValueError("name is not a string")
    size = doc.get("size", 0)
    if type(size) is not int or not 0 <= size < 1 << 63:
        raise ValueError("size is not a non-negative integer")
    if size and len(payload) != 8:
        raise ValueError("payload is not an 8-byte CRC-64")
    try:
        return 1, raw or name.encode(), size, payload
    except UnicodeEncodeError:
        raise ValueError("name is not valid UTF-8") from None
