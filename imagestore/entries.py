"""Where things are under a root, and cheap signatures that tell whether they changed.

An entry is one thing the index mirrors: a content file, an image's metadata folder, a layer
folder, a container mount, ``repositories.json``. Its signature is a 63-bit number mixed from
``lstat`` results (type, size, mtime, ctime, inode), stable across runs and Python versions.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagestore.digest import is_hex64
from imagestore.errors import ImageStoreError
from imagestore.fs import METADATA_KEYS, ImageDB
from imagestore.layers import MOUNT_FILES, LayerDB

CONTENT = "imagedb/content/sha256/"
METADATA = "imagedb/metadata/sha256/"
LAYERS = "layerdb/sha256/"
MOUNTS = "layerdb/mounts/"
REPOSITORIES = "repositories.json"
KINDS = (CONTENT, METADATA, LAYERS, MOUNTS, REPOSITORIES)

_MASK = (1 << 63) - 1
_MISSING = 0x5DEECE66D


@dataclass(frozen=True)
class Root:
    """An image root on disk: ``<data-root>/image/<driver>``."""

    path: Path

    @property
    def base(self) -> str:
        return str(self.path)

    @property
    def imagedb(self) -> ImageDB:
        return ImageDB(self.path / "imagedb", create=False)

    @property
    def layerdb(self) -> LayerDB:
        return LayerDB(self.path / "layerdb")

    @property
    def repositories(self) -> Path:
        return self.path / REPOSITORIES


def find_root(path: str | os.PathLike[str]) -> Path:
    """The image root for ``path``: the folder itself, or ``image/<driver>`` of a data-root."""
    root = Path(path)
    if not root.is_dir():
        raise ImageStoreError(f"root {str(root)!r} is not a directory")
    if (root / "imagedb").is_dir() or (root / "layerdb").is_dir():
        return root
    drivers = sorted(p for p in (root / "image").glob("*") if (p / "imagedb").is_dir())
    if len(drivers) == 1:
        return drivers[0]
    if len(drivers) > 1:
        names = ", ".join(p.name for p in drivers)
        raise ImageStoreError(f"{root} holds several image roots ({names}): pick one of image/*")
    raise ImageStoreError(f"{root} is not a Docker image root (no imagedb/ or layerdb/)")


def signature(st: os.stat_result) -> int:
    """A number that moves when the entry is rewritten, replaced (new inode) or retyped."""
    h = (st.st_mtime_ns * 0x9E3779B97F4A7C15) ^ (st.st_ctime_ns * 0xC2B2AE3D27D4EB4F)
    h ^= (st.st_ino * 0x165667B19E3779F9) ^ (st.st_size * 0x27D4EB2F165667C5)
    return (h ^ stat.S_IFMT(st.st_mode)) & _MASK


def files_signature(folder: str, names: tuple[str, ...]) -> int:
    """One signature over the named files of a folder (present or not)."""
    h = 17
    for name in names:
        try:
            part = signature(os.lstat(f"{folder}/{name}"))
        except FileNotFoundError:
            part = _MISSING
        except NotADirectoryError:
            return _MISSING
        h = (h * 1000003 ^ part) & _MASK
    return h


def _scandir(folder: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return


def scan(root: Root, kind: str) -> dict[str, int]:
    """The signature of every entry of one kind, keyed by its name (hex, or mount name).

    One ``lstat`` per content file and per layer folder (dockerd writes a layer folder
    elsewhere and renames it into place, never rewriting its files), one per metadata file
    (other tools rewrite those in place). ``sync --full`` re-reads everything regardless.
    """
    folder = f"{root.base}/{kind}"
    sigs: dict[str, int] = {}
    if kind == CONTENT:
        for entry in _scandir(folder):
            sigs[entry.name] = signature(entry.stat(follow_symlinks=False))
    elif kind == METADATA:
        for entry in _scandir(folder):
            if is_hex64(entry.name) and entry.is_dir(follow_symlinks=False):
                sigs[entry.name] = files_signature(folder + entry.name, METADATA_KEYS)
    elif kind == LAYERS:
        for entry in _scandir(folder):
            if is_hex64(entry.name) and entry.is_dir(follow_symlinks=False):
                sigs[entry.name] = signature(entry.stat(follow_symlinks=False))
    elif kind == MOUNTS:
        for entry in _scandir(folder):
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                sigs[entry.name] = files_signature(folder + entry.name, MOUNT_FILES)
    else:
        with contextlib.suppress(FileNotFoundError):
            sigs[""] = signature(os.lstat(folder))
    return sigs


def entry_signature(root: Root, kind: str, name: str) -> int | None:
    """The signature ``scan`` would give one entry now; ``None`` when it is gone."""
    full = f"{root.base}/{kind}{name}"
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return None
    if kind in (METADATA, MOUNTS):
        if not stat.S_ISDIR(st.st_mode):
            return None
        return files_signature(full, METADATA_KEYS if kind == METADATA else MOUNT_FILES)
    if kind == LAYERS and not stat.S_ISDIR(st.st_mode):
        return None
    return signature(st)
