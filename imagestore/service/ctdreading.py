"""``ContainerdReading``: one namespace of containerd's image store, read-only, answering as
Docker 29's containerd image service does (moby daemon/containerd, beside daemon/images)
from any index that hands out readers: the quick index of a warm command line included,
which imports no SQLAlchemy. ``ContainerdHost`` (``ctdhost``) adds the sync, save and fsck."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, NoReturn

from imagestore.containerd.content import Platform
from imagestore.containerd.layout import Layout
from imagestore.errors import ReadOnlyKind
from imagestore.index.ctdread import KIND, load
from imagestore.reading import Readable, Reading
from imagestore.sync.ctdfresh import unchanged

if TYPE_CHECKING:
    from imagestore.containerd.images import Image
    from imagestore.containerd.meta import ContainerRecord
    from imagestore.service.ctdmodels import CtdImageCollection


class ContainerdReading(Reading):
    """A namespace of a containerd root, for reading, from its index."""

    kind = KIND
    readonly = True

    def __init__(self, layout: Layout, namespace: str, index: Readable,
                 platform: Platform | None = None) -> None:
        super().__init__(layout.root, index)
        self.layout = layout
        self.namespace = namespace
        self.platform = platform

    def fresh(self) -> bool:
        """Nothing a sync reads has changed since the last one (a few stats)."""
        with self.index.read() as q:
            return unchanged(self.layout, self.namespace, q, self.platform)

    def inventory(self) -> tuple[list[Image], dict[str, ContainerRecord]]:
        """Every image of the namespace and its containers, as the last sync read them."""
        with self.index.read() as q:
            return load(q)

    @cached_property
    def images(self) -> CtdImageCollection:
        """docker-py's ``client.images``, as Docker 29 answers."""
        from imagestore.service.ctdmodels import CtdImageCollection

        return CtdImageCollection(self)

    def refuse(self, what: str) -> NoReturn:
        raise ReadOnlyKind(KIND, what, self.namespace)


__all__ = ["KIND", "ContainerdReading"]
