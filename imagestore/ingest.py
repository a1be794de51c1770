"""Reading entries into index rows: pure functions of the files, so a large pass can spread
them over worker processes (reading, hashing and parsing 100,000 configs is CPU work).

Each reader returns rows and the problems it met; what is broken is skipped and said, as moby
logs and skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from imagestore.digest import PREFIX, chain_id, digest_of, is_hex64, is_image_id
from imagestore.entries import CONTENT, LAYERS, METADATA
from imagestore.errors import InvalidImageConfig
from imagestore.fs import TEMP_PREFIX, opened_folder, read_optional, read_regular
from imagestore.image import parse_config, parse_time
from imagestore.layers import BadEntry, LayerDB


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# The columns of an image row, in the order ``read_image`` gives its values: rows travel back
# from the workers as plain tuples, the cheapest thing to pickle and to bind.
IMAGE_COLUMNS = ("id", "created", "os", "architecture", "variant", "author", "comment",
                 "docker_version", "chain_id", "layer_count", "config_size", "raw",
                 "last_updated", "built_locally")
ROW_ID = IMAGE_COLUMNS.index("id")
ROW_CHAIN = IMAGE_COLUMNS.index("chain_id")


class ImageRead(NamedTuple):
    """One content file read: the row to store (or ``None``) and what was wrong."""

    name: str
    row: tuple[Any, ...] | None
    parent: str | None
    problems: list[Problem]


def read_metadata(base: str, name: str, exists: bool = True, *,
                  dir_fd: int | None = None) -> tuple[dict[str, Any], list[Problem]]:
    """``parent``, ``lastUpdated`` and ``builtLocally`` of one image (``exists=False``: the
    caller knows it has no metadata folder, so nothing is opened; ``dir_fd``: the folder that
    holds the metadata folders is open)."""
    path = METADATA + name
    folder = f"{name}/" if dir_fd is not None else f"{base}/{path}/"
    out: dict[str, Any] = {"parent": None, "last_updated": None, "built_locally": False}
    problems: list[Problem] = []
    if not exists:
        return out, problems
    try:
        parent = read_optional(folder + "parent", dir_fd=dir_fd)
        last = read_optional(folder + "lastUpdated", dir_fd=dir_fd)
        built = read_optional(folder + "builtLocally", dir_fd=dir_fd)
    except OSError as exc:
        return out, [Problem(path, "bad-metadata", f"metadata unreadable: {exc.strerror or exc}")]
    if parent is not None:
        text = parent.decode("utf-8", "replace")
        if is_image_id(text):
            out["parent"] = text
        else:
            problems.append(Problem(path, "bad-parent",
                                    f"parent file does not hold an image ID: {text[:80]!r}"))
    if last:
        text = last.decode("utf-8", "replace")
        try:
            parse_time(text)
            out["last_updated"] = text
        except InvalidImageConfig:
            problems.append(Problem(path, "bad-metadata",
                                    f"lastUpdated is not RFC 3339: {text[:40]!r}"))
    out["built_locally"] = built is not None and built[:1] == b"\x01"
    return out, problems


def read_image(base: str, name: str, has_metadata: bool = True,
               fds: tuple[int | None, int | None] = (None, None)) -> ImageRead:
    """Read, verify and parse one content file, with its metadata (moby's restore checks,
    except the layer's existence, which the caller knows). ``fds``: the content and metadata
    folders, when open."""
    path = CONTENT + name
    if name.startswith(TEMP_PREFIX):
        return ImageRead(name, None, None, [
            Problem(path, "temp-file", "temporary file left by an interrupted write")])
    if not is_hex64(name):
        return ImageRead(name, None, None, [
            Problem(path, "invalid-name", "name is not 64 lowercase hex digits; skipped")])
    image_id = PREFIX + name
    try:
        raw = read_regular(name, dir_fd=fds[0]) if fds[0] is not None \
            else read_regular(f"{base}/{path}")
    except FileNotFoundError:
        return ImageRead(name, None, None, [])
    except OSError as exc:
        return ImageRead(name, None, None, [
            Problem(path, "unreadable", f"invalid image: {exc.strerror or exc}")])
    if digest_of(raw) != image_id:
        return ImageRead(name, None, None, [
            Problem(path, "digest-mismatch", f"invalid image: failed to verify: {image_id}")])
    try:
        fields = parse_config(raw)
    except InvalidImageConfig as exc:
        return ImageRead(name, None, None, [
            Problem(path, "invalid-config", f"invalid image: {exc}")])
    meta, problems = read_metadata(base, name, has_metadata, dir_fd=fds[1])

    def text(key: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) else ""

    diff_ids = fields["rootfs"]["diff_ids"]
    created = fields.get("created")
    row = (image_id, created if isinstance(created, str) else None, text("os"),
           text("architecture"), text("variant"), text("author"), text("comment"),
           text("docker_version"), chain_id(diff_ids), len(diff_ids), len(raw), raw,
           meta["last_updated"], meta["built_locally"])
    return ImageRead(name, row, meta["parent"], problems)


def read_images(base: str, names: Sequence[str], *, has_metadata: bool) -> list[ImageRead]:
    """Images that all have a metadata folder, or all have none; module-level, so worker
    processes can run it."""
    with opened_folder(base + "/" + CONTENT) as content, \
            opened_folder(base + "/" + METADATA) as metadata:
        return [read_image(base, name, has_metadata, (content, metadata)) for name in names]


LayerCheck = tuple[bytes | None, int, bytes, Problem | None]


def check_layers(base: str, chains: Sequence[bytes]) -> list[LayerCheck]:
    """Check layer folders (named by raw chain digests) as moby's layer store loads them:
    (parent chain, own size, packed IDs, problem) of each, in order. Each folder is read
    once; what a row needs travels compactly, as it waits in memory until every chain's size
    is known."""
    out: list[LayerCheck] = []
    with LayerDB(Path(base) / "layerdb").reading() as layerdb:
        for chain in chains:
            name = chain.hex()
            try:
                layer = layerdb.read_layer(name)
            except BadEntry as exc:
                out.append((None, 0, b"", Problem(LAYERS + name, "bad-layer",
                                                  f"layer not loaded: {exc}")))
                continue
            parent = None if layer.parent is None else bytes.fromhex(layer.parent[len(PREFIX):])
            out.append((parent, layer.size, pack_ids(layer.diff_id, layer.cache_id), None))
    return out


def pack_ids(diff_id: str, cache_id: str) -> bytes:
    """A layer's diff ID (a checked ``sha256:`` digest) and cache ID in one bytes object: 32
    raw bytes each when the cache ID is hex, as every graph driver writes it (97 bytes in
    memory instead of some 250 for two strings)."""
    diff = bytes.fromhex(diff_id[len(PREFIX):])
    if is_hex64(cache_id):
        return b"x" + diff + bytes.fromhex(cache_id)
    return b"t" + diff + cache_id.encode("utf-8", "surrogatepass")


def unpack_ids(packed: bytes) -> tuple[str, str]:
    diff_id = PREFIX + packed[1:33].hex()
    if packed[:1] == b"x":
        return diff_id, packed[33:].hex()
    return diff_id, packed[33:].decode("utf-8", "surrogatepass")
