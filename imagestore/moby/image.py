"""The image model: a config parsed the way moby's ``NewFromJSON`` parses it.

The raw bytes are kept untouched (the ID is their digest); the parsed fields are only a view.
Parsing mimics Go's ``encoding/json`` where it decides whether an image is valid at all: keys
match struct fields case-insensitively, the last duplicate wins, ``NaN`` is rejected, known
fields with the wrong JSON type are rejected, invalid UTF-8 in strings is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any

from imagestore.errors import InvalidImageConfig
from imagestore.moby.digest import chain_id as _chain_id
from imagestore.moby.gotime import parse_time

JSONObject = dict[str, Any]
Check = Callable[[Any, str], None]
# What a struct field must hold: ``str`` or ``bool`` (checked inline, the common case), or a
# check function for anything else.
Spec = Any

# The only non-ASCII letters whose Unicode simple case folding reaches an ASCII letter.
_GO_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})


@lru_cache(maxsize=4096)
def _go_fold(key: str) -> str:
    """Go's ``EqualFold`` key for the ASCII field names we know (keys repeat: cached)."""
    return key.translate(_GO_FOLD).lower()


def _fail(path: str, value: Any, want: str) -> None:
    kind = type(value).__name__ if value is not None else "null"
    raise InvalidImageConfig(f"json: cannot unmarshal {kind} into field {path} of type {want}")


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _int(value: Any, path: str) -> None:
    # JSON decoding yields exact types, so ``type(...) is`` is exact here (and bool is no int).
    if value is not None and (type(value) is not int or not _INT64[0] <= value <= _INT64[1]):
        _fail(path, value, "int64")


def _strings(value: Any, path: str) -> None:
    if value is None:
        return
    # Go leaves a null element as "" without complaint.
    if type(value) is not list or not all(v is None or type(v) is str for v in value):
        _fail(path, value, "[]string")


def _str_slice(value: Any, path: str) -> None:
    """docker's ``StrSlice`` (Cmd, Entrypoint, Shell) also takes a single string."""
    if type(value) is not str:
        _strings(value, path)


def _object(value: Any, path: str) -> None:
    if value is not None and type(value) is not dict:
        _fail(path, value, "object")


def _string_map(value: Any, path: str) -> None:
    _object(value, path)
    if value is not None and not all(v is None or type(v) is str for v in value.values()):
        _fail(path, value, "map[string]string")


class _Unordered(Exception):
    """Two spellings of one field in an object decoded without its key order kept."""


# True while checking a document from the plain decode, whose objects keep a duplicated key
# at its first position (not its last): there, two spellings of one field cannot be ordered.
_UNORDERED: ContextVar[bool] = ContextVar("unordered", default=False)


def _fold(obj: JSONObject, exact: dict[str, Spec], lowered: dict[str, str]) -> JSONObject:
    """Map keys to known field names as Go does (exact, else case-insensitive; in document
    order, so the last of two spellings wins); unknown keys are dropped."""
    out: JSONObject = {}
    for key, value in obj.items():
        name = key if key in exact else lowered.get(_go_fold(key))
        if name is None:
            continue
        if name in out and _UNORDERED.get():
            raise _Unordered
        out[name] = value
    return out


def _lowered(spec: dict[str, Spec]) -> dict[str, str]:
    return {_go_fold(name): name for name in spec}


def _struct(fields: dict[str, Spec]) -> Check:
    """A check for a Go struct: fold keys like Go, check the known ones, ignore the rest."""
    lowered = _lowered(fields)
    names = fields.keys()

    def check(value: Any, path: str) -> None:
        if value is None:
            return
        if type(value) is not dict:
            _fail(path, value, "object")
        # The common case, every key a field's exact name, needs no folding.
        items = value.items() if value.keys() <= names else \
            _fold(value, fields, lowered).items()
        for key, item in items:
            if item is None:
                continue
            spec = fields[key]
            if spec is str:
                if type(item) is not str:
                    _fail(f"{path}.{key}", item, "string")
            elif spec is bool:
                if type(item) is not bool:
                    _fail(f"{path}.{key}", item, "bool")
            else:
                spec(item, f"{path}.{key}")

    return check


def _list_of(item: Check) -> Check:
    def check(value: Any, path: str) -> None:
        if value is None:
            return
        if type(value) is not list:
            _fail(path, value, "array")
        for i, v in enumerate(value):
            item(v, f"{path}[{i}]")

    return check


_CONTAINER_CONFIG = _struct(
    {
        **dict.fromkeys(
            ["Hostname", "Domainname", "User", "Image", "WorkingDir", "MacAddress", "StopSignal"],
            str,
        ),
        **dict.fromkeys(
            ["AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce",
             "ArgsEscaped", "NetworkDisabled"],
            bool,
        ),
        "Env": _strings,
        "OnBuild": _strings,
        "Cmd": _str_slice,
        "Entrypoint": _str_slice,
        "Shell": _str_slice,
        "Labels": _string_map,
        "ExposedPorts": _object,
        "Volumes": _object,
        "Healthcheck": _struct({"Test": _strings, "Interval": _int, "Timeout": _int,
                                "StartPeriod": _int, "StartInterval": _int, "Retries": _int}),
        "StopTimeout": _int,
    }
)

_HISTORY_SPEC: dict[str, Spec] = {"created": str, "author": str, "created_by": str,
                                  "comment": str, "empty_layer": bool}
_ROOTFS_SPEC: dict[str, Spec] = {"type": str, "diff_ids": _strings}

# Top-level fields of moby's Image (V1Image embedded; its "parent" is shadowed by Image.Parent).
_IMAGE_SPEC: dict[str, Spec] = {
    **dict.fromkeys(
        ["id", "parent", "comment", "created", "container", "docker_version", "author",
         "architecture", "variant", "os", "os.version"],
        str,
    ),
    "container_config": _CONTAINER_CONFIG,
    "config": _CONTAINER_CONFIG,
    "Size": _int,
    "rootfs": _struct(_ROOTFS_SPEC),
    "history": _list_of(_struct(_HISTORY_SPEC)),
    "os.features": _strings,
}
_IMAGE = _struct(_IMAGE_SPEC)


_IMAGE_LOWER = _lowered(_IMAGE_SPEC)
_ROOTFS_LOWER = _lowered(_ROOTFS_SPEC)
_HISTORY_LOWER = _lowered(_HISTORY_SPEC)


def _pairs(pairs: list[tuple[str, Any]]) -> JSONObject:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    # Duplicates: the last wins, and it must also come last, so that a case variant that Go
    # folds onto the same field is overridden in document order.
    out = {}
    for key, value in pairs:
        out.pop(key, None)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidImageConfig(f"invalid character {name[0]!r} looking for beginning of value")


def parse_config(raw: bytes) -> JSONObject:
    """Decode and validate config bytes; returns the known fields under their canonical names.

    Raises ``InvalidImageConfig`` exactly where moby's ``NewFromJSON`` returns an error.
    A plain decode comes first (a cold sync parses every config, and an ``object_pairs_hook``
    costs more than the decode itself). Where it cannot settle the answer (two spellings of a
    field in one object, any error) the order-keeping decode below decides, error message
    included.
    """
    text = raw.decode("utf-8", errors="replace")
    token = _UNORDERED.set(True)
    try:
        return _checked(json.loads(text, parse_constant=_reject_constant))
    except (ValueError, _Unordered, RecursionError):  # InvalidImageConfig is a ValueError
        pass
    finally:
        _UNORDERED.reset(token)
    return _parse_ordered(text)


def _parse_ordered(text: str) -> JSONObject:
    try:
        doc = json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)
    except InvalidImageConfig:
        raise
    except RecursionError:
        raise InvalidImageConfig("invalid image JSON: nesting too deep") from None
    except ValueError as exc:
        raise InvalidImageConfig(f"invalid image JSON: {exc}") from None
    try:
        return _checked(doc)
    except RecursionError:
        raise InvalidImageConfig("invalid image JSON: nesting too deep") from None


def _checked(doc: Any) -> JSONObject:
    if doc is not None and not isinstance(doc, dict):
        raise InvalidImageConfig(
            f"json: cannot unmarshal {type(doc).__name__} into Go value of type image.Image"
        )
    _IMAGE(doc, "Image")
    fields = _fold(doc or {}, _IMAGE_SPEC, _IMAGE_LOWER)
    if fields.get("rootfs") is None:
        raise InvalidImageConfig("invalid image JSON, no RootFS key")
    rootfs = _fold(fields["rootfs"], _ROOTFS_SPEC, _ROOTFS_LOWER)
    diff_ids = [d or "" for d in rootfs.get("diff_ids") or []]
    fields["rootfs"] = {"type": rootfs.get("type") or "", "diff_ids": diff_ids}
    created = fields.get("created")
    if isinstance(created, str):
        parse_time(created)  # a non-RFC 3339 string is a decode error in Go
    return fields


def check_history(fields: JSONObject) -> None:
    """moby's ``Create`` rule: no more non-empty history entries than layers."""
    history = fields.get("history") or []
    non_empty = sum(1 for h in history
                    if not _fold(h or {}, _HISTORY_SPEC, _HISTORY_LOWER).get("empty_layer"))
    if non_empty > len(fields["rootfs"]["diff_ids"]):
        raise InvalidImageConfig("too many non-empty layers in History section")


@dataclass(frozen=True)
class RootFS:
    type: str
    diff_ids: list[str]


@dataclass(frozen=True)
class Image:
    """An image as the store knows it: the config bytes, their parsed view and its parent.

    Parsing is lazy: the index only holds configs that were validated when ingested, and a
    listing of 100,000 images should not decode 100,000 documents nobody looks at.
    """

    id: str
    raw: bytes
    parent: str | None = None

    @classmethod
    def from_raw(cls, image_id: str, raw: bytes, parent: str | None = None) -> Image:
        """An image whose config is validated now (raises ``InvalidImageConfig``)."""
        image = cls(image_id, raw, parent)
        image._fields  # noqa: B018 - validate eagerly
        return image

    @cached_property
    def _fields(self) -> JSONObject:
        return parse_config(self.raw)

    def _str(self, key: str) -> str:
        value = self._fields.get(key)
        return value if isinstance(value, str) else ""

    @property
    def created(self) -> datetime | None:
        value = self._fields.get("created")
        return parse_time(value) if isinstance(value, str) else None

    @property
    def created_text(self) -> str | None:
        """``created`` as written in the config (nanoseconds kept), for exact output."""
        value = self._fields.get("created")
        return value if isinstance(value, str) else None

    @property
    def author(self) -> str:
        return self._str("author")

    @property
    def comment(self) -> str:
        return self._str("comment")

    @property
    def os(self) -> str:
        return self._str("os")

    @property
    def architecture(self) -> str:
        return self._str("architecture")

    @property
    def variant(self) -> str:
        return self._str("variant")

    @property
    def docker_version(self) -> str:
        return self._str("docker_version")

    @property
    def os_version(self) -> str:
        return self._str("os.version")

    @property
    def os_features(self) -> list[str]:
        return list(self._fields.get("os.features") or [])

    @property
    def config(self) -> JSONObject | None:
        value = self._fields.get("config")
        return value if isinstance(value, dict) else None

    @property
    def container_config(self) -> JSONObject | None:
        value = self._fields.get("container_config")
        return value if isinstance(value, dict) else None

    @property
    def history(self) -> list[JSONObject]:
        return list(self._fields.get("history") or [])

    @property
    def rootfs(self) -> RootFS:
        rootfs = self._fields.get("rootfs") or {}
        return RootFS(rootfs.get("type", ""), list(rootfs.get("diff_ids", [])))

    @property
    def chain_id(self) -> str | None:
        return _chain_id(self.rootfs.diff_ids)

    def __str__(self) -> str:
        return self.id
