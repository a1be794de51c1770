"""A containerd store's rows, written whole by its sync (``ctdread`` reads them back).

A containerd store fills the ``ctd_*`` tables with what containerd holds, and ``images``,
``image_parents``, ``tags``, ``layers`` and ``mounts`` with what Docker 29 shows (an image ID
is a target digest, parents come from the parent label, a container's snapshot keeps its
image's top layer), so that search, parents, children, heads and the views answer for both
kinds of store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, update

from imagestore.index import schema
from imagestore.index.ctdread import KIND, SIGNATURE
from imagestore.index.engine import ROW_BATCH, batches, bulk_load
from imagestore.index.queries import CTD_COLUMNS
from imagestore.index.rows import (
    EDGE_COLUMNS,
    IMAGE_COLUMNS,
    LAYER_COLUMNS,
    MOUNT_COLUMNS,
    TAG_COLUMNS,
)
from imagestore.index.writes import Writer

COLUMNS: dict[str, tuple[str, ...]] = {
    **CTD_COLUMNS,
    "ctd_snapshots": ("snapshotter", "key", "parent", "backend", "backend_id", "kind",
                      "size", "inodes"),
    "images": IMAGE_COLUMNS,
    "image_parents": EDGE_COLUMNS,
    "tags": TAG_COLUMNS,
    "layers": LAYER_COLUMNS,
    "mounts": MOUNT_COLUMNS,
    "problems": ("path", "kind", "reason", "found_at"),
}
# Written whole at each sync (``settings`` and ``entry_buckets`` are not the sync's rows).
REPLACED = ("image_parents", "images", "tags", "layers", "mounts", "problems", *schema.CTD_TABLES)


@dataclass
class Rows:
    """Every row a containerd store's sync writes, table by table."""

    tables: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {name: [] for name in COLUMNS})

    def add(self, table: str, *values: Any) -> None:
        self.tables[table].append(values)


def replace(tx: Writer, rows: Rows, signature: str) -> None:
    """The store's rows become ``rows`` (one transaction: readers see before or after)."""
    tables = [schema.Base.metadata.tables[table] for table in REPLACED]
    for t in tables:
        tx.conn.execute(delete(t).where(t.c.store_id == tx.store))
    # A first sync into an index of its own fills empty tables: their secondary indexes
    # are built once, at the end.
    with bulk_load(tx.conn, tables, sum(len(v) for v in rows.tables.values())):
        for table, values in rows.tables.items():
            for part in batches(values, ROW_BATCH):
                tx.backend.bulk_insert(tx.conn, table, COLUMNS[table], part, store=tx.store)
    tx.buckets.set_setting(SIGNATURE, signature)


def mark_kind(tx: Writer, namespace: str) -> None:
    st = schema.stores
    tx.conn.execute(update(st).where(st.c.id == tx.store).values(kind=KIND,
                                                                 namespace=namespace))


def signature_of(tx: Writer) -> str | None:
    return tx.buckets.setting(SIGNATURE)


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


__all__ = ["COLUMNS", "KIND", "Rows", "dumps", "mark_kind", "replace", "signature_of"]

