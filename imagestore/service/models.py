"""The Docker SDK for Python's ``client.images`` (docker-py docker/models/images.py),
offline: the same names, arguments, return shapes and meanings as docker-py over the
engine's API, so a script moves to a daemonless host by changing the line that makes the
client. Every answer is the engine's (``inspect``, ``selection``, ``delete``, ``prune``)."""

from __future__ import annotations

import builtins
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from imagestore.errors import ImageStoreError
from imagestore.moby.digest import truncate_id
from imagestore.service.filters import FILTERS
from imagestore.service.selection import api_filters

if TYPE_CHECKING:
    from imagestore.service.files import FileEntry
    from imagestore.store import Store


class ImageModel:
    """docker-py's ``Image``: ``attrs`` is exactly what ``GET /images/{name}/json`` gives."""

    def __init__(self, attrs: dict[str, Any], collection: ImageCollection) -> None:
        self.attrs = attrs
        self.collection = collection

    def __repr__(self) -> str:
        return f"<Image: '{', '.join(self.tags)}'>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageModel) and other.id == self.id

    def __hash__(self) -> int:
        return hash(f"ImageModel:{self.id}")

    @property
    def id(self) -> str:
        return str(self.attrs["Id"])

    @property
    def short_id(self) -> str:
        """docker-py's: ``sha256:`` and the first ten hex digits."""
        return self.id[:17] if self.id.startswith("sha256:") else self.id[:10]

    @property
    def labels(self) -> dict[str, str]:
        config = self.attrs.get("Config") or {}
        return dict(config.get("Labels") or {})

    @property
    def tags(self) -> list[str]:
        return [t for t in self.attrs.get("RepoTags") or [] if t != "<none>:<none>"]

    def reload(self) -> None:
        self.attrs = self.collection.get(self.id).attrs

    def history(self) -> list[dict[str, Any]]:
        """``GET /images/{name}/history``."""
        from imagestore.service.inspect import image_history

        return image_history(self.collection.store, self.id)

    def files(self) -> builtins.list[FileEntry]:
        """The image's merged filesystem, one entry per path, sorted (its layers' file lists
        are read into the index on first need)."""
        from imagestore.service.files import image_files

        return image_files(self.collection.store, self.id)

    def waste(self) -> dict[str, Any]:
        """dive's wasted space and efficiency of the image (``service.files.waste``)."""
        from imagestore.service.files import waste

        return waste(self.collection.store, self.id)

    def tag(self, repository: str, tag: str | None = None, force: bool = False,
            **kwargs: Any) -> bool:
        """Tag the image as ``docker tag`` (``force`` is accepted, as the engine has
        ignored it since API 1.25: a tag always moves)."""
        self.collection.store.tag(self.id, repository, tag)
        return True

    def save(self, chunk_size: int = 2097152, named: bool | str = False, *,
             format: str = "oci") -> Iterator[bytes]:
        """The ``docker save`` archive of the image, in chunks. ``named``: record the
        image's first tag (or the tag given, which must be one of its tags), as docker-py
        does; otherwise the archive names the image by ID. ``format``: ``"oci"`` (Docker 25
        and later) or ``"legacy"`` (Docker 24 and earlier). The archive is written whole
        (to a temporary file) before the first chunk: a layer that fails fails here."""
        name = self.id
        if named:
            if isinstance(named, str):
                if named not in self.tags:
                    raise ImageStoreError(f"{named} is not a valid tag for this image")
                name = named
            elif self.tags:
                name = self.tags[0]
        spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _chunks, or below)
        try:
            self._write_archive(name, spool, format)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return _chunks(spool, chunk_size)

    def _write_archive(self, name: str, out: BinaryIO, format: str) -> None:
        from imagestore.saving import save

        save(self.collection.store, [name], out, format=format)


def _chunks(spool: IO[bytes], size: int) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(size):
            yield chunk


class ImageCollection:
    """docker-py's ``ImageCollection`` (``client.images``) over a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, name: str) -> ImageModel:
        """An image by full ID, ID prefix, ``repo:tag`` or ``repo@digest``;
        ``ImageNotFound`` when there is none."""
        from imagestore.service.inspect import image_attrs

        image_id = self.store.resolve(name)
        return ImageModel(image_attrs(self.store, image_id, self.store.driver()), self)

    def list(self, name: str | None = None, all: bool = False,
             filters: dict[str, Any] | None = None) -> list[ImageModel]:
        """``GET /images/json``: ``name`` is docker-py's shorthand for the ``reference``
        filter; ``filters``: ``dangling``, ``label``, ``before``, ``since``,
        ``reference``."""
        from imagestore.service.selection import select_images

        filters = dict(filters or {})
        if name:
            filters["reference"] = name
        return [self.get(i) for i in select_images(self.store, all=all, filters=filters)]

    def remove(self, image: str, force: bool = False, noprune: bool = False
               ) -> builtins.list[dict[str, str]]:
        """``docker rmi``: the engine's ``Untagged``/``Deleted`` items (docker-py discards
        them). ``ImageConflict`` when a container, several repositories or a child image
        keep it; nothing is changed then."""
        # Imported here: reading (a containerd store's quick reader) must not load the index.
        from imagestore.service.delete import api_items, remove

        done = remove(self.store, [image], force=force, prune=not noprune)
        if done.errors:
            raise done.errors[0]
        return api_items(done.deleter.reported)

    def prune(self, filters: dict[str, Any] | None = None, *, unused_for: str | None = None,
              dry_run: bool = False) -> dict[str, Any]:
        """``docker image prune``: ``{"ImagesDeleted": [...] or None, "SpaceReclaimed":
        n}``. ``filters`` as the engine takes them (``dangling``: ``False`` for ``-a``;
        ``until``, ``label``, ``label!``). Beyond docker: ``unused_for`` keeps images used,
        tagged or arrived within that duration; ``dry_run`` changes nothing."""
        from imagestore.service import prune as pruning
        from imagestore.service.delete import api_items

        result = pruning.prune(self.store, filters=engine_filters(filters), dry_run=dry_run,
                               unused_for=unused_for)
        items = api_items(result.records)
        return {"ImagesDeleted": items or None, "SpaceReclaimed": result.space_reclaimed}

    def __repr__(self) -> str:
        return f"<ImageCollection of {truncate_id(self.store.root.base)}>"


def engine_filters(filters: dict[str, Any] | None) -> dict[str, set[str]]:
    """docker-py's prune filters as the engine's ``filters.Args``, checked as the engine's
    ``ImagesPrune`` checks them."""
    out = api_filters(filters)
    for key in out:
        if key not in FILTERS:
            raise ImageStoreError(f"Invalid filter '{key}'")  # the engine's words
    if len(out.get("until", ())) > 1:
        raise ImageStoreError("more than one until filter specified")
    return out


__all__ = ["ImageCollection", "ImageModel", "engine_filters"]
