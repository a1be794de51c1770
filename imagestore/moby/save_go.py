"""Go's byte formats that a ``docker save`` archive depends on, reproduced exactly:
``hash/crc64`` (tar-split's file checksums), ``encoding/json`` as moby's v1 structs marshal
(the legacy v1 JSON and v1 IDs of ``image/v1.CreateID``), and ``archive/tar``'s headers.

The v1 ID of each layer is the sha256 of Go's ``json.Marshal`` of a ``V1Image`` struct, which
the engine fills by decoding the image config into Go structs: keys matched as Go matches
them, fields in struct order, omitted when ``omitempty`` and empty, maps sorted, strings with
Go's escapes. Python's ``json`` differs in all of these, so the encoding is done by hand here.
Two flavours: ``LEGACY`` is Docker 20.10 (what the legacy layout's real archives hold),
``CURRENT`` is moby's master (the OCI layout; it keeps these configs as unreferenced blobs).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Protocol

from imagestore.moby.gotime import go_time, parse_time

LEGACY = "legacy"
CURRENT = "current"
EPOCH = "1970-01-01T00:00:00Z"  # Go's time.Unix(0, 0) on a daemon running in UTC

# -- hash/crc64 with the ISO table -------------------------------------------------------------
# The checksum runs natively through ``fastcrc`` (its ``crc64.go_iso`` is Go's ISO table:
# reflected, initial value and final xor all ones; its second argument continues a checksum as
# Go's ``crc64.Update`` does, and it releases the GIL). The pure-Python code below is the
# reference the tests hold it to, and the fallback when fastcrc cannot be imported (a warning
# then says, once, that saves and layer checks run several times slower).
#
# The reference: a byte-table loop in Python (slicing-by-8 included) is far too slow for
# layers of gigabytes. Instead the data becomes one big integer (a polynomial over GF(2)) and
# is reduced with CPython's C-speed shifts and XORs. The trick: over GF(2), P(x)^(2^k) is
# P(x^(2^k)), so these multiples of the ISO polynomial x^64+x^4+x^3+x+1 keep its five terms,
# and folding the top of a polynomial onto the rest modulo one costs a few shifts and XORs,
# however long. Folds at falling k leave a short polynomial congruent to the message modulo
# P, which the byte table finishes.
#
# The CRC is reflected (bit 0 of the first byte is the highest coefficient), so the message
# read as a little-endian integer already holds the coefficients highest first from bit 0:
# no bit reversal is needed, and a fold works on the low end. For s = 2^k and D = 64 s, with
# the n-bit message v = high·2^D + low (low: its D highest coefficients), x^D ≡ x^4s + x^3s +
# x^s + 1 modulo P^(2^k) gives a congruent message of n - 60 s bits (a whole number of bytes):
# ((high ^ low) << 4s) ^ (low << 3s) ^ (low << s) ^ low. A fold needs n >= 2 D.

_M64 = (1 << 64) - 1
_CRC_BLOCK = 1 << 17  # the integer of one block: 2^20 bits
_SMALL = 96  # below this, the byte table is cheaper than the folds
CHECK = (b"123456789", 0xB90956C775A41001)  # the catalogued CRC-64/GO-ISO check value


def _shifted(c: int) -> int:
    for _ in range(8):
        c = (c >> 1) ^ 0xD800000000000000 if c & 1 else c >> 1  # the reflected polynomial
    return c


_TABLE = [_shifted(i) for i in range(256)]
# For P^(2^k), k = 13 (a whole block) down to 1: (D, mask of D bits, s, 3s, 4s, 60s).
_LEVELS = [(64 << k, (1 << (64 << k)) - 1, 1 << k, 3 << k, 4 << k, 60 << k)
           for k in range(13, 0, -1)]


def _table(reg: int, data: bytes) -> int:
    for b in data:
        reg = _TABLE[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _crc_block(crc: int, data: memoryview) -> int:
    reg = crc ^ _M64
    if len(data) < _SMALL:
        return _table(reg, bytes(data)) ^ _M64
    # The register enters as the first 64 bits of the message (Go's ``crc ^= word``).
    v = int.from_bytes(data, "little") ^ reg
    n = len(data) * 8
    for degree, mask, s1, s3, s4, cut in _LEVELS:
        while n >= 2 * degree:
            low = v & mask
            v = ((v >> degree ^ low) << s4) ^ (low << s3) ^ (low << s1) ^ low
            n -= cut
    # Under 256 bits left, congruent to the message (its register already in): the table
    # finishes from a zero register.
    return _table(0, v.to_bytes(n // 8, "little")) ^ _M64


def crc64_python(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Go's ``crc64.Update(crc, crc64.MakeTable(crc64.ISO), data)`` in pure Python: the
    reference for the native one, and its fallback."""
    view = memoryview(data).cast("B")
    for i in range(0, len(view), _CRC_BLOCK):
        crc = _crc_block(crc, view[i : i + _CRC_BLOCK])
    return crc


class Crc64(Protocol):
    def __call__(self, data: bytes | bytearray | memoryview, crc: int = 0, /) -> int: ...


def _native() -> tuple[Crc64 | None, str]:
    """fastcrc's Go ISO CRC-64, checked on the catalogued value (whole and continued)."""
    try:
        from fastcrc.crc64 import go_iso
    except ImportError as exc:
        return None, f"fastcrc cannot be imported: {exc}"
    data, want = CHECK
    try:
        if go_iso(data, 0) == want and go_iso(data[5:], go_iso(data[:5], 0)) == want:
            return go_iso, ""
    except (TypeError, ValueError):
        pass
    return None, "fastcrc's crc64.go_iso does not give Go's ISO CRC-64"


_FAST, _WHY_SLOW = _native()
_warned = False


def _fallback(data: bytes | bytearray | memoryview, crc: int = 0, /) -> int:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"CRC-64 runs in pure Python, several times slower: {_WHY_SLOW}",
                      RuntimeWarning, stacklevel=2)
    return crc64_python(data, crc)


crc64: Crc64 = _FAST or _fallback
"""Go's ``crc64.Update(crc, crc64.MakeTable(crc64.ISO), data)``: continue a checksum (``crc``
is the previous result, 0 to start). Native when fastcrc is at hand."""


# -- encoding/json as moby's v1 structs marshal ------------------------------------------------


class _Obj(list[tuple[str, Any]]):
    """A JSON object with its keys in order, duplicates kept (Go decodes in order)."""


# Go's encodeState.string: HTML-safe, U+2028/9 escaped; \b and \f short since Go 1.22 only.
_ESC = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESC.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r",
             ord("\t"): "\\t", ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
             0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESC_GO122 = {**_ESC, 8: "\\b", 12: "\\f"}
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone \uD8xx escape: Go decodes it as U+FFFD


def go_string(text: str, flavour: str = CURRENT) -> str:
    table = _ESC_GO122 if flavour == CURRENT else _ESC
    return '"' + _SURROGATE.sub("\ufffd", text).translate(table) + '"'


def _go_fold(key: str) -> str:
    return key.translate({0x17F: "s", 0x212A: "k"}).lower()


def _fields(obj: Any, names: list[str]) -> dict[str, Any]:
    """A JSON object as Go fills a struct: exact name, else case-insensitive; the last wins;
    ``null`` leaves a plain value as it was."""
    if not isinstance(obj, _Obj):
        return {}
    exact, folded = set(names), {_go_fold(n): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj:
        name = key if key in exact else folded.get(_go_fold(key))
        if name is not None and (value is not None or isinstance(out.get(name), (list, _Obj))):
            out[name] = value
    return out


# Each encoder returns (JSON text, empty?) for Go's omitempty.
Encoder = Callable[[Any, str], tuple[str, bool]]


def _str(v: Any, f: str) -> tuple[str, bool]:
    text = v if isinstance(v, str) else ""
    return go_string(text, f), not text


def _bool(v: Any, f: str) -> tuple[str, bool]:
    return ("true", False) if v is True else ("false", True)


def _int(v: Any, f: str) -> tuple[str, bool]:
    n = v if type(v) is int else 0
    return str(n), n == 0


def _int_ptr(v: Any, f: str) -> tuple[str, bool]:
    return ("null", True) if type(v) is not int else (str(v), False)


def _strings(v: Any, f: str) -> tuple[str, bool]:
    if v is None:
        return "null", True
    items = [v] if isinstance(v, str) else v  # StrSlice takes one string too
    return "[" + ",".join(go_string(s if isinstance(s, str) else "", f) for s in items) + "]", \
        not items


def _map(v: Any, f: str, *, unit: bool = False) -> tuple[str, bool]:
    if not isinstance(v, _Obj):
        return "null", True
    last = dict(v)
    body = ",".join(go_string(k, f) + ":" + ("{}" if unit else
                                             go_string(x if isinstance(x, str) else "", f))
                    for k, x in sorted(last.items()))
    return "{" + body + "}", not last


def _set(v: Any, f: str) -> tuple[str, bool]:
    return _map(v, f, unit=True)


@dataclass(frozen=True)
class _Field:
    name: str
    encode: Encoder
    omitempty: bool = False


def _struct(spec: list[_Field]) -> Encoder:
    names = [fld.name for fld in spec]

    def encode(v: Any, f: str) -> tuple[str, bool]:
        fields = _fields(v, names)
        parts = []
        for fld in spec:
            text, empty = fld.encode(fields.get(fld.name), f)
            if not (fld.omitempty and empty):
                parts.append(f'"{fld.name}":{text}')
        return "{" + ",".join(parts) + "}", False

    return encode


def _pointer(encode: Encoder) -> Encoder:
    def pointer(v: Any, f: str) -> tuple[str, bool]:
        return ("null", True) if not isinstance(v, _Obj) else encode(v, f)

    return pointer


def _health(current: bool) -> Encoder:
    return _pointer(_struct([
        _Field("Test", _strings, True), _Field("Interval", _int, True),
        _Field("Timeout", _int, True), _Field("StartPeriod", _int, True),
        *([_Field("StartInterval", _int, True)] if current else []),
        _Field("Retries", _int, True)]))


def _container_config(current: bool) -> Encoder:
    """``container.Config``: API 1.41 (Docker 20.10) or moby master's (no MacAddress,
    OnBuild omitted when empty, a health check's StartInterval)."""
    return _struct([
        _Field("Hostname", _str), _Field("Domainname", _str), _Field("User", _str),
        _Field("AttachStdin", _bool), _Field("AttachStdout", _bool),
        _Field("AttachStderr", _bool), _Field("ExposedPorts", _set, True),
        _Field("Tty", _bool), _Field("OpenStdin", _bool), _Field("StdinOnce", _bool),
        _Field("Env", _strings), _Field("Cmd", _strings),
        _Field("Healthcheck", _health(current), True), _Field("ArgsEscaped", _bool, True),
        _Field("Image", _str), _Field("Volumes", _set), _Field("WorkingDir", _str),
        _Field("Entrypoint", _strings), _Field("NetworkDisabled", _bool, True),
        *([] if current else [_Field("MacAddress", _str, True)]),
        _Field("OnBuild", _strings, current), _Field("Labels", _map),
        _Field("StopSignal", _str, True), _Field("StopTimeout", _int_ptr, True),
        _Field("Shell", _strings, True)])


_CONFIGS = {LEGACY: _container_config(False), CURRENT: _container_config(True)}
_V1_NAMES = ["id", "parent", "comment", "created", "container", "container_config",
             "docker_version", "author", "config", "architecture", "variant", "os", "Size"]
class V1Image:
    """One layer's legacy ``V1Image``: the image's own fields for the top layer, only
    ``created`` (the epoch) below it; ``os`` is the image's everywhere."""

    def __init__(self, fields: dict[str, Any], os_name: str, flavour: str) -> None:
        self.fields = fields
        self.os = os_name
        self.flavour = flavour

    @classmethod
    def of_config(cls, config: bytes, flavour: str) -> tuple[V1Image, V1Image]:
        """(top layer's, lower layers') from the config bytes."""
        doc = json.loads(config.decode("utf-8", "replace"), object_pairs_hook=_Obj)
        fields = _fields(doc, _V1_NAMES)
        os_name = fields.get("os") if isinstance(fields.get("os"), str) else ""
        return cls(fields, str(os_name), flavour), cls({"created": EPOCH}, str(os_name), flavour)

    def _pairs(self, v1_id: str, parent: str, *, with_os: bool) -> list[tuple[str, str]]:
        f, fields = self.flavour, self.fields
        created = fields.get("created")
        if isinstance(created, str):
            when = go_string(go_time(created), f)
        else:  # Go's zero time.Time; a nil *time.Time on moby's master
            when = '"0001-01-01T00:00:00Z"' if f == LEGACY else "null"
        config = fields.get("config")
        os_name = self.os if with_os else (fields.get("os") or "")
        out = [("id", _str(v1_id, f)), ("parent", _str(parent, f)),
               ("comment", _str(fields.get("comment"), f)), ("created", (when, False)),
               ("container", _str(fields.get("container"), f)),
               ("container_config", _CONFIGS[f](fields.get("container_config"), f)),
               ("docker_version", _str(fields.get("docker_version"), f)),
               ("author", _str(fields.get("author"), f)),
               ("config", _pointer(_CONFIGS[f])(config, f)),
               ("architecture", _str(fields.get("architecture"), f)),
               ("variant", _str(fields.get("variant"), f)), ("os", _str(os_name, f)),
               ("Size", _int(fields.get("Size"), f))]
        always = ("created", "container_config")
        return [(k, text) for k, (text, empty) in out if k in always or not empty]

    def create_id(self, chain_id: str, parent_id: str) -> str:
        """moby's ``v1.CreateID``: the struct without ``id`` (and, below the top, without
        ``os``: the engine sets it after), plus ``layer_id`` and ``parent``, keys sorted."""
        pairs = dict(self._pairs("", "", with_os=False))
        pairs["layer_id"] = go_string(chain_id)
        if parent_id:
            pairs["parent"] = go_string("sha256:" + parent_id)
        text = "{" + ",".join(f'"{k}":{pairs[k]}' for k in sorted(pairs)) + "}"
        return hashlib.sha256(text.encode()).hexdigest()

    def json(self, v1_id: str, parent_id: str) -> bytes:
        """The layer's ``json`` (legacy layout) or config blob (OCI layout)."""
        pairs = self._pairs(v1_id, parent_id, with_os=True)
        return ("{" + ",".join(f'"{k}":{v}' for k, v in pairs) + "}").encode()


def created_seconds(config: bytes) -> int:
    """The image's creation time in whole seconds, as tarexport stamps files with it: the
    epoch when absent or before it (moby's ``system.Chtimes`` clamps)."""
    doc = json.loads(config.decode("utf-8", "replace"), object_pairs_hook=_Obj)
    created = _fields(doc, ["created"]).get("created")
    if not isinstance(created, str):
        return 0
    when = parse_time(created).astimezone(timezone.utc)
    return max(0, int(when.timestamp() // 1))


def v1_ids(config: bytes, chain_ids: list[str], flavour: str
           ) -> list[tuple[str, str, bytes]]:
    """``(v1 ID, parent v1 ID, json)`` of each layer, bottom first, as tarexport's
    ``saveImage`` makes them."""
    top, lower = V1Image.of_config(config, flavour)
    out: list[tuple[str, str, bytes]] = []
    parent = ""
    for i, chain in enumerate(chain_ids):
        v1 = top if i == len(chain_ids) - 1 else lower
        v1_id = v1.create_id(chain, parent)
        out.append((v1_id, parent, v1.json(v1_id, parent)))
        parent = v1_id
    return out


# -- archive/tar headers ---------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    if not 0 <= value < 8 ** (width - 1):
        value = 0  # Go writes zero when a value does not fit (a PAX record then holds it)
    return b"%0*o\0" % (width - 1, value)


def _block(name: bytes, mode: int, size: int, mtime: int, kind: bytes, link: bytes,
           owner: bytes, *, devices: bool = True) -> bytes:
    prefix = b""
    if len(name) > 100:  # USTAR splits a long name at a slash into prefix and name
        cut = name.rfind(b"/", 0, 156)
        while cut > 0 and len(name) - cut - 1 > 100:
            cut = name.rfind(b"/", 0, cut)
        if cut <= 0:
            raise ValueError(f"name too long for a tar header: {name[:120]!r}")
        prefix, name = name[:cut], name[cut + 1 :]
    h = bytearray(512)
    for offset, value in ((0, name), (100, _octal(mode, 8)), (108, _octal(0, 8)),
                          (116, _octal(0, 8)), (124, _octal(size, 12)),
                          (136, _octal(mtime, 12)), (148, b" " * 8), (156, kind),
                          (157, link[:100]), (257, b"ustar\x0000"), (265, owner),
                          (297, owner), (345, prefix)):
        h[offset : offset + len(value)] = value
    if devices:
        h[329:345] = _octal(0, 8) + _octal(0, 8)
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pax_record(key: str, value: str) -> bytes:
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = f"{size} {key}={value}\n"
    if len(record) != size:
        record = f"{len(record)} {key}={value}\n"
    return record.encode()


def tar_header(name: str, size: int, mtime: int, *, link: str = "", legacy: bool) -> bytes:
    """A member's header as docker's ``archive.Tar`` writes it (a folder's name ends with
    ``/``). Docker 20.10 puts the file type into the mode and the owner's names in; moby's
    master looks no names up and keeps the permission bits alone. Go switches to PAX only
    for what USTAR cannot hold: here a size of 8 GiB or more."""
    folder = name.endswith("/")
    kind = b"5" if folder else b"2" if link else b"0"
    mode = 0o755 if folder else 0o777 if link else 0o644
    if legacy:
        mode |= 0o040000 if folder else 0o120000 if link else 0o100000
    size = size if kind == b"0" else 0
    pax = b""
    if size >= 8**11:
        data = _pax_record("size", str(size))
        parent, _, base = name.rpartition("/")
        pax_name = (f"{parent}/" if parent else "") + "PaxHeaders.0/" + base
        pax = _block(pax_name.encode()[:100], 0, len(data), 0, b"x", b"", b"", devices=False)
        pax += data + b"\0" * (-len(data) % 512)
    return pax + _block(name.encode(), mode, size, mtime, kind, link.encode(),
                        b"root" if legacy else b"")
