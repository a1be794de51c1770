"""Graph-driver data: where a layer's files are, how the engine removes them, and which
driver folders nothing uses any more.

Only drivers whose data is plain folders are handled (vfs, overlay2): for btrfs, zfs,
devicemapper, windowsfilter... removing a folder is not removing the data, so they are refused
before anything is deleted. Removal never follows a symlink nor crosses into a mount
(``mountinfo.walk``): a layer's files are a root file system, full of absolute symlinks.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagestore.errors import ImageStoreError, UnsupportedDriver
from imagestore.moby import mountinfo as mounts
from imagestore.moby.digest import is_hex64
from imagestore.moby.files import fsync_dir, read_optional
from imagestore.moby.layerdb import LayerDB
from imagestore.moby.mountinfo import DriverBusy, UnsafeDriverData, is_plain_name
from imagestore.moby.problems import ProblemKind

DRIVERS = ("vfs", "overlay2")
LINK_DIR = "l"  # overlay2's short names, kept short so that many lowers fit a mount call

# Kinds of findings.
ORPHAN = ProblemKind.ORPHAN_DRIVER_DATA
UNCLAIMED = ProblemKind.UNCLAIMED_DRIVER_DATA
DANGLING_LINK = ProblemKind.DANGLING_DRIVER_LINK
MISSING = ProblemKind.MISSING_DRIVER_DATA
UNFINISHED = ProblemKind.UNFINISHED_REMOVAL


def _read_name(path: str | os.PathLike[str], *, quiet: bool = False) -> str | None:
    """An ID file (``cache-id``, ``mount-id``...) as moby reads it, trimmed; ``None``: absent
    (or, when ``quiet``, unreadable)."""
    try:
        raw = read_optional(path)
    except OSError:
        if quiet:
            return None
        raise
    return None if raw is None else os.fsdecode(raw).strip()


@dataclass(frozen=True)
class Driver:
    """A graph driver's data: ``home`` is ``<data-root>/<name>``. ``mountinfo`` is where
    mounts are read (tests point it at a sample)."""

    name: str
    home: Path
    mountinfo: str = mounts.MOUNTINFO

    @functools.cached_property
    def folders(self) -> Path:
        """Where the per-ID folders are: vfs's ``dir/``, overlay2's home (computed once)."""
        return self.home / "dir" if self.name == "vfs" else self.home

    def _checked(self, driver_id: str) -> str:
        # moby's vfs takes filepath.Base(id) and overlay2 joins it as given (``l`` would be
        # every link); neither is safe for an ID read from someone else's disk.
        if not is_plain_name(driver_id) or (self.name == "overlay2" and driver_id == LINK_DIR):
            raise UnsafeDriverData(str(self.folders), f"driver ID {driver_id!r} is not a name")
        return driver_id

    def _opened(self) -> int | None:
        """The per-ID folders' folder, opened (the caller closes it; no context manager: a
        prune opens it twice per layer); ``None`` when absent (moby tolerates that). The home
        may be a symlink (moved to another disk); nothing below it is followed."""
        try:
            return mounts.open_folder(self.folders, self.folders, follow=self.name != "vfs")
        except FileNotFoundError:
            return None

    def check_unmounted(self) -> None:
        """Raise ``DriverBusy`` when anything is mounted under the home, or when that cannot be
        told: once, before removing (moby unmounts; a tool beside the daemon must not)."""
        mounts.check_unmounted(self.home, self.mountinfo)

    def check_release(self, driver_id: str) -> None:
        """Raise ``UnsafeDriverData`` if ``release`` would: to refuse before deleting anything."""
        name = self._checked(driver_id)
        fd = self._opened()
        if fd is None:
            return
        try:
            if self.name == "overlay2":
                self._link(fd, name)
        finally:
            os.close(fd)

    def release(self, driver_id: str) -> int:
        """Remove an ID's data as the driver's ``Remove`` does (overlay2: ``l/<link>``, then
        the folder); the apparent bytes of the regular files removed (0 when absent)."""
        name = self._checked(driver_id)
        fd = self._opened()
        if fd is None:
            return 0
        try:
            if self.name == "overlay2" and (link := self._link(fd, name)) is not None:
                with contextlib.suppress(FileNotFoundError):  # l/ checked by _link
                    os.unlink(f"{LINK_DIR}/{link}", dir_fd=fd)
            return mounts.walk(fd, name, os.path.join(self.folders, name), remove=True)
        finally:
            os.close(fd)

    def _link(self, home: int, name: str) -> str | None:
        """The ``l/`` entry overlay2 removes with this folder, ``None`` when there is none.
        moby removes ``l/<contents of link>`` unchecked; a link that is empty (``l/`` itself),
        not a name (``../..``), or not this folder's own is refused here instead."""
        where = str(self.home / name)
        try:  # <name> a symlink: followed, as moby does; the target check below still holds
            raw = read_optional(f"{name}/link", dir_fd=home)
        except NotADirectoryError:
            return None  # no folder: no link file (moby's read fails too)
        except OSError as exc:
            raise UnsafeDriverData(where, f"its link file cannot be read "
                                   f"({exc.strerror or exc})") from None
        if raw is None:
            return None
        link = os.fsdecode(raw)
        if not is_plain_name(link):
            why = "is empty" if not link else f"names {link!r}, not an entry of l/"
            raise UnsafeDriverData(where, f"its link file {why}")
        try:
            links = mounts.open_folder(LINK_DIR, self.home / LINK_DIR, home)
        except FileNotFoundError:
            return None
        try:
            target = os.readlink(link, dir_fd=links)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnsafeDriverData(str(self.home / LINK_DIR / link),
                                   f"not a symlink ({exc.strerror or exc})") from None
        finally:
            os.close(links)
        if target != f"../{name}/diff":
            raise UnsafeDriverData(str(self.home / LINK_DIR / link),
                                   f"it leads to {target!r}, not to {name}'s diff")
        return link

    def size(self, driver_id: str) -> int:
        """Apparent bytes of an ID's regular files (what ``release`` would return)."""
        name = self._checked(driver_id)
        fd = self._opened()
        if fd is None:
            return 0
        try:
            return mounts.walk(fd, name, os.path.join(self.folders, name), remove=False)
        finally:
            os.close(fd)

    def ids(self) -> list[str]:
        """The IDs that have a folder, sorted (overlay2's ``l/`` is not one)."""
        return [n for n in _subdirs(self.folders) if self.name == "vfs" or n != LINK_DIR]

    def dangling_links(self) -> list[tuple[str, str]]:
        """overlay2's ``l/`` entries that do not lead to a folder that names them, with why."""
        links = self.home / LINK_DIR
        if self.name != "overlay2" or links.is_symlink() or not links.is_dir():
            return []
        found, ids = [], set(self.ids())
        for name in sorted(os.listdir(links)):
            try:
                target = os.readlink(links / name)
            except OSError as exc:
                found.append((name, f"not a symlink ({exc.strerror or exc})"))
                continue
            owner = target[3:-5] if target.startswith("../") and target.endswith("/diff") else ""
            if not is_plain_name(owner) or owner == LINK_DIR:
                found.append((name, f"leads to {target!r}, outside the layers' folders"))
            elif owner not in ids:
                found.append((name, f"its layer folder {owner} is gone"))
            elif _read_name(self.home / owner / "link", quiet=True) != name:
                found.append((name, f"layer folder {owner} does not name it as its link"))
        return found

    def remove_link(self, name: str) -> int:
        """Remove ``l/<name>`` (never what it leads to); 0 bytes, as a link holds none."""
        links = self.home / LINK_DIR
        if self.name != "overlay2" or not is_plain_name(name) or links.is_symlink():
            raise UnsafeDriverData(str(links / name), "not an entry of overlay2's l/")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(links / name)
        return 0


def find_driver(image_root: str | os.PathLike[str]) -> Driver | None:
    """The driver of ``<data-root>/image/<driver>``; ``None`` for an image root that is not
    inside a data-root (a copy of ``image/<driver>`` alone has no driver data to release).
    Raises ``UnsupportedDriver`` for a driver other than vfs and overlay2."""
    root = Path(os.path.realpath(image_root))
    if root.parent.name != "image":
        return None
    if root.name not in DRIVERS:
        raise UnsupportedDriver(root.name, str(root), DRIVERS)
    return Driver(root.name, root.parent.parent / root.name)


def driver_for(image_root: str | os.PathLike[str]) -> Driver:
    """``find_driver`` for callers that must release driver data: no driver is an error."""
    driver = find_driver(image_root)
    if driver is None:
        raise ImageStoreError(f"{image_root} is not <data-root>/image/<driver>: the graph "
                              f"driver's data cannot be found")
    return driver


@dataclass(frozen=True)
class References:
    """Which driver IDs the layer store uses. ``pending``: layerdb folders of an unfinished
    delete or write (path → cache ID, ``""`` when it has none); ``unreadable``: entries whose
    IDs cannot be read, so that no folder can be called unused."""

    layers: Mapping[str, str] = field(default_factory=dict)  # chain ID → cache ID
    mounts: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # → (mount, init)
    pending: Mapping[str, str] = field(default_factory=dict)
    unreadable: tuple[str, ...] = ()

    @property
    def ids(self) -> frozenset[str]:
        used = {*self.layers.values(), *self.pending.values()}
        used.update(i for pair in self.mounts.values() for i in pair)
        return frozenset(used - {""})


def _subdirs(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_references(layerdb: LayerDB) -> References:
    """The layer store's references, from disk: every layer's ``cache-id`` (``-removing``
    ones and ``tmp/`` write sets included) and every mount's ``mount-id`` and ``init-id``
    (moby names a container's init layer ``<mount-id>-init`` and records it there)."""
    layers: dict[str, str] = {}
    pending: dict[str, str] = {}
    mounts: dict[str, tuple[str, str]] = {}
    unreadable: list[str] = []
    # Paths as plain strings: a large store has hundreds of thousands of layers.
    top, tmp = str(layerdb.layers), str(layerdb.root / "tmp")
    folders = [(top, n) for n in _subdirs(layerdb.layers)]
    for parent, name in folders + [(tmp, n) for n in _subdirs(layerdb.root / "tmp")]:
        path = f"{parent}/{name}"
        try:
            cache = _read_name(f"{path}/cache-id")
        except OSError:
            unreadable.append(f"{path}/cache-id")
            continue
        if parent != top or name.endswith("-removing"):
            pending[path] = cache or ""
        elif is_hex64(name) and cache:  # other folders moby does not load either
            layers["sha256:" + name] = cache
    for name in _subdirs(layerdb.mounts):
        try:
            ids = [_read_name(layerdb.mounts / name / f) or "" for f in ("mount-id", "init-id")]
        except OSError:
            unreadable.append(str(layerdb.mounts / name))
            continue
        mounts[name] = (ids[0], ids[1])
    return References(layers, mounts, pending, tuple(unreadable))


@dataclass(frozen=True)
class DriverFinding:
    """Something found in the driver's data; ``size`` is apparent bytes (0 for a link)."""

    kind: ProblemKind
    path: str
    size: int
    detail: str


def _measure(driver: Driver, driver_id: str) -> tuple[int, str]:
    try:
        return driver.size(driver_id), ""
    except (OSError, ImageStoreError) as exc:
        return 0, f" (size unknown: {exc})"


def find_orphans(driver: Driver, refs: References, buildkit: frozenset[str] | None,
                 buildkit_reason: str = "") -> list[DriverFinding]:
    """What nothing uses, what is missing, and what was left half done. ``buildkit``: the
    IDs BuildKit's snapshots name, ``None`` when they cannot be read (``buildkit_reason``
    says why): then an unused folder may be BuildKit's and is only ``UNCLAIMED``."""
    found = []
    used = refs.ids
    kind, why = (ORPHAN, "no layer, container or BuildKit snapshot uses it") \
        if buildkit is not None else (UNCLAIMED, (
            f"no layer or container uses it; BuildKit's snapshots cannot be read "
            f"({buildkit_reason or 'unknown reason'}), so it may be BuildKit's"))
    names = driver.ids()  # listed once: a large store's folder has a huge listing
    for name in names:
        if name not in used and (buildkit is None or name not in buildkit):
            size, note = _measure(driver, name)
            found.append(DriverFinding(kind, str(driver.folders / name), size, why + note))
    present = set(names)
    wanted = [(f"layer {chain}", cache) for chain, cache in sorted(  # only the few gone
        (c, i) for c, i in refs.layers.items() if i and i not in present)]
    wanted += [(f"container layer {name} ({what})", driver_id)
               for name, ids in sorted(refs.mounts.items())
               for what, driver_id in zip(("mount-id", "init-id"), ids, strict=True)]
    for owner, driver_id in wanted:
        if driver_id and driver_id not in present:
            why = "is gone" if is_plain_name(driver_id) else "is not a name"
            found.append(DriverFinding(MISSING, str(driver.folders / driver_id), 0,
                                       f"{owner}: its driver folder {driver_id!r} {why}"))
    for path, cache in sorted(refs.pending.items()):
        size, note = _measure(driver, cache) if is_plain_name(cache) else (0, "")
        found.append(DriverFinding(UNFINISHED, path, size, f"an interrupted delete or write "
                                   f"(cache-id {cache or 'absent'}){note}"))
    for name, why in driver.dangling_links():
        found.append(DriverFinding(DANGLING_LINK, str(driver.home / LINK_DIR / name), 0, why))
    return found


@dataclass(frozen=True)
class Cleanup:
    """What a removal did: paths removed, the driver bytes they held, what failed (path, why)
    and, when nothing at all was tried, why not."""

    removed: tuple[str, ...] = ()
    driver_bytes: int = 0
    failed: tuple[tuple[str, str], ...] = ()
    refused: str = ""


def _each(driver: Driver, removals: list[tuple[str, Callable[[], int]]]) -> Cleanup:
    """Run each removal (path, action returning driver bytes); one that fails is reported and
    the others go on, as moby logs and goes on. Nothing runs while anything is mounted."""
    try:
        driver.check_unmounted()
    except DriverBusy as exc:
        return Cleanup(refused=f"nothing removed: {exc}")
    removed, failed, total = list[str](), list[tuple[str, str]](), 0
    for path, action in removals:
        try:
            total += action()
        except (OSError, ImageStoreError) as exc:
            failed.append((path, str(exc)))
            continue
        removed.append(path)
    return Cleanup(tuple(removed), total, tuple(failed))


def remove_orphans(driver: Driver, refs: References, buildkit: frozenset[str] | None,
                   buildkit_reason: str = "") -> Cleanup:
    """Remove unused driver folders and dangling ``l/`` links, found afresh (a report may be
    stale). Nothing is removed while BuildKit's IDs are unknown, an entry's IDs are
    unreadable, or anything is mounted under the driver's home."""
    if buildkit is None:
        return Cleanup(refused=f"nothing removed: BuildKit's snapshots cannot be read "
                       f"({buildkit_reason or 'unknown reason'}), so a folder no layer uses "
                       f"may be BuildKit's")
    if refs.unreadable:
        return Cleanup(refused=f"nothing removed: {refs.unreadable[0]} cannot be read, so "
                       f"which driver folders are in use cannot be told")
    act = {ORPHAN: driver.release, DANGLING_LINK: driver.remove_link}
    return _each(driver, [(f.path, functools.partial(act[f.kind], Path(f.path).name))
                          for f in find_orphans(driver, refs, buildkit) if f.kind in act])


def finish_removals(driver: Driver, layerdb: LayerDB) -> Cleanup:
    """Finish deletes a crash interrupted, as moby's layer store does at start: each
    ``<chain>-<random>-removing`` folder's driver data (its ``cache-id``) is released, then the
    folder goes. Driver data a live layer or container also names is left alone."""
    doomed = [n for n in _subdirs(layerdb.layers) if n.endswith("-removing")]
    if not doomed:
        return Cleanup()  # the common case reads no mount table and no layer
    refs = read_references(layerdb)
    live = {*refs.layers.values(), *(i for pair in refs.mounts.values() for i in pair)}

    def finish(folder: Path) -> int:
        cache = _read_name(folder / "cache-id")
        freed = driver.release(cache) if cache and cache not in live else 0
        shutil.rmtree(folder)
        return freed

    done = _each(driver, [(str(layerdb.layers / n), functools.partial(finish, layerdb.layers / n))
                          for n in doomed])
    fsync_dir(layerdb.layers)
    return done


__all__ = [
    "DANGLING_LINK", "DRIVERS", "MISSING", "ORPHAN", "UNCLAIMED", "UNFINISHED", "Cleanup",
    "Driver", "DriverBusy", "DriverFinding", "References", "UnsafeDriverData",
    "UnsupportedDriver", "driver_for", "find_driver", "find_orphans", "finish_removals",
    "is_plain_name", "read_references", "remove_orphans",
]
