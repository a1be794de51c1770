"""Images out of a store as a ``docker save`` archive, and one layer's exact tar (issue #17).

Which images, and under which tags, is the index's answer: the store as the caller opened it,
the same one ``ls`` and ``inspect`` show, with references resolved as moby's tarexport
resolves them (``parseNames``). What goes into the archive is the disk's: configs from
imagedb, checked against their IDs, and layers rebuilt from layerdb's tar-split and the
graph driver's files. The index's copy of a config is never used: a server index may hold it
redacted, and a config that is not byte for byte the original no longer matches its ID.

Nothing here writes under the root or asks whether it may: a read-only store, a mounted disk
image and a root a live daemon is using are all fine.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from imagestore.errors import LayerNotFound
from imagestore.moby.archive import (
    LAYOUTS,
    OCI,
    SaveError,
    SaveImage,
    image_from_root,
    save_to,
    save_to_path,
)
from imagestore.moby.digest import PREFIX, hex_of, is_hex64, normalize_id, truncate_id
from imagestore.moby.files import read_optional
from imagestore.moby.references import (
    InvalidReference,
    NamedReference,
    parse_normalized_named,
)
from imagestore.moby.root import LAYERS, Root
from imagestore.moby.tarsplit import LayerError, LayerSource, layer_source, stream_layer
from imagestore.reading import Readable

Output = str | os.PathLike[str] | BinaryIO


class StoreLike(Protocol):
    """What saving needs of a ``Store`` (the store layer sits above this module)."""

    @property
    def root(self) -> Root: ...

    @property
    def index(self) -> Readable: ...

    def search(self, term: str) -> str: ...

    def resolve(self, name: str) -> str: ...

    def __contains__(self, image_id: object) -> bool: ...


class ImageLayerError(LayerError):
    """A ``LayerError`` met while saving, naming the image too: a user who asked for images
    should learn which one cannot be saved, not only a chain ID."""

    def __init__(self, chain_id: str, path: str, reason: str, image: str = "") -> None:
        super().__init__(chain_id, path, reason)
        self.args = (chain_id, path, reason, image)
        self.image = image

    def __str__(self) -> str:
        where = f"cannot save {self.image}: " if self.image else ""
        return where + super().__str__()


# -- references, as docker save takes them --------------------------------------------------


def _by_name(store: StoreLike, repo: NamedReference) -> list[tuple[str, str | None]]:
    """``ReferencesByName``: a bare repository name saves every image it names, each with the
    tag that names it (an image named only by digest goes without a tag)."""
    found: list[tuple[str, str, str | None]] = []
    with store.index.read() as q:
        refs = q.filed_refs()
    for image_id, ref in refs:
        try:
            named = parse_normalized_named(ref)
        except InvalidReference:
            continue
        if (named.domain, named.path) == (repo.domain, repo.path):
            found.append((str(named), image_id, ref if named.tag else None))
    return [(image_id, tag) for _, image_id, tag in sorted(found)]


def resolve_ref(store: StoreLike, name: str) -> list[tuple[str, str | None]]:
    """The images one REF of ``docker save`` names, each with the tag to record (or
    ``None``), as moby's ``tarexporter.parseNames``: a bare repository name saves every
    image it names, each with its tag; anything else is the one image docker resolves the
    name to (``Reading.resolve``), recorded with the tag given (an ID, a digest reference or
    an ID prefix saves it untagged)."""
    tag = None
    if isinstance(name, str) and name and normalize_id(name) is None:
        try:
            ref = parse_normalized_named(name)
        except InvalidReference as exc:
            raise SaveError(f"invalid reference {name!r}: {exc}") from None
        if ref.familiar_name() != "sha256":  # sha256:<prefix> parses as a name and a tag
            if ref.tag is None and ref.digest is None:
                named = _by_name(store, ref)
                if named:
                    return named
            elif ref.digest is None:
                tag = ref.familiar_string()
    return [(store.resolve(name), tag)]


def images_to_save(store: StoreLike, refs: Iterable[str]
                   ) -> tuple[list[SaveImage], dict[str, str]]:
    """The images ``refs`` name, in the order first named (several refs to one image share
    its entry, their tags joined), read from the disk; and, for messages, the ref that first
    named each image."""
    tags: dict[str, list[str]] = {}
    named_by: dict[str, str] = {}
    for name in [refs] if isinstance(refs, str) else refs:
        for image_id, tag in resolve_ref(store, name):
            chosen = tags.setdefault(image_id, [])
            named_by.setdefault(image_id, name)
            if tag is not None and tag not in chosen:
                chosen.append(tag)
    if not tags:
        raise SaveError("no image to save: name at least one")
    root = store.root.path
    return [image_from_root(root, image_id, repo_tags) for image_id, repo_tags in tags.items()
            ], named_by


def _named_error(exc: LayerError, images: Sequence[SaveImage], named_by: dict[str, str]
                 ) -> ImageLayerError:
    image = next((img for img in images if any(c == exc.chain_id for _, c in img.layers)),
                 None)
    shown = "" if image is None else \
        f"{named_by.get(image.image_id, image.image_id)} ({truncate_id(image.image_id)})"
    return ImageLayerError(exc.chain_id, exc.path, exc.reason, shown)


def save(store: StoreLike, refs: Iterable[str], out: Output, *, format: str = OCI) -> int:
    """Write the images ``refs`` name (``docker save``'s REFs) as one archive that
    ``docker load`` accepts; returns its length. ``format``: ``"oci"`` (Docker 25 and later)
    or ``"legacy"`` (Docker 24 and earlier). ``out`` is a path (written beside the target
    and renamed into place only once every layer checked out: nothing is left on failure)
    or a binary stream (which a failing layer leaves incomplete: every tar-split is read
    before the first byte, but a driver file is checked only as it streams).

    Raises ``ImageNotFound``/``AmbiguousImageID`` for a REF, ``SaveError`` for what cannot
    be saved, ``ImageLayerError`` (a ``LayerError``) naming image, layer and file for a
    layer that cannot be rebuilt byte for byte."""
    if format not in LAYOUTS:
        raise SaveError(f"unknown archive format {format!r} (one of {', '.join(LAYOUTS)})")
    images, named_by = images_to_save(store, refs)
    root = store.root.path
    try:
        if isinstance(out, (str, os.PathLike)):
            return save_to_path(images, Path(out), root, layout=format)
        return save_to(images, out, root, layout=format)
    except LayerError as exc:
        if isinstance(exc, ImageLayerError):
            raise
        raise _named_error(exc, images, named_by) from None


# -- one layer -------------------------------------------------------------------------------


def _chain_of_diff(layers: Path, diff_id: str) -> str | None:
    """The first chain (by ID) whose layer has this diff ID: every such layer's tar is the
    same bytes, whatever lies below it."""
    try:
        names = sorted(e.name for e in os.scandir(layers)
                       if is_hex64(e.name) and e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return None
    for name in names:
        with contextlib.suppress(OSError):
            raw = read_optional(layers / name / "diff")
            if raw is not None and raw.decode("utf-8", "replace").strip() == diff_id:
                return PREFIX + name
    return None


def find_layer(store: StoreLike, layer: str) -> LayerSource:
    """A layer of the store's disk by chain ID, else by diff ID (``sha256:<hex>`` or bare
    hex); ``LayerNotFound`` when layerdb holds neither."""
    digest = normalize_id(layer) if isinstance(layer, str) else None
    if digest is None:
        raise LayerNotFound(f"not a layer's chain ID or diff ID: {str(layer)[:100]!r}")
    root = store.root.path
    layers = root / LAYERS
    with contextlib.suppress(OSError):
        if stat.S_ISDIR((layers / hex_of(digest)).lstat().st_mode):
            return layer_source(root, digest)
    chain = _chain_of_diff(layers, digest)
    if chain is None:
        raise LayerNotFound(f"layer {digest} is not in layerdb (neither a chain ID nor a diff ID)")
    return layer_source(root, chain, digest)


def layer_tar(store: StoreLike, layer: str) -> Iterator[bytes]:
    """The exact tar of a layer (by chain ID or diff ID), in chunks, as ``docker save``
    puts it in an archive. The layer is found at once (``LayerNotFound``); a fault in its
    data raises ``LayerError`` while it streams, a wrong digest only after the last chunk:
    a consumer must discard what it got when iteration raises."""
    return stream_layer(find_layer(store, layer))


class Saving:
    """``Store.save`` and ``Store.layer_tar``: mixed into the store (``class Store(Saving)``)
    so that saving stays a module of its own, below the store in the layering."""

    def save(self: StoreLike, refs: Iterable[str], out: Output, *, format: str = OCI) -> int:
        """See ``imagestore.saving.save``."""
        return save(self, refs, out, format=format)

    def layer_tar(self: StoreLike, layer: str) -> Iterator[bytes]:
        """See ``imagestore.saving.layer_tar``."""
        return layer_tar(self, layer)


__all__ = ["ImageLayerError", "Saving", "StoreLike", "find_layer", "images_to_save",
           "layer_tar", "resolve_ref", "save"]
