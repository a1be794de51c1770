"""Whole-index reads for listings and checks: each is a few set-based queries answered from
one snapshot through the backend's fast reader, rows as plain tuples."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, func, select

from imagestore.index import schema
from imagestore.index.queries import is_head

if TYPE_CHECKING:
    from imagestore.index.database import Index

# (image ID, created, parent ID, chain size, is a head)
ListedImage = tuple[str, str | None, str | None, int | None, bool]


def listed_images(index: Index, *, all_images: bool, dangling: bool
                  ) -> tuple[list[ListedImage], list[tuple[str, str, str | None]]]:
    """The images ``docker images`` may list, and every (image ID, repository, tag), sorted.

    The database drops what will not be listed (most images are intermediates): untagged
    heads for ``dangling``, heads and tagged images without ``all_images``."""
    t, p, lt, tt = schema.images, schema.parents, schema.layers, schema.tags
    head = is_head()
    tagged = exists().where(tt.c.image_id == t.c.id)
    query = (select(t.c.id, t.c.created, p.c.parent_id, lt.c.size, head.label("head"))
             .outerjoin(p, p.c.child_id == t.c.id)
             .outerjoin(lt, lt.c.chain_id == t.c.chain_id))
    if dangling:
        query = query.where(head, ~tagged)
    elif not all_images:
        query = query.where(head | tagged)
    refs = select(tt.c.image_id, tt.c.repository, tt.c.tag).order_by(tt.c.repository, tt.c.tag)
    images, tags = index.fetch(query, refs)
    return images, tags


def graph(index: Index) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Every image ID (sorted), every (child, parent) edge, every (image ID, ref) by ref."""
    t, p, tt = schema.images, schema.parents, schema.tags
    ids, edges, refs = index.fetch(select(t.c.id).order_by(t.c.id),
                                   select(p.c.child_id, p.c.parent_id),
                                   select(tt.c.image_id, tt.c.ref).order_by(tt.c.ref))
    return [r[0] for r in ids], edges, refs


def contents(index: Index) -> dict[str, set[tuple[Any, ...]]]:
    """What the index holds, as comparable sets of rows by kind (an index kept up to date
    incrementally must hold what a rebuild from disk holds)."""
    t, p, lt, mt, tt = (schema.images, schema.parents, schema.layers, schema.mounts,
                        schema.tags)
    kinds = {
        "image": select(t.c.id, t.c.chain_id, t.c.last_updated, t.c.built_locally),
        "parent link": select(p.c.child_id, p.c.parent_id),
        "layer": select(lt.c.chain_id, lt.c.diff_id, lt.c.parent_id, lt.c.diff_size, lt.c.size),
        "mount": select(mt.c.name, mt.c.parent_id),
        "tag": select(tt.c.ref, tt.c.image_id),
    }
    results = index.fetch(*kinds.values())
    return {kind: {tuple(r) for r in rows} for kind, rows in zip(kinds, results, strict=True)}


def configs(index: Index) -> dict[str, bytes]:
    """Image ID -> config bytes of every image."""
    t = schema.images
    (rows,) = index.fetch(select(t.c.id, t.c.raw))
    return {r[0]: bytes(r[1]) for r in rows}


def counts(index: Index) -> dict[str, int]:
    """How many images, layers, tags and problems the index holds."""
    tables = {"images": schema.images, "layers": schema.layers, "tags": schema.tags,
              "problems": schema.problems}
    results = index.fetch(*(select(func.count()).select_from(t) for t in tables.values()))
    return {name: int(rows[0][0]) for name, rows in zip(tables, results, strict=True)}


__all__ = ["ListedImage", "configs", "contents", "counts", "graph", "listed_images"]
