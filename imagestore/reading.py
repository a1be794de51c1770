"""The store's questions (moby's ``Get``, ``Search``, ``GetParent``, ``Children``, ``Map``,
``Heads``, ``Len``), answered in SQL by any index that hands out ``Reader`` snapshots: the
whole index of a ``Store``, or the ``QuickIndex`` a warm command line reads through without
SQLAlchemy."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from imagestore.errors import AmbiguousImageID, ImageNotFound
from imagestore.index.fastread import Result
from imagestore.index.queries import Reader
from imagestore.moby.digest import (
    PREFIX,
    is_hex64,
    normalize_id,
    parse_search_term,
    prefix_upper_bound,
)
from imagestore.moby.gotime import parse_time
from imagestore.moby.image import Image
from imagestore.moby.references import normalize_reference
from imagestore.moby.root import Root

MAX_CANDIDATES = 1000
MAX_NAME = 4096  # longer than any reference docker accepts
R = TypeVar("R", bound="Reading")


class Readable(Protocol):
    """What answering questions needs of an index."""

    def read(self) -> contextlib.AbstractContextManager[Reader]: ...

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None
            ) -> Result: ...

    def location(self) -> str: ...

    def revision(self) -> str | None: ...

    def close(self) -> None: ...


def image_id_of(value: str) -> str:
    """A full ID from user input, or ``ImageNotFound`` (never a path from garbage)."""
    image_id = normalize_id(value) if isinstance(value, str) else None
    if image_id is None:
        raise ImageNotFound(f"No such image: {str(value)[:100]!r} is not a full image ID")
    return image_id


def require(reader: Reader, image_id: str, message: str = "No such image") -> None:
    if not reader.has_image(image_id):
        raise ImageNotFound(f"{message}: {image_id}")


class Reading:
    """An image root and an index that mirrors it, for reading only."""

    def __init__(self, root: Path, index: Readable) -> None:
        self.root = Root(root)
        self.index = index

    def close(self) -> None:
        self.index.close()

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def get(self, image_id: str) -> Image:
        image_id = image_id_of(image_id)
        with self.index.read() as q:
            row = q.image(image_id)
        if row is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return Image(image_id, *row)

    def resolve(self, name: str) -> str:
        """The image a name stands for, as docker resolves one (moby daemon/images
        ``GetImage``): a full ID, then a reference of ``repositories.json`` (``web`` is
        ``web:latest``), then a unique ID prefix. ``ImageNotFound`` names it as moby's
        ``ErrImageDoesNotExist`` does; an ambiguous prefix is ``AmbiguousImageID``."""
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or "\x00" in name:
            raise ImageNotFound(f"No such image: {str(name)[:100]!r}")
        full = normalize_id(name)
        if full is not None and full in self:
            return full
        key = normalize_reference(name)
        with self.index.read() as q:
            target = q.tag_target(key)
            if target is not None and q.has_image(target):
                return target
        try:
            return self.search(name)
        except ImageNotFound:
            # moby's message: a name with its default tag, a bare ID as a digest
            raise ImageNotFound(f"No such image: {'sha256:' if is_hex64(name) else ''}"
                                f"{key}") from None

    def search(self, term: str) -> str:
        """The one ID starting with ``term`` (moby's digest-set rules, no minimum length)."""
        parsed = parse_search_term(term) if isinstance(term, str) else None
        if parsed is None or not parsed.possible or not parsed.hex_prefix:
            raise ImageNotFound(f"No such image: {str(term)[:100]}")
        lo, hi = PREFIX + parsed.hex_prefix, prefix_upper_bound(parsed.hex_prefix)
        with self.index.read() as q:
            ids = q.prefix(lo, hi, 2)
            if len(ids) > 1:
                raise AmbiguousImageID(term, q.prefix(lo, hi, MAX_CANDIDATES))
        if not ids:
            raise ImageNotFound(f"No such image: {term}")
        return ids[0]

    def get_parent(self, image_id: str) -> str | None:
        image_id = image_id_of(image_id)
        with self.index.read() as q:
            require(q, image_id)
            return q.parent(image_id)

    def children(self, image_id: str) -> list[str]:
        image_id = image_id_of(image_id)
        with self.index.read() as q:
            return q.children(image_id)

    def map(self) -> dict[str, Image]:
        with self.index.read() as q:
            return {i: Image(i, raw, parent) for i, (raw, parent) in q.images().items()}

    def heads(self) -> dict[str, Image]:
        """Images that no image in the store names as its parent."""
        with self.index.read() as q:
            rows = q.images(heads_only=True)
        return {i: Image(i, raw, parent) for i, (raw, parent) in rows.items()}

    def __len__(self) -> int:
        with self.index.read() as q:
            return q.count_images()

    def __contains__(self, image_id: object) -> bool:
        full = normalize_id(image_id) if isinstance(image_id, str) else None
        if full is None:
            return False
        with self.index.read() as q:
            return q.has_image(full)

    def get_last_updated(self, image_id: str) -> datetime | None:
        value = self._meta(image_id)[0]
        return parse_time(value) if value else None

    def is_built_locally(self, image_id: str) -> bool:
        return self._meta(image_id)[1]

    def _meta(self, image_id: str) -> tuple[str | None, bool]:
        image_id = image_id_of(image_id)
        with self.index.read() as q:
            meta = q.image_meta(image_id)
        if meta is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return meta


__all__ = ["MAX_CANDIDATES", "Readable", "Reading", "image_id_of", "require"]
