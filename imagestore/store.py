"""moby's image ``Store`` on top of the index: every question is answered in SQL.

Writes go to disk first (the root stays the source of truth, readable by a real engine), then
to the index in one transaction, under a lock that serialises writers of the same index.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from imagestore.errors import (
    ImageNotFound,
    ImageStoreError,
    IndexCorrupt,
    InvalidConfigType,
    InvalidImageConfig,
    LayerNotFound,
)
from imagestore.index import Index, Writer
from imagestore.moby.buildkit import BuildKitLayers, held_layers, snapshots_db
from imagestore.moby.daemon import check_writable
from imagestore.moby.digest import chain_id, hex_of
from imagestore.moby.drivers import Driver, find_driver, finish_removals
from imagestore.moby.files import MAX_FILE_SIZE, atomic_write, read_optional
from imagestore.moby.gotime import format_time
from imagestore.moby.image import check_history, parse_config
from imagestore.moby.imagedb import ImageDB
from imagestore.moby.layerdb import BadEntry, LayerMetadata
from imagestore.moby.references import (
    DEFAULT_TAG,
    BadReferences,
    InvalidReference,
    parse_normalized_named,
    with_tag,
    without_image,
    without_reference,
)
from imagestore.moby.root import CONTENT, LAYERS, METADATA
from imagestore.reading import Reading, image_id_of, require
from imagestore.saving import Saving
from imagestore.sync import Progress, SyncReport, record, reread, reread_tags, run

if TYPE_CHECKING:
    from imagestore.sync.files import FilesReport


@dataclass(frozen=True)
class Deletion:
    """What deleting one image removed: its layers (top first, as moby's ``Release``
    returns them), the apparent bytes of graph-driver data freed, and what could not be
    removed (the image itself is gone by then, as in moby)."""

    layers: list[LayerMetadata]
    driver_bytes: int = 0
    failures: tuple[str, ...] = ()


class Store(Saving, Reading):
    """A Docker image root and its index. Use ``imagestore.open`` to get one."""

    index: Index

    def __init__(self, root: Path, index: Index, *, readonly: bool, force: bool = False
                 ) -> None:
        super().__init__(root, index)
        self.readonly = readonly
        self.force = force
        # The report of this store's latest sync (the one ``open`` ran, if it did).
        self.last_sync: SyncReport | None = None
        self._tidied = False  # deletes a crash interrupted were finished by this open
        self._driver: tuple[Driver | None] | None = None
        self._held: tuple[tuple[int, ...] | None, BuildKitLayers] | None = None

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[Writer]:
        check_writable(self.root.path, readonly=self.readonly, force=self.force, what=what)
        with self.index.write() as tx:
            self._tidy()
            yield tx

    def _tidy(self) -> None:
        """Finish the layer deletes a crash interrupted (``-removing`` folders), as moby's
        layer store does at start: once, at this open's first write, never at a reading
        open (fsck reports them instead). What cannot be finished is left for fsck."""
        if self._tidied:
            return
        self._tidied = True
        with contextlib.suppress(ImageStoreError, OSError):  # left for fsck to report
            driver = self.driver()
            if driver is not None:
                finish_removals(driver, self.root.layerdb)

    def driver(self) -> Driver | None:
        """The graph driver whose data this root's layers name (``None`` for a root outside
        a data-root: no driver data is touched then). Raises ``UnsupportedDriver`` for a
        driver whose data cannot be removed as the engine removes it."""
        if self._driver is None:
            self._driver = (find_driver(self.root.path),)
        return self._driver[0]

    def check_delete(self) -> Driver | None:
        """Raise now what a delete would refuse, before a caller writes anything (an untag
        that precedes a delete): a read-only store, a live dockerd, an unsupported driver,
        anything mounted under the driver's folder, a BuildKit record that cannot be read.
        Returns the driver."""
        check_writable(self.root.path, readonly=self.readonly, force=self.force,
                       what="delete an image")
        driver = self.driver()
        if driver is not None:
            driver.check_unmounted()
        self.held_layers()
        return driver

    def held_layers(self) -> frozenset[str]:
        """Chain IDs of the layers the engine's BuildKit holds (``moby.buildkit``): a
        delete never releases them, as the live engine's layer store does not. Raises when
        BuildKit's records exist but cannot be read: any layer may then be BuildKit's."""
        path = self.root.path.resolve()
        if path.parent.name != "image":  # outside a data-root: no BuildKit beside it
            return frozenset()
        # Read once per version of the file, not once per image a prune deletes.
        try:
            st = os.stat(snapshots_db(path.parent.parent))
            version: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            version = None
        if self._held is None or version is None or self._held[0] != version:
            self._held = (version, held_layers(path.parent.parent))
        held = self._held[1]
        if held.unreadable is not None:
            raise ImageStoreError(f"cannot tell which layers BuildKit holds "
                                  f"({held.unreadable}): not releasing any")
        return held.chains

    def _imagedb(self) -> ImageDB:
        return ImageDB(self.root.path / "imagedb", create=not self.readonly)

    # -- the moby Store interface -------------------------------------------------------------
    def create(self, config: bytes) -> str:
        """Store a config; idempotent. The layers its rootfs names must be in layerdb."""
        if not isinstance(config, (bytes, bytearray)):
            raise InvalidConfigType("config must be bytes")
        config = bytes(config)
        if len(config) > MAX_FILE_SIZE:
            raise InvalidImageConfig(f"config of {len(config)} bytes is larger than the "
                                     f"{MAX_FILE_SIZE} bytes imagestore accepts")
        fields = parse_config(config)
        check_history(fields)
        with self._write("create an image") as tx:
            image_id = self._imagedb().set(config)
            if tx.has_image(image_id):
                record(tx, self.root, [CONTENT + hex_of(image_id)])  # rewritten
                return image_id
            chain = chain_id(fields["rootfs"]["diff_ids"])
            if chain is not None and not tx.has_layer(chain):
                # The index may not know a layer written since the last sync: ask the disk.
                run(tx, self.root)
                if not tx.has_layer(chain):
                    raise LayerNotFound(f"failed to get layer {chain}: layer does not exist")
            problem = reread(tx, self.root, [image_id])[image_id]
            if problem is not None:
                raise ImageStoreError(f"image {image_id} did not load: {problem.reason}")
            return image_id

    def delete(self, image_id: str) -> list[LayerMetadata]:
        """Delete as moby does: children lose their parent link, unreferenced layers go,
        with their graph-driver data (``delete_image`` also says how many bytes)."""
        done = self.delete_image(image_id)
        if done.failures:
            raise ImageStoreError(f"image {image_id} deleted, but {done.failures[0]}")
        return done.layers

    def delete_image(self, image_id: str) -> Deletion:
        """``delete``, answering what was removed. Everything that could refuse (a driver
        this package cannot release, a mount under the driver's folder, a layer whose
        driver data is not its own) refuses before anything is written; a layer that fails
        to go after that is reported in ``failures`` (the image is gone, as in moby)."""
        image_id = image_id_of(image_id)
        with self._write("delete an image") as tx:
            driver = self.driver()
            if driver is not None:
                driver.check_unmounted()
            top = tx.image_chain(image_id)
            if top is None:
                raise ImageNotFound(f"unrecognized image ID {image_id}")
            children = tx.children(image_id)
            tx.delete_image(image_id)  # rolled back with the rest if a check below fails
            released = [LayerMetadata(*layer)
                        for layer in tx.release(top[0], self.held_layers())]
            if driver is not None:
                for layer in released:
                    self._check_release(driver, layer.chain_id)
            imagedb = self._imagedb()
            for child in children:
                imagedb.delete_metadata(child, "parent")
            imagedb.delete(image_id)
            freed, failures = 0, list[str]()
            for layer in released:
                try:
                    freed += self.root.layerdb.remove_layer(layer.chain_id, driver)
                except (OSError, ImageStoreError) as exc:  # moby logs it and goes on
                    failures.append(f"layer {layer.chain_id} was not removed: {exc}")
            touched = [CONTENT + hex_of(image_id), METADATA + hex_of(image_id)]
            touched += [METADATA + hex_of(c) for c in children]
            touched += [LAYERS + hex_of(m.chain_id) for m in released]
            record(tx, self.root, touched)
        return Deletion(released, freed, tuple(failures))

    def _check_release(self, driver: Driver, chain: str) -> None:
        try:
            cache_id = self.root.layerdb.read_ids(hex_of(chain))[1]
        except BadEntry as exc:
            raise ImageStoreError(f"cannot remove layer {chain}: {exc}") from None
        driver.check_release(cache_id)

    def set_parent(self, image_id: str, parent: str) -> None:
        image_id, parent = image_id_of(image_id), image_id_of(parent)
        with self._write("set a parent") as tx:
            require(tx, parent, "unknown parent image ID")
            require(tx, image_id)
            if parent == image_id or image_id in tx.ancestors(parent):
                raise ImageStoreError(
                    f"cannot make {parent} the parent of {image_id}: it would create a cycle")
            self._imagedb().set_metadata(image_id, "parent", parent.encode())
            tx.set_parent(image_id, parent)
            record(tx, self.root, [METADATA + hex_of(image_id)])

    def set_last_updated(self, image_id: str, when: datetime | None = None) -> None:
        stamp = format_time(when or datetime.now(timezone.utc))
        self._set_metadata(image_id, "lastUpdated", stamp.encode(), last_updated=stamp)

    def set_built_locally(self, image_id: str) -> None:
        self._set_metadata(image_id, "builtLocally", b"\x01", built_locally=True)

    def _set_metadata(self, image_id: str, key: str, data: bytes, *,
                      last_updated: str | None = None, built_locally: bool | None = None
                      ) -> None:
        image_id = image_id_of(image_id)
        with self._write(f"set {key}") as tx:
            require(tx, image_id)
            self._imagedb().set_metadata(image_id, key, data)
            tx.set_image_meta(image_id, last_updated=last_updated, built_locally=built_locally)
            record(tx, self.root, [METADATA + hex_of(image_id)])

    # -- the reference store (moby reference/store.go), beside the image store ---------------
    def tag(self, image_id: str, repository: str, tag: str | None = None) -> str:
        """Tag an image as the daemon's ``TagImage`` does: ``repository[:tag]`` (``latest``
        by default) names it, replacing what the tag named, and its ``lastUpdated`` is set.
        Returns the tag, familiar."""
        image_id = image_id_of(image_id)
        try:
            ref = parse_normalized_named(repository)
            if tag:
                ref = parse_normalized_named(f"{ref.familiar_name()}:{tag}")
        except InvalidReference as exc:
            raise ImageStoreError(f"invalid reference format: {exc}") from None
        with self._write("tag an image") as tx:
            require(tx, image_id)
            self._rewrite_references(tx, lambda raw: with_tag(raw, ref, image_id))
        self.set_last_updated(image_id)
        return ref.familiar_string() if ref.tag else f"{ref.familiar_string()}:{DEFAULT_TAG}"

    def untag(self, ref: str) -> bool:
        """Remove one reference (a key of ``repositories.json``) as moby's reference store
        ``Delete`` does; False when there is no such reference."""
        with self._write("untag an image") as tx:
            return self._rewrite_references(tx, lambda raw: without_reference(raw, ref))

    def drop_references(self, image_ids: Iterable[str]) -> list[str]:
        """Remove every reference to these images; the references removed."""
        removed: list[str] = []

        def drop(raw: bytes | None) -> bytes | None:
            if raw is None:
                return None
            for image_id in dict.fromkeys(image_ids):
                raw, gone = without_image(raw, image_id)
                removed.extend(gone)
            return raw if removed else None

        with self._write("untag an image") as tx:
            self._rewrite_references(tx, drop)
        return removed

    def _rewrite_references(self, tx: Writer, change: Callable[[bytes | None], bytes | None]
                            ) -> bool:
        """Rewrite ``repositories.json`` as ``change`` says (``None``: leave it), on disk
        first and then in the index; whether it was rewritten. A corrupt file is never
        rewritten."""
        path = self.root.repositories
        try:
            new = change(read_optional(path, limit=MAX_FILE_SIZE))
        except BadReferences:
            raise ImageStoreError(f"{path} is corrupt; not rewriting it") from None
        except InvalidReference as exc:
            raise ImageStoreError(str(exc)) from None
        if new is None:
            return False
        atomic_write(path, new)
        reread_tags(tx, self.root)
        return True

    # -- beyond moby --------------------------------------------------------------------------
    def sync(self, *, full: bool = False, progress: Progress | None = None) -> SyncReport:
        """Bring the index up to date with the root (``full``: rebuild it from scratch;
        ``progress(phase, done, total)``: told as entries are read)."""
        try:
            with self.index.write() as tx:
                self.last_sync = run(tx, self.root, full=full, progress=progress)
                return self.last_sync
        except IndexCorrupt:
            if self.readonly:
                raise
        return self.rebuild(progress=progress)

    def read_files(self, progress: Progress | None = None) -> FilesReport:
        """Read into the index the file lists of this store's layers never read (each diff
        ID once, shared with every store of the index), and drop the lists no store holds
        any more (``progress(phase, done, total)``: told layer by layer)."""
        from imagestore.sync.files import read_files

        with self.index.write() as tx:
            return read_files(tx, self.root, progress)

    def rebuild(self, *, progress: Progress | None = None) -> SyncReport:
        """Set a damaged index aside and build it again from the root (it is derived data:
        nothing is lost)."""
        reports: list[SyncReport] = []
        self.index.rebuild(lambda tx: reports.append(run(tx, self.root, progress=progress)))
        self.last_sync = reports[-1]
        return self.last_sync


__all__ = ["Deletion", "Store", "image_id_of"]
