"""The layerdb on disk: what moby's layer store reads at start, and how a layer is removed.

The image store only needs what moby's ``LayerGetReleaser`` gives it: does a chain ID exist,
and release a reference (removing layers nobody references any more). Reference counts are
answered by the index; this module reads and removes the folders. Graph-driver data (the
layer's files under ``<data-root>/<driver>/``) is released only through the driver a caller
hands ``remove_layer`` (``drivers.Driver``), in moby's order.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagestore.errors import ImageStoreError
from imagestore.moby.digest import PREFIX, is_hex64, is_image_id, is_text
from imagestore.moby.files import fsync_dir, opened_folder, read_optional

LAYER_FILES = ("diff", "size", "cache-id", "parent")
MOUNT_FILES = ("mount-id", "init-id", "parent")
MAX_INT64 = (1 << 63) - 1


@dataclass(frozen=True)
class Layer:
    chain_id: str
    diff_id: str
    size: int
    cache_id: str
    parent: str | None


@dataclass(frozen=True)
class Mount:
    name: str
    mount_id: str
    init_id: str
    parent: str | None


@dataclass(frozen=True)
class LayerMetadata:
    """A layer removed from layerdb, as moby's ``layer.Metadata``."""

    chain_id: str
    diff_id: str
    size: int
    diff_size: int


class BadEntry(ValueError):
    """A layerdb entry moby's layer store would refuse to load."""


class Releaser(Protocol):
    """The graph driver, as removing a layer needs it (``drivers.Driver``; declared here so
    that layerdb need not import the driver module, which reads layerdb)."""

    def check_release(self, driver_id: str) -> None: ...

    def release(self, driver_id: str) -> int: ...


def _digest(raw: bytes | None, what: str) -> str:
    value = (raw or b"").decode("utf-8", "replace").strip()
    if not is_image_id(value):
        raise BadEntry(f"{what} is not a sha256 digest: {value[:80]!r}")
    return value


def _int64(raw: bytes) -> int:
    # moby parses size with strconv.ParseInt (no trimming, base 10, int64).
    text = raw.decode("ascii", "replace")
    if not text or not text.lstrip("+-").isdigit() or not text.isascii():
        raise BadEntry(f"size is not a decimal integer: {text[:40]!r}")
    value = int(text)
    if not -MAX_INT64 - 1 <= value <= MAX_INT64:
        raise BadEntry("size does not fit in 64 bits")
    return value


class LayerDB:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers = root / "sha256"
        self.mounts = root / "mounts"
        self._at: tuple[str, int | None] = (f"{self.layers}/", None)  # (prefix, dir_fd)

    @contextlib.contextmanager
    def reading(self) -> Iterator[LayerDB]:
        """Read many layers relative to the open ``sha256`` folder (a cold sync reads four
        files in each of 100,000s of folders)."""
        with opened_folder(self.layers) as fd:
            if fd is None:
                yield self
                return
            self._at = ("", fd)
            try:
                yield self
            finally:
                self._at = (f"{self.layers}/", None)

    def _read(self, name: str, file: str) -> bytes | None:
        prefix, fd = self._at
        return read_optional(f"{prefix}{name}/{file}", dir_fd=fd)

    def mount_names(self) -> Iterator[str]:
        yield from _dir_names(self.mounts, lambda name: not name.startswith("."))

    def read_layer(self, name: str) -> Layer:
        diff, cache_id = self.read_ids(name)
        try:
            raw_size = self._read(name, "size")
            if raw_size is None:
                raise BadEntry("size is missing")
            size = _int64(raw_size)
            raw_parent = self._read(name, "parent")
            parent = None if raw_parent is None else _digest(raw_parent, "parent")
        except OSError as exc:
            raise BadEntry(f"unreadable: {exc.strerror or exc}") from None
        return Layer(PREFIX + name, diff, size, cache_id, parent)

    def read_ids(self, name: str) -> tuple[str, str]:
        """The layer's diff ID and graph-driver cache ID."""
        try:
            diff = _digest(self._read(name, "diff"), "diff")
            cache_id = (self._read(name, "cache-id") or b"").decode("utf-8", "replace")
        except OSError as exc:
            raise BadEntry(f"unreadable: {exc.strerror or exc}") from None
        if not cache_id.strip():
            raise BadEntry("cache-id is missing or empty")
        return diff, cache_id.strip()

    def read_mount(self, name: str) -> Mount:
        folder = f"{self.mounts}/{name}/"
        try:
            mount_id = (read_optional(folder + "mount-id") or b"").decode("utf-8", "replace")
            init_id = (read_optional(folder + "init-id") or b"").decode("utf-8", "replace")
            raw_parent = read_optional(folder + "parent")
            parent = None if raw_parent is None else _digest(raw_parent, "parent")
        except OSError as exc:
            raise BadEntry(f"unreadable: {exc.strerror or exc}") from None
        return Mount(name, mount_id.strip(), init_id.strip(), parent)

    def remove_layer(self, chain_id: str, driver: Releaser | None = None) -> int:
        """Remove a layer the way moby's ``deleteLayer`` does: rename its folder to
        ``<chain>-<random>-removing`` (so a crash leaves it findable), release the driver's
        data named by its ``cache-id``, then delete the folder. Returns the driver bytes
        removed. Without ``driver`` (a root outside a data-root) only the folder goes.

        The driver is asked first whether it would refuse (a hostile link file), so that a
        refusal changes nothing; the rename is made durable before any driver data goes, so
        that a crash never leaves a layer whose files are gone."""
        hex_name = chain_id[len(PREFIX) :]
        if not is_hex64(hex_name):
            raise ValueError(f"not a chain ID: {chain_id!r}")
        folder = self.layers / hex_name
        cache_id = ""
        if driver is not None:
            try:
                raw = read_optional(folder / "cache-id")
            except OSError as exc:
                raise ImageStoreError(f"cannot remove layer {chain_id}: {folder}/cache-id: "
                                      f"{exc.strerror or exc}") from None
            if raw is None and not os.path.lexists(folder):
                return 0
            cache_id = os.fsdecode(raw or b"").strip()  # moby: strings.TrimSpace
            if not cache_id:
                raise ImageStoreError(f"cannot remove layer {chain_id}: its cache-id is "
                                      f"missing or empty, so its driver data is unknown")
            driver.check_release(cache_id)
        # moby's random part is a 64-hex ID (stringid.GenerateRandomID).
        doomed = self.layers / f"{hex_name}-{secrets.token_hex(32)}-removing"
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return 0
        freed = 0
        if driver is not None:
            fsync_dir(self.layers)
            freed = driver.release(cache_id)
        shutil.rmtree(doomed, ignore_errors=True)
        fsync_dir(self.layers)
        return freed


def _dir_names(folder: Path, accept: Callable[[str], bool]) -> Iterator[str]:
    """Real sub-folders (never symlinks) whose names ``accept`` allows and are text (the
    sync records the others as problems)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and accept(entry.name) \
                        and is_text(entry.name):
                    yield entry.name
    except FileNotFoundError:
        return
