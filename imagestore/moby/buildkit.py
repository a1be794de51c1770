"""Which graph-driver folders BuildKit owns, read from ``<data-root>/buildkit/snapshots.db``.

With a graph driver (``vfs``, ``overlay2``, ...) the engine's BuildKit keeps its build
snapshots as driver folders of its own and records them in ``snapshots.db``, a bbolt file
written by moby's ``builder/builder-next/adapters/snapshot/snapshot.go`` (not by containerd's
snapshotter). No layer's ``cache-id`` or mount's ``mount-id``/``init-id`` names such a folder
until BuildKit registers it as a layer, so without this file those folders look like orphans.

What the file holds (checked on a real data root after a BuildKit build,
``tests/data/engine-roots/root-A-buildkit.tar.xz``): one top-level bucket per snapshot key,
nothing else at the top. In each bucket:

- ``Prepare(key, parent)`` creates the driver folder named ``key`` (a 25-character random ID)
  and the bucket ``key`` with ``parent`` (a key, a layer chain ID, or empty);
- ``Usage`` adds ``size`` (decimal bytes);
- ``Commit(name, key)`` puts ``committed`` = ``key`` (the driver folder) in bucket ``name``,
  and ``iscommitted`` (empty) in bucket ``key``;
- when a snapshot becomes a layer, its bucket gets ``chainid``; the layer's ``cache-id`` is then
  that folder (``RegisterByGraphID``);
- a layer used as a snapshot gets an empty bucket named by its chain ID (``sha256:...``).

So a driver folder is BuildKit's when its name is a top-level key or a ``committed`` value.
Chain-ID keys name no folder; they are kept in the set anyway, as are keys that are plain
values: the set only ever keeps folders, so erring towards more names is the safe side.

BuildKit also holds layers of the layer store. Its snapshotter's ``getLayer`` takes a
reference (``LayerStore.Get``) for a snapshot whose key is a chain ID, or whose bucket has a
``chainid``, and keeps it in its ``refs`` map for the daemon's whole life; only BuildKit's
own ``Remove`` gives it back. So a live engine never releases such a layer when an image
that used it goes (seen on the BuildKit fixture: ``docker image prune -a`` deletes the
images and keeps both layers the build registered). Which references a daemon took depends
on what its build cache touched since it started, which the disk does not tell: every layer
the file names counts as held, the safe side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagestore.moby import bbolt
from imagestore.moby.digest import is_image_id

COMMITTED = b"committed"
CHAIN_ID = b"chainid"


@dataclass(frozen=True)
class BuildKitFolders:
    """Driver folder IDs BuildKit owns; ``unreadable`` says why none could be told.

    The reason travels as data, not as an exception, so that a caller deciding what is an
    orphan must look at it: when it is set, no unreferenced folder may be called an orphan.
    """

    ids: frozenset[str]
    unreadable: str | None = None


def snapshots_db(data_root: Path) -> Path:
    """Where BuildKit keeps its snapshot records under a data root."""
    return data_root / "buildkit" / "snapshots.db"


def owned_folders(data_root: Path) -> BuildKitFolders:
    """The driver folders BuildKit's ``snapshots.db`` names (none when there is no file).

    ``data_root`` is the engine's data root (``/var/lib/docker``), not ``image/<driver>``.
    The file is only read, without a lock, so a running daemon is not disturbed.
    """
    root, unreadable = _snapshots(data_root)
    if root is None:
        return BuildKitFolders(frozenset(), unreadable)
    ids: set[str] = set()
    for key, entry in root.items():
        ids.add(os.fsdecode(key))  # as os.listdir names the folders
        if isinstance(entry, bbolt.Bucket):
            committed = entry.value(COMMITTED)
            if committed:
                ids.add(os.fsdecode(committed))
    return BuildKitFolders(frozenset(i for i in ids if _folder_name(i)))


def _snapshots(data_root: Path) -> tuple[bbolt.Bucket | None, str | None]:
    """``snapshots.db``'s top level, read without a lock (a running daemon is not
    disturbed); ``(None, None)`` when BuildKit never ran here, ``(None, why)`` when the file
    cannot be read."""
    path = snapshots_db(data_root)
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"
    try:
        return bbolt.read(path), None
    except bbolt.BoltError as exc:
        return None, str(exc)


def _folder_name(name: str) -> bool:
    """Whether ``name`` could be one folder directly under the driver's directory."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


@dataclass(frozen=True)
class BuildKitLayers:
    """Chain IDs of the layers BuildKit holds a reference to; ``unreadable`` says why none
    could be told (then no layer may be released: any of them may be BuildKit's)."""

    chains: frozenset[str]
    unreadable: str | None = None


def held_layers(data_root: Path) -> BuildKitLayers:
    """The layers ``snapshots.db`` names (moby's snapshotter ``getLayer``): keys that are
    chain IDs and ``chainid`` values. None when BuildKit never ran here."""
    root, unreadable = _snapshots(data_root)
    if root is None:
        return BuildKitLayers(frozenset(), unreadable)
    chains: set[str] = set()
    for key, entry in root.items():
        chains.add(os.fsdecode(key))
        if isinstance(entry, bbolt.Bucket):
            chain = entry.value(CHAIN_ID)
            if chain:
                chains.add(os.fsdecode(chain))
    return BuildKitLayers(frozenset(c for c in chains if is_image_id(c)))
