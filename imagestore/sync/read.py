"""Reading entries into index rows: pure functions of the files, so a large pass can spread
them over worker processes (reading, hashing and parsing 100,000 configs is CPU work).

Each reader returns rows and the problems it met; what is broken is skipped and said, as moby
logs and skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from imagestore.errors import InvalidImageConfig
from imagestore.index import ImageRow, image_row
from imagestore.moby.digest import PREFIX, chain_id, digest_of, is_hex64, is_image_id
from imagestore.moby.files import TEMP_PREFIX, opened_folder, read_optional, read_regular
from imagestore.moby.gotime import parse_time
from imagestore.moby.image import parse_config
from imagestore.moby.layerdb import BadEntry, LayerDB
from imagestore.moby.root import CONTENT, LAYERS, METADATA
from imagestore.sync.compact import LayerCheck, pack_ids
from imagestore.sync.problems import Problem, ProblemKind


class Metadata(NamedTuple):
    """An image's ``parent``, ``lastUpdated`` and ``builtLocally`` files, as stored."""

    parent: str | None = None
    last_updated: str | None = None
    built_locally: bool = False


class ImageRead(NamedTuple):
    """One content file read: the row to store (or ``None``) and what was wrong."""

    name: str
    row: ImageRow | None
    parent: str | None
    problems: list[Problem]


def read_metadata(base: str, name: str, exists: bool = True, *,
                  dir_fd: int | None = None) -> tuple[Metadata, list[Problem]]:
    """``parent``, ``lastUpdated`` and ``builtLocally`` of one image (``exists=False``: the
    caller knows it has no metadata folder, so nothing is opened; ``dir_fd``: the folder that
    holds the metadata folders is open)."""
    path = METADATA + name
    folder = f"{name}/" if dir_fd is not None else f"{base}/{path}/"
    problems: list[Problem] = []
    if not exists:
        return Metadata(), problems
    try:
        parent = read_optional(folder + "parent", dir_fd=dir_fd)
        last = read_optional(folder + "lastUpdated", dir_fd=dir_fd)
        built = read_optional(folder + "builtLocally", dir_fd=dir_fd)
    except OSError as exc:
        return Metadata(), [Problem(path, ProblemKind.BAD_METADATA,
                                    f"metadata unreadable: {exc.strerror or exc}")]
    parent_id = last_updated = None
    if parent is not None:
        text = parent.decode("utf-8", "replace")
        if is_image_id(text):
            parent_id = text
        else:
            problems.append(Problem(path, ProblemKind.BAD_PARENT,
                                    f"parent file does not hold an image ID: {text[:80]!r}"))
    if last:
        text = last.decode("utf-8", "replace")
        try:
            parse_time(text)
            last_updated = text
        except InvalidImageConfig:
            problems.append(Problem(path, ProblemKind.BAD_METADATA,
                                    f"lastUpdated is not RFC 3339: {text[:40]!r}"))
    return Metadata(parent_id, last_updated, built is not None and built[:1] == b"\x01"), problems


def read_image(base: str, name: str, has_metadata: bool = True,
               fds: tuple[int | None, int | None] = (None, None)) -> ImageRead:
    """Read, verify and parse one content file, with its metadata (moby's restore checks,
    except the layer's existence, which the caller knows). ``fds``: the content and metadata
    folders, when open."""
    path = CONTENT + name
    if name.startswith(TEMP_PREFIX):
        return ImageRead(name, None, None, [
            Problem(path, ProblemKind.TEMP_FILE, "temporary file left by an interrupted write")])
    if not is_hex64(name):
        return ImageRead(name, None, None, [
            Problem(path, ProblemKind.INVALID_NAME,
                    "name is not 64 lowercase hex digits; skipped")])
    image_id = PREFIX + name
    try:
        raw = read_regular(name, dir_fd=fds[0]) if fds[0] is not None \
            else read_regular(f"{base}/{path}")
    except FileNotFoundError:
        return ImageRead(name, None, None, [])
    except OSError as exc:
        return ImageRead(name, None, None, [
            Problem(path, ProblemKind.UNREADABLE, f"invalid image: {exc.strerror or exc}")])
    if digest_of(raw) != image_id:
        return ImageRead(name, None, None, [
            Problem(path, ProblemKind.DIGEST_MISMATCH,
                    f"invalid image: failed to verify: {image_id}")])
    try:
        fields = parse_config(raw)
    except InvalidImageConfig as exc:
        return ImageRead(name, None, None, [
            Problem(path, ProblemKind.INVALID_CONFIG, f"invalid image: {exc}")])
    meta, problems = read_metadata(base, name, has_metadata, dir_fd=fds[1])

    def text(key: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) else ""

    diff_ids = fields["rootfs"]["diff_ids"]
    created = fields.get("created")
    row = image_row(image_id, created=created if isinstance(created, str) else None,
                    os=text("os"), architecture=text("architecture"), variant=text("variant"),
                    author=text("author"), comment=text("comment"),
                    docker_version=text("docker_version"), chain_id=chain_id(diff_ids),
                    layer_count=len(diff_ids), raw=raw, last_updated=meta.last_updated,
                    built_locally=meta.built_locally)
    return ImageRead(name, row, meta.parent, problems)


def read_images(base: str, names: Sequence[str], *, has_metadata: bool) -> list[ImageRead]:
    """Images that all have a metadata folder, or all have none; module-level, so worker
    processes can run it."""
    with opened_folder(base + "/" + CONTENT) as content, \
            opened_folder(base + "/" + METADATA) as metadata:
        return [read_image(base, name, has_metadata, (content, metadata)) for name in names]


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
                out.append(LayerCheck(None, 0, b"", Problem(
                    LAYERS + name, ProblemKind.BAD_LAYER, f"layer not loaded: {exc}")))
                continue
            parent = None if layer.parent is None else bytes.fromhex(layer.parent[len(PREFIX):])
            out.append(LayerCheck(parent, layer.size, pack_ids(layer.diff_id, layer.cache_id),
                                  None))
    return out
