"""``ContainerdHost``: what ``imagestore.open`` returns for a namespace of a containerd root:
``ContainerdReading``'s answers with the sync, ``save`` and ``fsck`` of a ``Host``, and
every write of one refused before anything is touched (``ReadOnlyKind``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NoReturn

from imagestore.containerd.content import Platform
from imagestore.containerd.layout import Layout
from imagestore.index import Index
from imagestore.moby.drivers import Driver
from imagestore.service.ctdreading import KIND, ContainerdReading
from imagestore.service.host import Host
from imagestore.sync.report import Progress, SyncReport

if TYPE_CHECKING:
    from imagestore.saving import Output
    from imagestore.service.check import Finding
    from imagestore.store import Deletion
    from imagestore.sync.files import FilesReport


class ContainerdHost(ContainerdReading, Host):
    """A namespace of a containerd root and its index. Use ``imagestore.open``."""

    index: Index

    def __init__(self, layout: Layout, namespace: str, index: Index,
                 platform: Platform | None = None) -> None:
        Host.__init__(self, layout.root, index, readonly=True)
        self.layout = layout
        self.namespace = namespace
        self.platform = platform

    # -- the index against the disk ----------------------------------------------------------
    def sync(self, *, full: bool = False, progress: Progress | None = None) -> SyncReport:
        """Read the namespace again and replace its rows (every sync of a containerd store
        reads it whole; ``full`` changes nothing)."""
        from imagestore.sync.containerd import run

        with self.index.write() as tx:
            self.last_sync = run(tx, self.layout, self.namespace, platform=self.platform,
                                 progress=progress)
        return self.last_sync

    def rebuild(self, *, progress: Progress | None = None) -> SyncReport:
        from imagestore.sync.containerd import run

        reports: list[SyncReport] = []
        self.index.rebuild(lambda tx: reports.append(run(
            tx, self.layout, self.namespace, platform=self.platform, progress=progress)))
        self.last_sync = reports[-1]
        return self.last_sync

    def read_files(self, progress: Progress | None = None) -> FilesReport:
        """The file lists of the namespace's layers never read (by any store of the index),
        from their blobs in the content store (see ``sync.ctdfiles``)."""
        from imagestore.sync.ctdfiles import read_containerd_files

        with self.index.write() as tx:
            return read_containerd_files(tx, self.layout, progress)

    def driver(self) -> Driver | None:
        return None  # containerd's snapshots are not a graph driver's folders

    def held_layers(self) -> frozenset[str]:
        return frozenset()

    # -- save and fsck -------------------------------------------------------------------------
    def save(self, refs: Iterable[str], out: Output, *, format: str = "oci") -> int:
        """``docker save`` from the content store (see ``service.ctdsave``)."""
        from imagestore.service.ctdsave import save_images

        return save_images(self, [refs] if isinstance(refs, str) else list(refs), out,
                           format=format)

    def layer_tar(self, layer: str) -> Iterator[bytes]:
        self.refuse("layer-tar")

    def check(self, layers: bool = False) -> list[Finding]:
        """What ``fsck`` reports on the namespace, read from the disk (never written)."""
        from imagestore.service.ctdcheck import check

        return check(self)

    # -- writes: refused ---------------------------------------------------------------------
    def check_delete(self) -> NoReturn:
        self.refuse("rm")

    def repair(self, findings: list[Finding] | None = None) -> NoReturn:
        self.refuse("fsck --repair")

    def create(self, config: bytes) -> NoReturn:
        self.refuse("create")

    def delete_image(self, image_id: str) -> Deletion:
        self.refuse("rm")

    def set_parent(self, image_id: str, parent: str) -> NoReturn:
        self.refuse("set-parent")

    def tag(self, image_id: str, repository: str, tag: str | None = None) -> NoReturn:
        self.refuse("tag")

    def untag(self, ref: str) -> NoReturn:
        self.refuse("untag")

    def drop_references(self, image_ids: Iterable[str]) -> NoReturn:
        self.refuse("untag")


__all__ = ["KIND", "ContainerdHost"]
