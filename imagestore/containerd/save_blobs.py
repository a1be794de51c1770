"""The blobs a containerd ``docker save`` archive is made of (``containerd.save``): looked
up before the first byte, and streamed with their digest and size checked as containerd's
exporter checks them (core/images/archive/exporter.go ``blobRecord``: a digester fed by the
copy, compared at the end). Errors name the digest; they are ``SaveError``s, as the classic
save's (``moby.archive``) are.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.layout import Layout
from imagestore.errors import DigestMismatch
from imagestore.moby.archive import SaveError

CHUNK = 1 << 20  # bytes read and hashed at a time
# go-digest's algorithms but sha512, whose 128-hex member name a USTAR header (save_go's
# tar_header) cannot hold; containerd itself only ever writes sha256.
_HASHES = ("sha256", "sha384")
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class BlobUnusable(SaveError):
    """A blob the archive needs cannot go into it as it is: ``digest`` names it, ``reason``
    says why, ``image`` which image needed it (when known)."""

    def __init__(self, digest: str, reason: str, image: str = "") -> None:
        super().__init__(digest, reason, image)  # args rebuild it (pickle, copy)
        self.digest, self.reason, self.image = digest, reason, image

    def __str__(self) -> str:
        where = f"cannot save {self.image}: " if self.image else "cannot save: "
        return f"{where}blob {self.digest} {self.reason}"


class MissingBlob(BlobUnusable):
    """The content store does not hold a blob the archive needs."""


class ChangedBlob(BlobUnusable, DigestMismatch):
    """A blob's bytes no longer hash to its digest (or are not the size its descriptor
    gives)."""


@dataclass(frozen=True)
class Blob:
    """A blob as a descriptor names it, and its member in the archive."""

    digest: str
    size: int

    @property
    def member(self) -> str:
        algorithm, _, hexpart = self.digest.partition(":")
        return f"blobs/{algorithm}/{hexpart}"


# -- reading blobs ---------------------------------------------------------------------------


def _hasher(digest: str, label: str) -> Any:
    algorithm, sep, hexpart = digest.partition(":")
    if not sep or algorithm not in _HASHES or not hexpart:
        raise BlobUnusable(digest, "has a digest this archive cannot hold (sha256 and "
                                   "sha384 only)", label)
    return hashlib.new(algorithm)


def _path(layout: Layout, digest: str, label: str) -> Path:
    try:
        return layout.blob(digest)
    except ValueError:
        raise BlobUnusable(digest[:100], "is not a valid digest", label) from None


def check(layout: Layout, blob: Blob, label: str) -> None:
    """The blob is there as a regular file of the right size (no bytes read)."""
    _hasher(blob.digest, label)
    try:
        info = os.lstat(_path(layout, blob.digest, label))
    except FileNotFoundError:
        raise MissingBlob(blob.digest, "is missing from the content store", label) from None
    except OSError as exc:
        raise BlobUnusable(blob.digest, f"cannot be read: {exc.strerror or exc}", label) \
            from None
    if not stat.S_ISREG(info.st_mode):
        raise BlobUnusable(blob.digest, "is not a regular file", label)
    if info.st_size != blob.size:
        raise ChangedBlob(blob.digest, f"is {info.st_size} bytes where its descriptor says "
                                       f"{blob.size}", label)


def present(layout: Layout, digest: str) -> bool:
    return c.blob_size(layout, digest) is not None


def stream_blob(layout: Layout, digest: str, size: int, *, label: str = "") -> Iterator[bytes]:
    """A blob's bytes, ``CHUNK`` at a time, as containerd's ``blobRecord`` copies them: the
    sha256 (or sha384) of what was read is compared with the digest, and its length
    with ``size``, after the last chunk (``ChangedBlob``); a consumer must discard what it
    got when iteration raises. ``MissingBlob`` when the file is gone."""
    hasher = _hasher(digest, label)
    try:
        fd = os.open(_path(layout, digest, label), _READ)
    except FileNotFoundError:
        raise MissingBlob(digest, "is missing from the content store", label) from None
    except OSError as exc:
        raise BlobUnusable(digest, f"cannot be opened: {exc.strerror or exc}", label) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BlobUnusable(digest, "is not a regular file", label)
        total = 0
        while total <= size:  # one byte past the end tells a blob that grew
            try:
                chunk = os.read(fd, min(CHUNK, size + 1 - total))
            except OSError as exc:
                raise BlobUnusable(digest, f"cannot be read: {exc.strerror or exc}", label) \
                    from None
            if not chunk:
                break
            total += len(chunk)
            hasher.update(chunk)
            if total <= size:
                yield chunk
    finally:
        os.close(fd)
    if total != size:
        raise ChangedBlob(digest, f"is {'more than ' if total > size else ''}{total} bytes "
                                  f"where its descriptor says {size}", label)
    if f"{digest.partition(':')[0]}:{hasher.hexdigest()}" != digest:
        raise ChangedBlob(digest, "does not match its digest: its content changed", label)


def document(layout: Layout, blob: Blob, label: str) -> dict[str, Any]:
    """An index or manifest, read whole (checked) and parsed."""
    if blob.size > c.MAX_DOCUMENT:
        raise BlobUnusable(blob.digest, f"is {blob.size} bytes, too large for a manifest", label)
    data = b"".join(stream_blob(layout, blob.digest, blob.size, label=label))
    try:
        return c.document(data)
    except ValueError:
        raise BlobUnusable(blob.digest, "is not a JSON index or manifest", label) from None


def _child(value: object, parent: str, label: str) -> Blob:
    if isinstance(value, dict):
        digest, size = value.get("digest"), value.get("size")
        if isinstance(digest, str) and type(size) is int and size >= 0:
            return Blob(digest, size)
    raise BlobUnusable(parent, "holds a descriptor without a digest and size", label)


def children(doc: dict[str, Any], digest: str, label: str) -> list[Blob]:
    """A manifest's config and layers (containerd images.Children)."""
    layers = doc.get("layers") or []
    if not isinstance(layers, list):
        raise BlobUnusable(digest, "has a layers field that is not a list", label)
    return [_child(doc.get("config"), digest, label),
            *(_child(x, digest, label) for x in layers)]


__all__ = ["CHUNK", "Blob", "BlobUnusable", "ChangedBlob", "MissingBlob", "check", "children",
           "document", "present", "stream_blob"]
