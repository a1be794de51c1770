"""Where things are under an image root (``<data-root>/image/<driver>``).

Entry kinds are the paths, relative to the root, of the folders (and the one file) whose
entries the index mirrors; an entry's path is its kind followed by its name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagestore.errors import ImageStoreError
from imagestore.moby.imagedb import ImageDB
from imagestore.moby.layerdb import LayerDB

CONTENT = "imagedb/content/sha256/"
METADATA = "imagedb/metadata/sha256/"
LAYERS = "layerdb/sha256/"
MOUNTS = "layerdb/mounts/"
REPOSITORIES = "repositories.json"
KINDS = (CONTENT, METADATA, LAYERS, MOUNTS, REPOSITORIES)


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


def split_entry(path: str) -> tuple[str, str]:
    """An entry path as (kind, name)."""
    for kind in KINDS:
        if path.startswith(kind):
            return kind, path[len(kind):]
    raise ValueError(f"not an entry path: {path!r}")


def find_root(path: str | os.PathLike[str]) -> Path:
    """The image root for ``path``: the folder itself, or ``image/<driver>`` of a data-root.
    A folder that cannot be read is named as the user gave it, with the reason."""
    root = Path(path)
    try:
        listed = set(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        raise ImageStoreError(f"root {str(root)!r} is not a directory") from None
    except OSError as exc:
        raise ImageStoreError(f"cannot read root {root}: {exc.strerror or exc}") from None
    if "imagedb" in listed or "layerdb" in listed:
        return root
    try:
        images = sorted(os.listdir(root / "image")) if "image" in listed else []
    except OSError as exc:
        raise ImageStoreError(f"cannot read {root / 'image'}: {exc.strerror or exc}") from None
    drivers = [root / "image" / d for d in images if (root / "image" / d / "imagedb").is_dir()]
    if len(drivers) == 1:
        return drivers[0]
    if len(drivers) > 1:
        names = ", ".join(p.name for p in drivers)
        raise ImageStoreError(f"{root} holds several image roots ({names}): pick one of image/*")
    raise ImageStoreError(f"{root} is not a Docker image root (no imagedb/ or layerdb/)")
