"""Every write to the index, inside one write transaction: the store's own writes, and the
set-based ones a sync makes (bulk inserts, deletes in batches, one table replaced whole).

The index is derived data: every row written here mirrors something on disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from imagestore.index import schema, stores
from imagestore.index.backends import Backend
from imagestore.index.buckets import Buckets
from imagestore.index.engine import IN_BATCH, ROW_BATCH, batches, bulk_load
from imagestore.index.location import stamp_due
from imagestore.index.queries import Reader, edge_of
from imagestore.index.rows import (
    EDGE_COLUMNS,
    IMAGE_COLUMNS,
    LAYER_COLUMNS,
    MOUNT_COLUMNS,
    PROBLEM_COLUMNS,
    TAG_COLUMNS,
    ImageRow,
    TagEntry,
)
from imagestore.moby.redact import redact_config

# A layer a delete released: (chain ID, diff ID, chain size, own size).
Released = tuple[str, str, int, int]
_RAW = IMAGE_COLUMNS.index("raw")
_BULK_TABLES = {"layers": (schema.layers,), "images": (schema.images, schema.parents)}
# (chain ID, parent chain ID, own size, chain size, depth)
LayerLink = tuple[str, str | None, int, int, int]
_SHA256 = "sha256:"
_ID_LENGTH = len(_SHA256) + 64


class Writer(Reader):
    """Reads and writes of one store's rows inside one write transaction of the index.

    ``redact``: configs are stored with their Env values and build arguments redacted (an
    index on a server collects a whole fleet's, see ``imagestore.moby.redact``)."""

    def __init__(self, conn: Connection, backend: Backend, store: int, *,
                 redact: bool = False) -> None:
        super().__init__(conn, backend, store)
        self.redact = redact
        self.buckets = Buckets(conn, backend, store)

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
                ) -> None:
        for part in batches(rows, ROW_BATCH):
            self.backend.bulk_insert(self.conn, table, columns, part, store=self.store)

    def _delete_in(self, column: Any, values: Iterable[str]) -> None:
        table = column.table
        for chunk in batches(sorted(values), IN_BATCH):
            self.conn.execute(delete(table).where(table.c.store_id == self.store,
                                                  column.in_(chunk)))

    def _stored(self, row: ImageRow) -> ImageRow:
        if not self.redact:
            return row
        return (*row[:_RAW], redact_config(row[_RAW]), *row[_RAW + 1:])

    @contextlib.contextmanager
    def bulk_load(self, tables: Literal["layers", "images"], expected: int) -> Iterator[None]:
        """A large load into empty tables builds their secondary indexes once, at the end."""
        with bulk_load(self.conn, _BULK_TABLES[tables], expected):
            yield

    # -- the store's writes -------------------------------------------------------------------
    def insert_image(self, row: ImageRow, parent: str | None) -> None:
        self._insert("images", IMAGE_COLUMNS, [self._stored(row)])
        self.set_parent(row[0], parent)

    def delete_image(self, image_id: str) -> None:
        """The image's row and every edge that names it (its children keep their rows)."""
        p, t = schema.parents, schema.images
        self.conn.execute(delete(p).where(p.c.store_id == self.store, p.c.parent_id == image_id))
        self.conn.execute(delete(t).where(t.c.store_id == self.store, t.c.id == image_id))

    def release(self, chain: str | None, held: Collection[str] = ()) -> list[Released]:
        """Remove the rows of layers left with no reference (from an image, a child layer or
        a container mount, or one the caller knows is ``held``: BuildKit's) once an image's
        row is gone, top first, as moby's layer store releases them."""
        t, lt, mt = schema.images, schema.layers, schema.mounts
        s = self.store
        released: list[Released] = []
        while chain is not None and chain not in held:
            refs = self.conn.execute(select(
                select(func.count()).where(t.c.store_id == s, t.c.chain_id == chain)
                .scalar_subquery()
                + select(func.count()).where(lt.c.store_id == s, lt.c.parent_id == chain)
                .scalar_subquery()
                + select(func.count()).where(mt.c.store_id == s, mt.c.parent_id == chain)
                .scalar_subquery()
            )).scalar_one()
            layer = self.conn.execute(select(lt).where(lt.c.store_id == s,
                                                       lt.c.chain_id == chain)).first()
            if refs or layer is None:
                break
            released.append((layer.chain_id, layer.diff_id, layer.size, layer.diff_size))
            self.conn.execute(delete(lt).where(lt.c.store_id == s, lt.c.chain_id == chain))
            chain = layer.parent_id
        return released

    def parent_edges(self) -> Iterator[tuple[str, str]]:
        """(child, parent) of every parent link."""
        p = schema.parents
        for r in self.conn.execute(select(p.c.child_id, p.c.parent_id)
                                   .where(p.c.store_id == self.store)):
            yield r.child_id, r.parent_id

    def parents_of(self, children: Iterable[str]) -> dict[str, str]:
        """Child -> parent of the parent links of these images."""
        p = schema.parents
        out: dict[str, str] = {}
        for chunk in batches(sorted(children), IN_BATCH):
            out.update((r[0], r[1]) for r in self.conn.execute(
                select(p.c.child_id, p.c.parent_id)
                .where(p.c.store_id == self.store, p.c.child_id.in_(chunk))).all())
        return out

    def set_parent(self, child: str, parent: str | None) -> None:
        p = schema.parents
        self.conn.execute(delete(p).where(p.c.store_id == self.store, p.c.child_id == child))
        if parent is not None:
            self.conn.execute(insert(p).values(store_id=self.store, child_id=child,
                                               parent_id=parent))

    def set_image_meta(self, image_id: str, *, last_updated: str | None = None,
                       built_locally: bool | None = None) -> None:
        values: dict[str, Any] = {}
        if last_updated is not None:
            values["last_updated"] = last_updated
        if built_locally is not None:
            values["built_locally"] = built_locally
        t = schema.images
        self.conn.execute(update(t).where(t.c.store_id == self.store, t.c.id == image_id)
                          .values(**values))

    def delete_tags_of(self, image_id: str) -> None:
        tt = schema.tags
        self.conn.execute(delete(tt).where(tt.c.store_id == self.store,
                                           tt.c.image_id == image_id))

    # -- a sync's writes: layers and mounts ---------------------------------------------------
    def clear(self) -> None:
        """Empty every table a sync fills (a full sync starts from nothing, and stores the
        configs it reads as the redaction rule of this open says)."""
        for table in (schema.parents, schema.images, schema.layers, schema.mounts, schema.tags,
                      schema.problems, schema.entry_buckets):
            self.conn.execute(delete(table).where(table.c.store_id == self.store))
        stores.set_redacted(self.conn, self.store, self.redact)

    def synced(self, changed: bool) -> None:
        """The store now mirrors its root. A sync that changed nothing writes nothing, unless
        the recorded time is over a minute old (a warm open stays a pure read)."""
        last = self.conn.scalar(select(schema.stores.c.last_sync)
                                .where(schema.stores.c.id == self.store))
        now = dt.datetime.now(dt.timezone.utc)
        if changed or stamp_due(last, now):
            stores.synced(self.conn, self.store, now)

    def has_layers(self) -> bool:
        lt = schema.layers
        return self.conn.execute(select(lt.c.chain_id).where(lt.c.store_id == self.store)
                                 .limit(1)).first() is not None

    def layer_ids(self) -> Iterator[str]:
        lt = schema.layers
        return iter(self.conn.scalars(select(lt.c.chain_id).where(lt.c.store_id == self.store)))

    def layer_links(self) -> Iterator[tuple[str, str | None, int, int, int]]:
        """(chain ID, parent chain ID, own size, chain size, depth) of every layer."""
        lt = schema.layers
        for r in self.conn.execute(select(lt.c.chain_id, lt.c.parent_id, lt.c.diff_size,
                                          lt.c.size, lt.c.depth)
                                   .where(lt.c.store_id == self.store)):
            yield r.chain_id, r.parent_id, r.diff_size, r.size, r.depth

    def layer_rows(self, chain_ids: Iterable[str], *, children: bool = False
                   ) -> list[LayerLink]:
        """``layer_links`` of these layers only (``children``: of the layers whose parent
        is one of them), for a sync that touches a few layers of a large store. Rows are
        fetched whole: one fetch per batch costs far less than one per row."""
        lt = schema.layers
        column = lt.c.parent_id if children else lt.c.chain_id
        out: list[LayerLink] = []
        for chunk in batches(sorted(chain_ids), IN_BATCH):
            out.extend((r[0], r[1], r[2], r[3], r[4]) for r in self.conn.execute(
                select(lt.c.chain_id, lt.c.parent_id, lt.c.diff_size, lt.c.size, lt.c.depth)
                .where(lt.c.store_id == self.store, column.in_(chunk))).all())
        return out

    def odd_layers(self) -> list[str]:
        """Chain IDs of layer rows no sync writes (an index edited by hand): a chain or
        parent that is not ``sha256:`` and 71 characters long. Asked of the two indexes that
        hold those columns, so a sync that touches a few layers does not read them all; the
        sync drops a row whose 64 characters are not hex when it meets it."""
        lt = schema.layers
        mine = lt.c.store_id == self.store

        def odd(column: Any) -> Any:
            return (func.length(column) != _ID_LENGTH) | (func.substr(column, 1, 7) != _SHA256)

        chains = set(self.conn.scalars(select(lt.c.chain_id).where(mine, odd(lt.c.chain_id))))
        parents = list(self.conn.scalars(select(lt.c.parent_id).distinct().where(
            mine, lt.c.parent_id.is_not(None), odd(lt.c.parent_id))))
        chains.update(r[0] for r in self.layer_rows(parents, children=True))
        return sorted(chains)

    def delete_layers(self, chain_ids: Iterable[str]) -> None:
        self._delete_in(schema.layers.c.chain_id, chain_ids)

    def insert_layers(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows in ``LAYER_COLUMNS`` order."""
        self._insert("layers", LAYER_COLUMNS, rows)

    def set_layer_size(self, chain_id: str, size: int, depth: int) -> None:
        lt = schema.layers
        self.conn.execute(update(lt).where(lt.c.store_id == self.store,
                                           lt.c.chain_id == chain_id)
                          .values(size=size, depth=depth))

    def replace_mounts(self, rows: Sequence[tuple[str, str, str, str | None]]) -> None:
        """Rows in ``MOUNT_COLUMNS`` order."""
        mt = schema.mounts
        self.conn.execute(delete(mt).where(mt.c.store_id == self.store))
        self._insert("mounts", MOUNT_COLUMNS, rows)

    # -- a sync's writes: images and tags -----------------------------------------------------
    def images_without_layer(self) -> list[str]:
        """Images whose top layer is not (or no longer) a layer of the index."""
        t, lt = schema.images, schema.layers
        return list(self.conn.scalars(select(t.c.id).where(
            t.c.store_id == self.store, t.c.chain_id.is_not(None),
            t.c.chain_id.not_in(select(lt.c.chain_id).where(lt.c.store_id == self.store)))))

    def images_on_layers(self, chain_ids: Iterable[str]) -> list[str]:
        """Images whose top layer is one of these."""
        t = schema.images
        out: list[str] = []
        for chunk in batches(sorted(chain_ids), IN_BATCH):
            out.extend(self.conn.scalars(select(t.c.id).where(t.c.store_id == self.store,
                                                              t.c.chain_id.in_(chunk))))
        return out

    def layers_present(self, chain_ids: Iterable[str]) -> set[str]:
        """Which of these chain IDs are layers of the index."""
        lt = schema.layers
        out: set[str] = set()
        for chunk in batches(sorted(chain_ids), IN_BATCH):
            out.update(self.conn.scalars(select(lt.c.chain_id).where(
                lt.c.store_id == self.store, lt.c.chain_id.in_(chunk))))
        return out

    def known_images(self, image_ids: Iterable[str]) -> set[str]:
        """Which of these IDs are images of the index."""
        t = schema.images
        known: set[str] = set()
        for chunk in batches(sorted(image_ids), IN_BATCH):
            known.update(self.conn.scalars(select(t.c.id).where(t.c.store_id == self.store,
                                                                t.c.id.in_(chunk))))
        return known

    def image_metadata(self, image_ids: Sequence[str]
                       ) -> dict[str, tuple[str | None, bool, str | None]]:
        """ID -> (``lastUpdated``, ``builtLocally``, parent) of these images, as indexed."""
        t, p = schema.images, schema.parents
        out = {}
        for chunk in batches(sorted(image_ids), IN_BATCH):
            for r in self.conn.execute(
                    select(t.c.id, t.c.last_updated, t.c.built_locally, p.c.parent_id)
                    .outerjoin(p, edge_of(p, t))
                    .where(t.c.store_id == self.store, t.c.id.in_(chunk))):
                out[r.id] = (r.last_updated, bool(r.built_locally), r.parent_id)
        return out

    def delete_images(self, image_ids: Iterable[str]) -> None:
        """Their rows, and their own parent edges (by cascade)."""
        self._delete_in(schema.images.c.id, image_ids)

    def insert_images(self, rows: Sequence[ImageRow], edges: Sequence[tuple[str, str]]) -> None:
        """Image rows and their (child, parent) edges."""
        self._insert("images", IMAGE_COLUMNS,
                     [self._stored(r) for r in rows] if self.redact else rows)
        self._insert("image_parents", EDGE_COLUMNS, edges)

    def refresh_metadata(self, values: Sequence[tuple[str, str | None, bool]],
                         edges: Sequence[tuple[str, str]]) -> None:
        """New (ID, ``lastUpdated``, ``builtLocally``) of images whose metadata alone changed,
        and their parent edges, all replaced."""
        if not values:
            return
        t, p = schema.images, schema.parents
        self.conn.execute(update(t).where(t.c.store_id == self.store,
                                          t.c.id == bindparam("image")).values(
            last_updated=bindparam("last"), built_locally=bindparam("built")),
            [{"image": i, "last": last, "built": built} for i, last, built in values])
        self._delete_in(p.c.child_id, [v[0] for v in values])
        self._insert("image_parents", EDGE_COLUMNS, edges)

    def replace_tags(self, rows: Sequence[TagEntry]) -> None:
        """Rows in ``TAG_COLUMNS`` order."""
        tt = schema.tags
        self.conn.execute(delete(tt).where(tt.c.store_id == self.store))
        self._insert("tags", TAG_COLUMNS, rows)

    # -- a sync's writes: problems ------------------------------------------------------------
    def problem_kinds(self) -> dict[str, str]:
        """Path -> kind of every problem recorded so far."""
        p = schema.problems
        return {r.path: r.kind for r in self.conn.execute(
            select(p.c.path, p.c.kind).where(p.c.store_id == self.store))}

    def delete_problems(self, paths: Iterable[str]) -> None:
        self._delete_in(schema.problems.c.path, paths)

    def insert_problems(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Rows in ``PROBLEM_COLUMNS`` order."""
        self._insert("problems", PROBLEM_COLUMNS, rows)

    # -- layer file lists ---------------------------------------------------------------------
    def write_file_list(self, diff_id: str, rows: Sequence[tuple[Any, ...]],
                        problems: Iterable[str], when: str) -> bool:
        """Record a layer's file list once (``False``: another writer had)."""
        from imagestore.index import filelists

        return filelists.write_list(self, diff_id, rows, problems, when)

    def forget_unheld_files(self) -> int:
        """Remove the file lists of diff IDs that no store holds any more; how many."""
        from imagestore.index import filelists

        return filelists.forget_unheld(self)


__all__ = ["LayerLink", "Released", "Writer"]
