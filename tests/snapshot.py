"""What a store answers, as one comparable value: an incrementally kept index must give
exactly what a full rebuild from disk gives."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import select

import imagestore
from imagestore.index import schema


def snapshot(store: imagestore.Store) -> dict[str, Any]:
    images = store.map()
    with store.index.engine.connect() as conn:
        layers = sorted(tuple(r) for r in conn.execute(
            select(schema.layers.c.chain_id, schema.layers.c.size, schema.layers.c.parent_id)))
        rows = sorted(tuple(r) for r in conn.execute(
            select(schema.images.c.id, schema.images.c.last_updated,
                   schema.images.c.built_locally, schema.images.c.chain_id)))
        tags = sorted(tuple(r) for r in conn.execute(
            select(schema.tags.c.ref, schema.tags.c.image_id)))
    return {
        "ids": sorted(images),
        "parents": {i: img.parent for i, img in images.items()},
        "heads": sorted(store.heads()),
        "children": {i: store.children(i) for i in images},
        "len": len(store),
        "rows": rows,
        "layers": layers,
        "tags": tags,
        "problems": sorted((p.path, p.kind) for p in store.sync().problems),
    }


def rebuilt(root: Path, tmp: Path) -> dict[str, Any]:
    """The snapshot of a brand-new index built from the root."""
    index = tmp / f"fresh-{len(list(tmp.glob('fresh-*')))}.sqlite"
    with imagestore.open(root, index, readonly=True) as fresh:
        return snapshot(fresh)


def references(store: imagestore.Store, image_id: str) -> list[str]:
    """The references ``repositories.json`` holds for an image, as the index has them."""
    with store.index.read() as q:
        return q.refs_of(image_id)


def size(store: imagestore.Store, image_id: str) -> int:
    """docker's ``Size`` of an image: its whole layer chain."""
    with store.index.read() as q:
        value = q.image_size(image_id)
    assert value is not None
    return value


def dump(index: Path) -> list[str]:
    """An SQLite index's whole content as SQL, to show that nothing in it changed."""
    conn = sqlite3.connect(index)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()
