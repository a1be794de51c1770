"""Every question the store and the command line ask the index inside one transaction.

"Head" is defined once, here (``is_head``): an image that no image names as its parent. The
``image_list`` view of revision 0002 says the same in SQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, exists, func, select, text

from imagestore.index import schema
from imagestore.index.backends import Backend

# The recursive walk up the parent edges, for the cycle check of ``set_parent``.
_ANCESTORS = text(
    "WITH RECURSIVE up(id) AS (SELECT id FROM images WHERE store_id = :s AND id = :id UNION "
    "SELECT p.parent_id FROM image_parents p JOIN up ON p.store_id = :s AND p.child_id = up.id) "
    "SELECT id FROM up"
)


def is_head() -> Any:
    """True for an image that no image of its store names as its parent."""
    child, t = schema.parents.alias("child"), schema.images
    return ~exists().where(child.c.store_id == t.c.store_id, child.c.parent_id == t.c.id)


def edge_of(p: Any, t: Any) -> Any:
    """The join of an image to its own parent edge."""
    return (p.c.store_id == t.c.store_id) & (p.c.child_id == t.c.id)


def layer_of(lt: Any, t: Any) -> Any:
    """The join of an image to its top layer."""
    return (lt.c.store_id == t.c.store_id) & (lt.c.chain_id == t.c.chain_id)


class Reader:
    """Reads of one store's rows inside one transaction of the index."""

    def __init__(self, conn: Connection, backend: Backend, store: int) -> None:
        self.conn = conn
        self.backend = backend
        self.store = store

    # -- images -------------------------------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        t = schema.images
        return self.conn.execute(select(t.c.id).where(
            t.c.store_id == self.store, t.c.id == image_id)).first() is not None

    def image(self, image_id: str) -> tuple[bytes, str | None] | None:
        """(config bytes, parent ID) of one image."""
        t, p = schema.images, schema.parents
        row = self.conn.execute(select(t.c.raw, p.c.parent_id)
                                .outerjoin(p, edge_of(p, t))
                                .where(t.c.store_id == self.store, t.c.id == image_id)).first()
        return None if row is None else (row.raw, row.parent_id)

    def images(self, *, heads_only: bool = False) -> dict[str, tuple[bytes, str | None]]:
        """ID -> (config bytes, parent ID) of every image, or of the heads only."""
        t, p = schema.images, schema.parents
        query = (select(t.c.id, t.c.raw, p.c.parent_id).outerjoin(p, edge_of(p, t))
                 .where(t.c.store_id == self.store))
        if heads_only:
            query = query.where(is_head())
        return {r.id: (r.raw, r.parent_id) for r in self.conn.execute(query)}

    def count_images(self) -> int:
        t = schema.images
        return int(self.conn.scalar(select(func.count()).select_from(t)
                                    .where(t.c.store_id == self.store)) or 0)

    def image_chain(self, image_id: str) -> tuple[str | None] | None:
        """The image's top layer as a 1-tuple (its chain ID may be ``None``), or ``None``
        when there is no such image."""
        t = schema.images
        row = self.conn.execute(select(t.c.chain_id).where(
            t.c.store_id == self.store, t.c.id == image_id)).first()
        return None if row is None else (row.chain_id,)

    def image_meta(self, image_id: str) -> tuple[str | None, bool] | None:
        """(``lastUpdated``, ``builtLocally``) of one image."""
        t = schema.images
        row = self.conn.execute(select(t.c.last_updated, t.c.built_locally)
                                .where(t.c.store_id == self.store, t.c.id == image_id)).first()
        return None if row is None else (row.last_updated, bool(row.built_locally))

    def image_size(self, image_id: str) -> int | None:
        """Bytes of the image's whole layer chain (docker's ``Size``)."""
        t, lt = schema.images, schema.layers
        value = self.conn.scalar(select(func.coalesce(lt.c.size, 0)).select_from(t)
                                 .outerjoin(lt, layer_of(lt, t))
                                 .where(t.c.store_id == self.store, t.c.id == image_id))
        return None if value is None else int(value)

    # -- the parent graph ---------------------------------------------------------------------
    def parent(self, image_id: str) -> str | None:
        p = schema.parents
        return self.conn.scalar(select(p.c.parent_id).where(
            p.c.store_id == self.store, p.c.child_id == image_id))

    def children(self, image_id: str) -> list[str]:
        p = schema.parents
        return list(self.conn.scalars(
            select(p.c.child_id).where(p.c.store_id == self.store, p.c.parent_id == image_id)
            .order_by(p.c.child_id)))

    def ancestors(self, image_id: str) -> set[str]:
        """The image and every image above it through parent edges."""
        return set(self.conn.scalars(_ANCESTORS, {"s": self.store, "id": image_id}))

    # -- layers and tags ----------------------------------------------------------------------
    def has_layer(self, chain: str) -> bool:
        lt = schema.layers
        return self.conn.execute(
            select(lt.c.chain_id).where(lt.c.store_id == self.store, lt.c.chain_id == chain)
        ).first() is not None

    def tag_target(self, ref: str) -> str | None:
        tt = schema.tags
        return self.conn.scalar(select(tt.c.image_id).where(
            tt.c.store_id == self.store, tt.c.ref == ref))

    def refs_of(self, image_id: str) -> list[str]:
        tt = schema.tags
        return list(self.conn.scalars(
            select(tt.c.ref).where(tt.c.store_id == self.store, tt.c.image_id == image_id)
            .order_by(tt.c.ref)))

    # -- what the syncs skipped ---------------------------------------------------------------
    def problems(self) -> list[tuple[str, str, str]]:
        """(path, kind, reason) of every entry the syncs skipped, by path."""
        p = schema.problems
        return [(r.path, r.kind, r.reason)
                for r in self.conn.execute(select(p.c.path, p.c.kind, p.c.reason)
                                           .where(p.c.store_id == self.store)
                                           .order_by(p.c.path))]


__all__ = ["Reader", "edge_of", "is_head", "layer_of"]
