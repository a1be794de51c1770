"""Where things are under a root, and cheap signatures that tell whether they changed.

An entry is one thing the index mirrors: a content file, an image's metadata folder, a layer
folder, a container mount, ``repositories.json``. Its signature is a 63-bit number mixed from
``lstat`` results (type, size, mtime, ctime, inode), stable across runs and Python versions.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagestore.digest import is_hex64
from imagestore.errors import ImageStoreError
from imagestore.fs import METADATA_KEYS, TEMP_PREFIX, ImageDB
from imagestore.layers import MOUNT_FILES, LayerDB
from imagestore.parallel import chunked_map

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


def names(root: Root, kind: str) -> list[str]:
    """Candidate entries of one kind (the raw listing: ``signatures`` weeds out the rest)."""
    folder = f"{root.base}/{kind}"
    if kind == REPOSITORIES:
        return [""]
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def signatures(kind: str, base: str, names: Sequence[str]) -> list[int | None]:
    """The current signature of each named entry (``None``: gone); runs in workers."""
    return [_signature_at(base, kind, name) for name in names]


def scan(root: Root, kind: str) -> dict[str, int]:
    """The signature of every entry of one kind, keyed by its name (hex, or mount name).

    One ``lstat`` per content file and per layer folder (dockerd writes a layer folder
    elsewhere and renames it into place, never rewriting its files); for a metadata folder,
    the folder and each of its files (other tools rewrite those in place). A large root is
    stat-ed by worker processes. ``sync --full`` re-reads everything regardless.
    """
    found = sorted(names(root, kind))
    sigs: dict[str, int] = {}
    start = 0
    for chunk in chunked_map(functools.partial(signatures, kind), root.base, found):
        for name, sig in zip(found[start : start + len(chunk)], chunk, strict=True):
            if sig is not None:
                sigs[name] = sig
        start += len(chunk)
    return sigs


def metadata_temp_files(base: str, names: Sequence[str]) -> list[list[str]]:
    """Temp files an interrupted write left in each named metadata folder; runs in workers."""
    out = []
    for name in names:
        try:
            found = os.listdir(f"{base}/{METADATA}{name}")
        except (FileNotFoundError, NotADirectoryError):
            found = []
        out.append([n for n in found if n.startswith(TEMP_PREFIX)])
    return out


def entry_signature(root: Root, kind: str, name: str) -> int | None:
    """The signature ``scan`` would give one entry now; ``None`` when it is gone."""
    return _signature_at(root.base, kind, name)


def _signature_at(base: str, kind: str, name: str) -> int | None:
    """``None`` for what is not an entry of that kind: absent, or a name or file type that
    the kind does not hold (layer and metadata folders are 64-hex directories)."""
    if kind in (METADATA, LAYERS) and not is_hex64(name):
        return None
    if kind == MOUNTS and name.startswith("."):
        return None
    full = f"{base}/{kind}{name}"
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if kind in (METADATA, MOUNTS):
        if not stat.S_ISDIR(st.st_mode):
            return None
        files = files_signature(full, METADATA_KEYS if kind == METADATA else MOUNT_FILES)
        return (files * 1000003 ^ signature(st)) & _MASK
    if kind == LAYERS and not stat.S_ISDIR(st.st_mode):
        return None
    return signature(st)
