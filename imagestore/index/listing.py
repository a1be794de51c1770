"""Whole-index reads for listings and checks: each is a few set-based queries answered from
one snapshot through the backend's fast reader, rows as plain tuples."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select

from imagestore.index import schema
from imagestore.index.engine import IN_BATCH, batches
from imagestore.index.queries import is_head

if TYPE_CHECKING:
    from imagestore.index.database import Index

def contents(index: Index) -> dict[str, set[tuple[Any, ...]]]:
    """What the index holds, as comparable sets of rows by kind (an index kept up to date
    incrementally must hold what a rebuild from disk holds)."""
    t, p, lt, mt, tt = (schema.images, schema.parents, schema.layers, schema.mounts,
                        schema.tags)
    s = index.store_id
    kinds = {
        "image": select(t.c.id, t.c.chain_id, t.c.last_updated, t.c.built_locally)
        .where(t.c.store_id == s),
        "parent link": select(p.c.child_id, p.c.parent_id).where(p.c.store_id == s),
        "layer": select(lt.c.chain_id, lt.c.diff_id, lt.c.parent_id, lt.c.diff_size, lt.c.size)
        .where(lt.c.store_id == s),
        "mount": select(mt.c.name, mt.c.parent_id).where(mt.c.store_id == s),
        "tag": select(tt.c.ref, tt.c.image_id).where(tt.c.store_id == s),
    }
    results = index.fetch(*kinds.values())
    return {kind: {tuple(r) for r in rows} for kind, rows in zip(kinds, results, strict=True)}


def configs(index: Index) -> dict[str, bytes]:
    """Image ID -> config bytes of every image."""
    t = schema.images
    (rows,) = index.fetch(select(t.c.id, t.c.raw).where(t.c.store_id == index.store_id))
    return {r[0]: bytes(r[1]) for r in rows}


# -- what deleting and pruning images ask (moby's ImageDelete and ImagesPrune) ------------------
# (image ID, top chain ID, created, lastUpdated)
GraphImage = tuple[str, str | None, str | None, str | None]
# (chain ID, parent chain ID, own size, cache ID)
GraphLayer = tuple[str, str | None, int, str]


def delete_graph(index: Index) -> tuple[list[GraphImage], list[tuple[str, str]],
                                        list[tuple[str, str, str | None, str | None, str]],
                                        list[GraphLayer], list[tuple[str, str | None]]]:
    """What the daemon keeps in memory to delete images, from one snapshot: every image,
    every (child, parent) edge, every reference (ref, repository, tag, digest, image ID),
    every layer, every container mount (name, parent chain ID). No config is read."""
    t, p, lt, mt, tt = (schema.images, schema.parents, schema.layers, schema.mounts,
                        schema.tags)
    s = index.store_id
    images, edges, refs, layers, mounts = index.fetch(
        select(t.c.id, t.c.chain_id, t.c.created, t.c.last_updated).where(t.c.store_id == s),
        select(p.c.child_id, p.c.parent_id).where(p.c.store_id == s),
        select(tt.c.ref, tt.c.repository, tt.c.tag, tt.c.digest, tt.c.image_id)
        .where(tt.c.store_id == s),
        select(lt.c.chain_id, lt.c.parent_id, lt.c.diff_size, lt.c.cache_id)
        .where(lt.c.store_id == s),
        select(mt.c.name, mt.c.parent_id).where(mt.c.store_id == s))
    return images, edges, refs, layers, mounts


def prune_candidates(index: Index, *, dangling: bool) -> list[tuple[str, str | None]]:
    """(image ID, created) of what ``docker image prune`` considers, by ID: the heads
    (``dangling``) or every image, less the images without a reference that have children
    (intermediates: moby's ImagesPrune skips them)."""
    t, tt = schema.images, schema.tags
    head = is_head()
    has_refs = exists().where(tt.c.store_id == t.c.store_id, tt.c.image_id == t.c.id)
    query = (select(t.c.id, t.c.created).where(t.c.store_id == index.store_id)
             .where(head if dangling else has_refs | head).order_by(t.c.id))
    (rows,) = index.fetch(query)
    return [(r[0], r[1]) for r in rows]


def configs_of(index: Index, image_ids: list[str]) -> dict[str, bytes]:
    """Image ID -> config bytes of these images only (a label filter judges candidates)."""
    t = schema.images
    out: dict[str, bytes] = {}
    for chunk in batches(image_ids, IN_BATCH):
        (rows,) = index.fetch(select(t.c.id, t.c.raw).where(t.c.store_id == index.store_id,
                                                            t.c.id.in_(chunk)))
        out.update((r[0], bytes(r[1])) for r in rows)
    return out


__all__ = ["GraphImage", "GraphLayer", "configs", "configs_of", "contents",
           "delete_graph", "prune_candidates"]
