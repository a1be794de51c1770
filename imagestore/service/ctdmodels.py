"""docker-py's ``client.images`` over a containerd store: the answers Docker 29's containerd
image service gives (``service.docker29``), names resolved as it resolves them, for the
store's platform; its writes refused (``ReadOnlyKind``)."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from imagestore.service import cri, docker29
from imagestore.service.models import ImageCollection, ImageModel

if TYPE_CHECKING:
    from imagestore.service.ctdreading import ContainerdReading


class CtdImageModel(ImageModel):
    """docker-py's ``Image`` of a containerd store (``attrs`` as Docker 29 inspects it)."""

    collection: CtdImageCollection

    def __init__(self, attrs: dict[str, Any], collection: CtdImageCollection,
                 name: str | None = None) -> None:
        super().__init__(attrs, collection)
        self.name = name  # the record the image was asked by (Docker 29 answers with it)

    def history(self) -> list[dict[str, Any]]:
        store = self.collection.store
        images, _ = store.inventory()
        image, record = docker29.resolve(self.name or self.id, images)
        return docker29.history(image, images, name=record.name, host=store.platform)

    def tag(self, repository: str, tag: str | None = None, force: bool = False,
            **kwargs: Any) -> bool:
        self.collection.store.refuse("tag")

    def _write_archive(self, name: str, out: BinaryIO, format: str) -> None:
        """From the content store's blobs, each checked as it streams (OCI layout and
        Docker's ``manifest.json``)."""
        from imagestore.service.ctdsave import save_images

        save_images(self.collection.store, [name], out, format=format)


class CtdImageCollection(ImageCollection):
    """``client.images`` of a containerd store (a quick reader's too: its ``store`` is any
    ``ContainerdReading``, not a classic ``Store``; only the methods here use it)."""

    store: ContainerdReading  # type: ignore[assignment]

    def __init__(self, store: ContainerdReading) -> None:
        self.store = store

    @property
    def _cri(self) -> bool:
        return self.store.namespace == cri.NAMESPACE

    def _named(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return cri.cri_view(attrs) if self._cri else attrs

    def get(self, name: str, *, manifests: bool = False) -> CtdImageModel:
        """An image by ID (its target digest), ID prefix, ``repo:tag`` or ``repo@digest``,
        as Docker 29 resolves it (``ImageNotFound`` with its message when none answers); in
        ``k8s.io`` also by the CRI's config ID, as ``crictl inspecti`` takes it."""
        images, containers = self.store.inventory()
        record_name = None
        if self._cri and cri.is_config_id(name):
            found = [(i, r) for i in images for r in i.records if r.name == name]
            image, record_name = (found[0][0], name) if found else (None, None)
        if record_name is None:
            image, record = docker29.resolve(name, images)
            record_name = record.name
        assert image is not None
        attrs = docker29.inspect(image, images, containers, manifests=manifests,
                                 name=record_name, host=self.store.platform)
        return CtdImageModel(self._named(attrs), self, record_name)

    def list(self, name: str | None = None, all: bool = False,
             filters: dict[str, Any] | None = None) -> builtins.list[ImageModel]:
        """``GET /images/json`` as Docker 29 answers it, each image as ``get`` gives it."""
        filters = dict(filters or {})
        if name:
            filters["reference"] = name
        images, containers = self.store.inventory()
        rows = docker29.list_rows(images, containers, all=all, filters=filters,
                                  host=self.store.platform)
        by_id = {i.id: i for i in images}
        return [CtdImageModel(self._named(docker29.inspect(by_id[r["Id"]], images, containers,
                                                           host=self.store.platform)), self)
                for r in rows]

    def rows(self, *, all: bool = False, filters: dict[str, Any] | None = None,
             manifests: bool = False, shared_size: bool = False) -> builtins.list[dict[str, Any]]:
        """``GET /images/json``'s own rows (what ``docker images`` prints)."""
        images, containers = self.store.inventory()
        rows = docker29.list_rows(images, containers, all=all, filters=filters,
                                  manifests=manifests, shared_size=shared_size,
                                  host=self.store.platform)
        return [self._named(r) for r in rows]

    def remove(self, image: str, force: bool = False, noprune: bool = False) -> NoReturn:
        self.store.refuse("rm")

    def prune(self, filters: dict[str, Any] | None = None, **kwargs: Any) -> NoReturn:
        self.store.refuse("prune")

    def __repr__(self) -> str:
        return f"<ImageCollection of {self.store.layout.root} namespace {self.store.namespace}>"


__all__ = ["CtdImageCollection", "CtdImageModel"]
