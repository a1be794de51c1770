"""Cheap signatures that tell whether an entry changed, and the digests of buckets of them.

An entry is one thing the index mirrors: a content file, an image's metadata folder, a layer
folder, a container mount, ``repositories.json``. Its signature is a 63-bit number, stable
across runs and Python versions:

- a content file or a layer folder: its inode and file type, from the folder's listing alone.
  Both are only ever renamed into place and removed (content is addressed by its digest),
  never edited, and either moves the mtime of their folder, which signs them all: while it
  stays put they are not even listed. A file edited in place is corruption, found by
  ``sync --full`` and ``fsck``, which read everything.
- a metadata folder: the folder's own ``lstat`` (dockerd and imagestore write ``parent``,
  ``lastUpdated`` and ``builtLocally`` by renaming into it, which moves its mtime). A folder
  changed within ``SETTLED_NS`` of now gets a signature that matches nothing, so it is read
  again until it has settled (a second write in the same timestamp tick would keep its
  mtime, as git's "racy" files do).
- a mount folder: the folder and each of its files; ``repositories.json``: itself.

Entries are grouped in buckets by the first characters of their names; a bucket's digest
moves when any of its entries' names or signatures does.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
import zlib
from collections.abc import Iterable, Sequence

from imagestore.errors import ImageStoreError
from imagestore.index import Digests
from imagestore.moby.digest import is_hex64
from imagestore.moby.imagedb import METADATA_KEYS
from imagestore.moby.layerdb import MOUNT_FILES
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root

MASK = (1 << 63) - 1  # signatures and digests are 63-bit
_MISSING = 0x5DEECE66D
_ODD = 0x9E3779B97F4A7C15
BUCKET = 3
# A folder changed this recently may change again within the same (coarse) timestamp tick
# and keep its mtime, as git's "racy" files do: it is not trusted yet.
SETTLED_NS = 2_000_000_000
# Which way entries are signed; an index signed another way is compared the old way once.
SCHEME = "2"


def signature(st: os.stat_result) -> int:
    """A number that moves when the entry is rewritten, replaced (new inode) or retyped."""
    h = (st.st_mtime_ns * 0x9E3779B97F4A7C15) ^ (st.st_ctime_ns * 0xC2B2AE3D27D4EB4F)
    h ^= (st.st_ino * 0x165667B19E3779F9) ^ (st.st_size * 0x27D4EB2F165667C5)
    return (h ^ stat.S_IFMT(st.st_mode)) & MASK


def listed_signature(inode: int, file_type: int) -> int:
    """A renamed-into-place entry's signature (a layer folder, a content file): its inode and
    type, both given by a folder's listing without a ``stat``."""
    return (inode * 0x165667B19E3779F9 ^ file_type) & MASK


def folder_inode_signature(inode: int) -> int:
    return listed_signature(inode, stat.S_IFDIR)


def bucket(name: str) -> str:
    """The group an entry's signature is summed into: its name's first characters."""
    return name[:BUCKET]


def share(name: str, sig: int) -> int:
    """An entry's share of its bucket's digest: moves when either its name or its signature
    does, and is the same in every process (no salted ``hash``)."""
    return ((zlib.crc32(name.encode(), sig & 0xFFFFFFFF) << 31) ^ sig) * _ODD & MASK


def add_digests(into: Digests, more: Digests) -> None:
    for b, (digest, count) in more.items():
        old, n = into.get(b, (0, 0))
        into[b] = ((old + digest) & MASK, n + count)


def digests(pairs: Iterable[tuple[str, int]]) -> Digests:
    out: Digests = {}
    for name, sig in pairs:
        b = name[:BUCKET]
        old, n = out.get(b, (0, 0))
        out[b] = ((old + share(name, sig)) & MASK, n + 1)
    return out


def unlistable(folder: str, exc: OSError) -> ImageStoreError:
    """A folder that exists but cannot be listed stops the sync: taking it for empty would
    drop every image it holds from the index."""
    return ImageStoreError(f"cannot list {folder.rstrip('/')}: {exc.strerror or exc}")


def signatures(kind: str, base: str, names: Sequence[str]) -> tuple[list[int | None], Digests]:
    """The current signature of each named entry (``None``: not an entry) and the digests of
    what was found, by bucket; runs in workers. Paths are resolved from an open folder."""
    folder = base if kind == REPOSITORIES else f"{base}/{kind}"
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return [None] * len(names), {}
    except OSError as exc:
        raise unlistable(folder, exc) from None
    try:
        sigs = [_signature_at(fd, kind, name) for name in names]
    finally:
        os.close(fd)
    return sigs, digests((n, s) for n, s in zip(names, sigs, strict=True) if s is not None)


def entry_signature(root: Root, kind: str, name: str) -> int | None:
    """The signature a scan would give one entry now; ``None`` when it is gone."""
    sigs, _ = signatures(kind, root.base, [name])
    return sigs[0]


def folder_signature(root: Root, kind: str, now_ns: int) -> int | None:
    """The signature of a kind's folder itself, or ``None`` while it cannot be trusted yet
    (changed within ``SETTLED_NS`` of ``now_ns``)."""
    try:
        st = os.lstat(f"{root.base}/{kind}")
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns > now_ns - SETTLED_NS:
        return None
    return signature(st)


def _signature_at(fd: int, kind: str, name: str) -> int | None:
    """``None`` for what is not an entry of that kind: absent, or a name or file type that
    the kind does not hold (layer and metadata folders are 64-hex directories). A metadata
    folder or a mount is signed with each of its files (other tools rewrite those in place)."""
    if kind in (METADATA, LAYERS) and not is_hex64(name):
        return None
    if kind == MOUNTS and name.startswith("."):
        return None
    try:
        st = os.lstat(REPOSITORIES if kind == REPOSITORIES else name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if kind == METADATA:
        if not stat.S_ISDIR(st.st_mode):
            return None
        if st.st_mtime_ns > time.time_ns() - SETTLED_NS:
            return secrets.randbits(62)  # not settled: matches nothing stored
        return signature(st)
    if kind == CONTENT:
        return listed_signature(st.st_ino, stat.S_IFMT(st.st_mode))
    if kind == MOUNTS:
        if not stat.S_ISDIR(st.st_mode):
            return None
        return _with_files(st, name, MOUNT_FILES, fd)
    if kind == LAYERS:
        return folder_inode_signature(st.st_ino) if stat.S_ISDIR(st.st_mode) else None
    return signature(st)


def legacy_signature(root: Root, kind: str, name: str) -> int | None:
    """What scheme 1 (every content file and metadata file ``lstat``-ed) gave an entry: an
    index signed that way is compared with it once, so nothing unchanged is read again."""
    path = f"{root.base}/{kind}{name}"
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if kind != METADATA:
        return signature(st)
    return _with_files(st, path, METADATA_KEYS, None)


def _with_files(st: os.stat_result, folder: str, files: Sequence[str], fd: int | None
                ) -> int | None:
    """A folder's signature mixed with each of its files' (``None``: it is not a folder)."""
    h = 17
    for file in files:
        try:
            part = signature(os.lstat(f"{folder}/{file}", dir_fd=fd))
        except FileNotFoundError:
            part = _MISSING
        except NotADirectoryError:
            return None
        h = (h * 1000003 ^ part) & MASK
    return (h * 1000003 ^ signature(st)) & MASK


__all__ = ["BUCKET", "MASK", "SCHEME", "SETTLED_NS", "add_digests", "bucket", "digests",
           "entry_signature", "folder_signature", "legacy_signature", "listed_signature",
           "signature", "signatures", "unlistable"]
