"""``GET /images/{name}/json`` and ``GET /images/{name}/history`` of Docker Engine 20.10,
computed from the index and the disk: the JSON the engine writes, value for value.

The engine answers from ``image.Image`` as Go's ``encoding/json`` decoded the config, then
re-encodes ``container.Config`` (api/types/container/config.go) into its reply. So the config
is decoded here as Go decodes it, into a small model of the Go types involved: keys match a
field exactly, else case-insensitively (Go's ``EqualFold``); a key given twice is decoded
twice into the same field, so a map or a pointed-to struct merges and a slice reuses its
elements; a JSON null empties a map, slice or pointer and leaves any other field as it was.
Re-encoding writes every field in the struct's order, drops an ``omitempty`` field only
when it is empty, and writes a nil slice or map as null, an empty one as ``[]``/``{}``.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from imagestore.errors import ImageStoreError, LayerNotFound, UnsupportedDriver
from imagestore.moby.digest import chain_id, chain_ids
from imagestore.moby.drivers import DRIVERS, LINK_DIR, Driver, is_plain_name
from imagestore.moby.files import read_optional
from imagestore.moby.gotime import ZERO_UNIX, go_time, parse_time, unix_seconds

# The one key folding rule, shared with the checks that decide whether a config is valid.
from imagestore.moby.image import _go_fold
from imagestore.moby.layerdb import BadEntry, LayerDB
from imagestore.moby.references import tags_and_digests
from imagestore.reading import Reading

# What Go's zero time.Time marshals to: a config without "created", a never-tagged image.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
# ``runtime.GOOS`` of the engine this answers for: ``Image.OperatingSystem()`` when the
# config names none (moby 20.10 runs Linux images only on Linux).
HOST_OS = "linux"
MISSING = "<missing>"  # the history ID of an entry past the parent chain

JSON = dict[str, Any]


# -- Go's encoding/json over the few types the engine's reply holds --------------------------
class _Pairs(list[tuple[str, Any]]):
    """A JSON object as Go's decoder walks it: every key in document order, repeats kept."""


# Kinds of values: Go strings, bools and int64 / int (durations, retries); a *int; []string;
# strslice.StrSlice (its own UnmarshalJSON: a string is a one-element list); map[string]string;
# a set (map[string]struct{}: nat.PortSet, Volumes).
STR, BOOL, INT, INT_PTR, STRINGS, STR_SLICE, STR_MAP, SET = (
    "string", "bool", "int", "*int", "[]string", "StrSlice", "map", "set")
_NILABLE = (INT_PTR, STRINGS, STR_SLICE, STR_MAP, SET)
_ZERO: dict[str, Any] = {STR: "", BOOL: False, INT: 0}


@dataclass(frozen=True)
class Field:
    name: str  # the JSON key Go writes (the field's name, or its json tag)
    kind: Any  # a kind above, a Struct, a Ptr or a Slice
    omitempty: bool = False


@dataclass(frozen=True)
class Struct:
    fields: tuple[Field, ...]
    exact: dict[str, Field] = field(init=False, compare=False)
    folded: dict[str, Field] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exact", {f.name: f for f in self.fields})
        # Go searches the fields in order and takes the first that folds equal.
        folded: dict[str, Field] = {}
        for f in self.fields:
            folded.setdefault(_go_fold(f.name), f)
        object.__setattr__(self, "folded", folded)

    def zero(self) -> JSON:
        return {f.name: _zero(f.kind) for f in self.fields}


@dataclass(frozen=True)
class Ptr:
    to: Struct


@dataclass(frozen=True)
class Slice:
    of: Struct


def _zero(kind: Any) -> Any:
    return kind.zero() if isinstance(kind, Struct) else _ZERO.get(kind)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str) -> str:
    """A JSON string as Go holds it: an escaped lone surrogate becomes U+FFFD."""
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


def _decode(kind: Any, old: Any, value: Any) -> Any:
    """``value`` (JSON, objects as ``_Pairs``) decoded into a Go value of ``kind`` that holds
    ``old``, as ``encoding/json`` does. A value of the wrong JSON type (a decode error, which
    a stored config cannot hold) leaves ``old``."""
    if value is None:
        nil = isinstance(kind, Ptr | Slice) or kind in _NILABLE
        return None if nil else old
    if isinstance(kind, Struct | Ptr):
        struct = kind if isinstance(kind, Struct) else kind.to
        if not isinstance(value, _Pairs):
            return old
        out = dict(old) if old is not None else struct.zero()  # a nil pointer is allocated
        for key, item in value:
            f = struct.exact.get(key) or struct.folded.get(_go_fold(key))
            if f is not None:
                out[f.name] = _decode(f.kind, out[f.name], item)
        return out
    if isinstance(kind, Slice) or kind == STRINGS:
        if not isinstance(value, list) or isinstance(value, _Pairs):
            return old
        # Go decodes into the elements the slice already has (a repeated key), zero ones past.
        element = kind.of if isinstance(kind, Slice) else STR
        prior = old or []
        return [_decode(element, prior[i] if i < len(prior) else _zero(element), item)
                for i, item in enumerate(value)]
    if kind == STR_SLICE:
        if isinstance(value, str):
            return [_text(value)]
        ok = isinstance(value, list) and not isinstance(value, _Pairs)
        return [_text(v) if isinstance(v, str) else "" for v in value] if ok else old
    if kind in (STR_MAP, SET):
        if not isinstance(value, _Pairs):
            return old
        out = dict(old) if old is not None else {}  # Go keeps a map's earlier entries
        for key, item in value:
            out[_text(key)] = (_text(item) if isinstance(item, str) else "") \
                if kind == STR_MAP else {}
        return out
    if kind == STR:
        return _text(value) if isinstance(value, str) else old
    if kind == BOOL:
        return value if isinstance(value, bool) else old
    return value if type(value) is int else old  # INT, INT_PTR


def _empty(kind: Any, value: Any) -> bool:
    """encoding/json's ``isEmptyValue``: false, 0, "", nil, or a map or slice of length 0;
    never a struct, nor a pointer that is set."""
    if isinstance(kind, Struct):
        return False
    if isinstance(kind, Ptr) or kind == INT_PTR:
        return value is None
    if isinstance(value, list | dict):
        return not value
    return value is None or value is False or value == 0 or value == ""


def _encode(kind: Any, value: Any) -> Any:
    """A decoded Go value as ``encoding/json`` marshals it (map keys sorted)."""
    if value is None:
        return None
    if isinstance(kind, Struct | Ptr):
        struct = kind if isinstance(kind, Struct) else kind.to
        return {f.name: _encode(f.kind, value[f.name]) for f in struct.fields
                if not (f.omitempty and _empty(f.kind, value[f.name]))}
    if isinstance(kind, Slice):
        return [_encode(kind.of, v) for v in value]
    if kind in (STR_MAP, SET):
        return {k: value[k] for k in sorted(value)}
    return list(value) if isinstance(value, list) else value


# api/types/container: HealthConfig and Config, as docker 20.10 declares them.
HEALTH_CONFIG = Struct((Field("Test", STRINGS, True), Field("Interval", INT, True),
                        Field("Timeout", INT, True), Field("StartPeriod", INT, True),
                        Field("Retries", INT, True)))
CONTAINER_CONFIG = Struct((
    Field("Hostname", STR), Field("Domainname", STR), Field("User", STR),
    Field("AttachStdin", BOOL), Field("AttachStdout", BOOL), Field("AttachStderr", BOOL),
    Field("ExposedPorts", SET, True), Field("Tty", BOOL), Field("OpenStdin", BOOL),
    Field("StdinOnce", BOOL), Field("Env", STRINGS), Field("Cmd", STR_SLICE),
    Field("Healthcheck", Ptr(HEALTH_CONFIG), True), Field("ArgsEscaped", BOOL, True),
    Field("Image", STR), Field("Volumes", SET), Field("WorkingDir", STR),
    Field("Entrypoint", STR_SLICE), Field("NetworkDisabled", BOOL, True),
    Field("MacAddress", STR, True), Field("OnBuild", STRINGS), Field("Labels", STR_MAP),
    Field("StopSignal", STR, True), Field("StopTimeout", INT_PTR, True),
    Field("Shell", STR_SLICE, True)))
# image/image.go and image/rootfs.go: the fields of image.Image the replies read (times are
# kept as their text: time.Time's UnmarshalJSON also leaves the field alone on null).
_ROOTFS = Struct((Field("type", STR), Field("diff_ids", STRINGS)))
_HISTORY = Struct((Field("created", STR), Field("author", STR), Field("created_by", STR),
                   Field("comment", STR), Field("empty_layer", BOOL)))
_IMAGE = Struct((
    Field("comment", STR), Field("created", STR), Field("container", STR),
    Field("container_config", CONTAINER_CONFIG), Field("docker_version", STR),
    Field("author", STR), Field("config", Ptr(CONTAINER_CONFIG)),
    Field("architecture", STR), Field("variant", STR), Field("os", STR),
    Field("rootfs", Ptr(_ROOTFS)), Field("history", Slice(_HISTORY)),
    Field("os.version", STR)))


def go_image(raw: bytes) -> JSON:
    """An image config decoded as moby's ``image.NewFromJSON`` decodes it, reduced to the
    fields the engine's replies read (see ``_IMAGE``). The index only holds configs that
    decode, so this does not check again."""
    doc = json.loads(raw.decode("utf-8", "replace"), object_pairs_hook=_Pairs)
    decoded: JSON = _decode(_IMAGE, None, doc) if isinstance(doc, _Pairs) else _IMAGE.zero()
    return decoded


def container_config(value: JSON | None) -> JSON | None:
    """A decoded ``container.Config`` as the engine writes it (``None``: a nil pointer)."""
    encoded: JSON | None = _encode(CONTAINER_CONFIG, value)
    return encoded


# -- the replies ------------------------------------------------------------------------------
def _go_time(text: str) -> str:
    """``time.Time`` marshalled (RFC3339Nano): the zero time when the config has none."""
    return go_time(text) if text else GO_ZERO_TIME


def _unix(text: str) -> int:
    """``time.Time.Unix()`` of a config time (the zero time's when there is none)."""
    return unix_seconds(parse_time(text)) if text else ZERO_UNIX


def image_attrs(store: Reading, image_id: str, driver: Driver | None) -> JSON:
    """The body of ``GET /images/{id}/json``: moby 20.10 daemon/images/image_inspect.go
    ``LookupImage``, written as ``types.ImageInspect`` (api/types/types.go).

    ``Comment`` is the config's, else the last history entry's; ``Os`` is the config's, else
    the host's (``OperatingSystem()``); ``Size`` and ``VirtualSize`` are the top layer's chain
    size; ``GraphDriver.Data`` is what the driver's ``GetMetadata`` gives for the top layer's
    ``cache-id`` (null for an image without layers, and for vfs); ``Metadata.LastTagTime`` is
    ``lastUpdated``, Go's zero time when unset. ``driver`` ``None`` (a root outside a
    data-root): the name is the image root's folder, the data null."""
    image = store.get(image_id)
    doc = go_image(image.raw)
    with store.index.read() as q:
        last_updated = (q.image_meta(image.id) or (None, False))[0]
        refs, size = q.refs_of(image.id), q.image_size(image.id) or 0
    repo_tags, repo_digests = tags_and_digests(refs)
    history = doc["history"] or []
    rootfs = doc["rootfs"] or _ROOTFS.zero()
    layers = list(rootfs["diff_ids"] or [])
    top = chain_id(layers)
    attrs: JSON = {
        "Id": image.id,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": image.parent or "",
        "Comment": doc["comment"] or (history[-1]["comment"] if history else ""),
        "Created": _go_time(doc["created"]),
        "Container": doc["container"],
        "ContainerConfig": container_config(doc["container_config"]),
        "DockerVersion": doc["docker_version"],
        "Author": doc["author"],
        "Config": container_config(doc["config"]),
        "Architecture": doc["architecture"],
        "Variant": doc["variant"],
        "Os": doc["os"] or HOST_OS,
        "OsVersion": doc["os.version"],
        "Size": size,
        "VirtualSize": size,  # moby: "field unused, deprecate"
        "GraphDriver": {
            "Data": None if top is None or driver is None else driver_metadata(
                driver, _cache_id(store.root.layerdb, top)),
            "Name": driver.name if driver is not None else store.root.path.name,
        },
        "RootFS": {"Type": rootfs["type"], **({"Layers": layers} if layers else {})},
        "Metadata": {"LastTagTime": _go_time(last_updated or "")},
    }
    for omitempty in ("Variant", "OsVersion"):
        if not attrs[omitempty]:
            del attrs[omitempty]
    return attrs


def _cache_id(layerdb: LayerDB, chain: str) -> str:
    try:
        return layerdb.read_ids(chain.removeprefix("sha256:"))[1]
    except BadEntry:
        raise LayerNotFound("layer does not exist") from None  # layer.ErrLayerDoesNotExist


def driver_metadata(driver: Driver, cache_id: str) -> dict[str, str] | None:
    """The graph driver's ``GetMetadata(cache-id)`` on this host: vfs has none (nil);
    overlay2's (daemon/graphdriver/overlay2/overlay.go) names the layer's ``work``,
    ``merged`` and ``diff`` folders, and its lower layers' ``diff`` folders (the ``l/``
    links its ``lower`` file lists, read back) when it has any. Errors are the engine's: the
    layer's folder must exist, and every link must read."""
    if driver.name == "vfs":
        return None
    if driver.name != "overlay2":
        raise UnsupportedDriver(driver.name, str(driver.home), DRIVERS)
    if not is_plain_name(cache_id):  # moby joins it unchecked; it is read from disk
        raise ImageStoreError(f"driver ID {cache_id!r} is not a name")
    home = str(driver.home)
    folder = posixpath.join(home, cache_id)
    try:
        os.stat(folder)
    except OSError as exc:
        raise ImageStoreError(_go_error("stat", exc)) from None
    try:
        lowers = read_optional(posixpath.join(folder, "lower"))
    except OSError as exc:
        raise ImageStoreError(_go_error("open", exc)) from None
    metadata = {"WorkDir": f"{folder}/work", "MergedDir": f"{folder}/merged",
                "UpperDir": f"{folder}/diff"}
    if lowers is not None:
        found = []
        for link in os.fsdecode(lowers).split(":"):
            path = posixpath.normpath(posixpath.join(home, link))
            try:
                target = os.readlink(path)
            except OSError as exc:
                raise ImageStoreError(_go_error("readlink", exc)) from None
            found.append(posixpath.normpath(posixpath.join(home, LINK_DIR, target)))
        metadata["LowerDir"] = ":".join(found)
    return {k: metadata[k] for k in sorted(metadata)}


def _go_error(op: str, exc: OSError) -> str:
    """An ``*os.PathError`` as Go writes it: ``stat /path: no such file or directory``."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"{op} {exc.filename}: {reason[:1].lower()}{reason[1:]}"


def image_history(store: Reading, image_id: str) -> list[JSON]:
    """The body of ``GET /images/{id}/history``: moby 20.10 daemon/images/image_history.go
    ``ImageHistory``, items as ``image.HistoryResponseItem``.

    Newest entry first. A non-empty entry's ``Size`` is its layer's own (``DiffSize``, the
    layerdb ``size`` file); an empty one's is 0. IDs and tags are filled in from the image
    down its parent chain, one entry per image, and stop where the chain does (the rest stay
    ``<missing>``, tags null); ``Tags`` are the image's tagged references, familiar, in the
    reference store's order, null when none."""
    image = store.get(image_id)
    doc = go_image(image.raw)
    diff_ids = list((doc["rootfs"] or _ROOTFS.zero())["diff_ids"] or [])
    chains = chain_ids(diff_ids)
    layerdb = store.root.layerdb
    items: list[JSON] = []
    layer = 0
    for entry in doc["history"] or []:
        size = 0
        if not entry["empty_layer"]:
            if len(diff_ids) <= layer:
                raise ImageStoreError("too many non-empty layers in History section")
            size = _diff_size(layerdb, chains[layer])
            layer += 1
        items.append({"Comment": entry["comment"], "Created": _unix(entry["created"]),
                      "CreatedBy": entry["created_by"], "Id": MISSING, "Size": size,
                      "Tags": None})
    items.reverse()
    current, parent = image.id, image.parent
    with store.index.read() as q:
        for item in items:
            item["Id"] = current
            item["Tags"] = tags_and_digests(q.refs_of(current))[0] or None
            # moby's walk ends where GetImage of the parent fails: none, or not in the store.
            if parent is None or not q.has_image(parent):
                break
            current, parent = parent, q.parent(parent)
    return items


def _diff_size(layerdb: LayerDB, chain: str) -> int:
    try:
        return layerdb.read_layer(chain.removeprefix("sha256:")).size
    except BadEntry:
        raise LayerNotFound("layer does not exist") from None


__all__ = ["CONTAINER_CONFIG", "GO_ZERO_TIME", "HOST_OS", "container_config", "driver_metadata",
           "go_image", "image_attrs", "image_history"]
