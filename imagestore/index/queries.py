"""Every question the store and the command line ask the index inside one transaction.

The questions are plain SQL text that SQLite and PostgreSQL both run: the same ``Reader``
answers through SQLAlchemy (inside a write transaction, or on a server) and through a bare
``sqlite3`` connection (``PlainReader``), which is how a warm command line answers without
importing SQLAlchemy at all. No SQL literal here holds a colon: SQLAlchemy would take it for
a bound parameter.

"Head" is defined once, here (``IS_HEAD``, and ``is_head`` for Core queries): an image that no
image names as its parent. The ``image_list`` view of revision 0002 says the same in SQL.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection, TextClause

    from imagestore.index.backends import Backend

# bucket key -> (digest, number of entries)
Digests = dict[str, tuple[int, int]]

IS_HEAD = ("NOT EXISTS (SELECT 1 FROM image_parents c "
        "WHERE c.store_id = i.store_id AND c.parent_id = i.id)")
_JOIN_PARENT = ("FROM images i LEFT JOIN image_parents p "
                "ON p.store_id = i.store_id AND p.child_id = i.id")
_JOIN_LAYER = "LEFT JOIN layers l ON l.store_id = i.store_id AND l.chain_id = i.chain_id"
_WITH_PARENT = f"{_JOIN_PARENT} WHERE i.store_id = :s"
_TAGGED = "EXISTS (SELECT 1 FROM tags t WHERE t.store_id = i.store_id AND t.image_id = i.id)"
# The recursive walk up the parent edges, for the cycle check of ``set_parent``.
_ANCESTORS = (
    "WITH RECURSIVE up(id) AS (SELECT id FROM images WHERE store_id = :s AND id = :id UNION "
    "SELECT p.parent_id FROM image_parents p JOIN up ON p.store_id = :s AND p.child_id = up.id) "
    "SELECT id FROM up"
)
# Every store of the index, by name, with its image count (``stores``): asked through
# SQLAlchemy and through a bare sqlite3 connection alike.
STORE_KEYS = ("name", "kind", "namespace", "host", "root", "driver", "images", "last_sync")
STORE_LISTING = ("SELECT s.name, s.kind, s.namespace, s.host, s.root, s.driver, "
                 "(SELECT count(*) FROM images i WHERE i.store_id = s.id) AS images, "
                 "s.last_sync FROM stores s ORDER BY s.name")
# Every image whose ID starts with a prefix is in [lo, hi): one range read of the primary
# key's index (tests/test_search.py checks the plan).
PREFIX_SQL = ("SELECT id FROM images WHERE store_id = :s AND id >= :lo AND id < :hi "
              "ORDER BY id LIMIT :n")
_SQL = {
    "has_image": "SELECT 1 FROM images WHERE store_id = :s AND id = :id",
    "image": f"SELECT i.raw, p.parent_id {_WITH_PARENT} AND i.id = :id",
    "images": f"SELECT i.id, i.raw, p.parent_id {_WITH_PARENT}",
    "heads": f"SELECT i.id, i.raw, p.parent_id {_WITH_PARENT} AND {IS_HEAD}",
    "count": "SELECT count(*) FROM images WHERE store_id = :s",
    "chain": "SELECT chain_id FROM images WHERE store_id = :s AND id = :id",
    "meta": "SELECT last_updated, built_locally FROM images WHERE store_id = :s AND id = :id",
    "size": f"SELECT coalesce(l.size, 0) FROM images i {_JOIN_LAYER} "
            "WHERE i.store_id = :s AND i.id = :id",
    "parent": "SELECT parent_id FROM image_parents WHERE store_id = :s AND child_id = :id",
    # These two are sorted by the caller: an ORDER BY on the primary key's column would have
    # SQLite walk the primary key (whose order it gives) over all of the store's rows instead
    # of searching the index on the column asked.
    "children": "SELECT child_id FROM image_parents WHERE store_id = :s AND parent_id = :id",
    "refs_of": "SELECT ref FROM tags WHERE store_id = :s AND image_id = :id",
    "has_layer": "SELECT 1 FROM layers WHERE store_id = :s AND chain_id = :id",
    # moby's reference store finds a name under its own repository only: never a misfiled one
    "tag_target": "SELECT image_id FROM tags WHERE store_id = :s AND ref = :ref "
                  "AND NOT misfiled",
    "problems": "SELECT path, kind, reason FROM problems WHERE store_id = :s ORDER BY path",
    "setting": "SELECT value FROM settings WHERE store_id = :s AND key = :key",
    "digests": "SELECT prefix, digest, entries FROM entry_buckets "
               "WHERE store_id = :s AND prefix >= :lo AND prefix < :hi",
    "digest": "SELECT prefix, digest, entries FROM entry_buckets "
              "WHERE store_id = :s AND prefix = :lo",
    # docker images: (image ID, created, parent ID, chain size, is a head), then the tags
    "listed": f"SELECT i.id, i.created, p.parent_id, l.size, {IS_HEAD} {_JOIN_PARENT} "
              f"{_JOIN_LAYER} WHERE i.store_id = :s",
    "listed_tags": "SELECT image_id, repository, tag FROM tags WHERE store_id = :s "
                   "ORDER BY repository, tag",
    "ids": "SELECT id FROM images WHERE store_id = :s ORDER BY id",
    "edges": "SELECT child_id, parent_id FROM image_parents WHERE store_id = :s",
    "refs": "SELECT image_id, ref FROM tags WHERE store_id = :s ORDER BY ref",
    "filed_refs": "SELECT image_id, ref FROM tags WHERE store_id = :s AND NOT misfiled "
                  "ORDER BY ref",
    "counts": "SELECT (SELECT count(*) FROM images WHERE store_id = :s), "
              "(SELECT count(*) FROM layers WHERE store_id = :s), "
              "(SELECT count(*) FROM tags WHERE store_id = :s), "
              "(SELECT count(*) FROM problems WHERE store_id = :s)",
}

# A containerd store's own rows, each table in its key's order (``index.ctdread``).
CTD_COLUMNS: dict[str, tuple[str, ...]] = {
    "ctd_images": ("name", "target", "media_type", "size", "created_at", "updated_at",
                   "labels", "annotations"),
    "ctd_targets": ("image_id", "digest", "media_type", "size", "is_index", "present",
                    "problem", "entries"),
    "ctd_manifests": ("image_id", "position", "digest", "media_type", "size", "platform",
                      "annotations", "kind", "available", "config_digest",
                      "config_media_type", "config_size", "best", "problem"),
    "ctd_configs": ("digest", "present", "raw"),
    "ctd_layers": ("manifest", "position", "digest", "media_type", "size", "present",
                   "diff_id", "chain_id", "unpacked"),
    "ctd_containers": ("id", "image", "snapshotter", "snapshot_key", "manifest"),
}
_CTD_ORDER = {"ctd_images": "name", "ctd_targets": "image_id, digest",
              "ctd_manifests": "image_id, position", "ctd_configs": "digest",
              "ctd_layers": "manifest, position", "ctd_containers": "id"}
_SQL.update({table: f"SELECT {', '.join(columns)} FROM {table} WHERE store_id = :s "
                    f"ORDER BY {_CTD_ORDER[table]}" for table, columns in CTD_COLUMNS.items()})

# (image ID, created, parent ID, chain size, is a head)
ListedImage = tuple[str, str | None, str | None, int | None, bool]


class Reader:
    """Reads of one store's rows inside one transaction of the index."""

    def __init__(self, conn: Connection, backend: Backend, store: int) -> None:
        self.conn = conn
        self.backend = backend
        self.store = store

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of one statement of this module, as plain tuples."""
        return [tuple(r) for r in self.conn.execute(_text(sql), params)]

    def _rows(self, name: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.rows(_SQL[name], {"s": self.store, **params})

    def _first(self, name: str, **params: Any) -> tuple[Any, ...] | None:
        found = self._rows(name, **params)
        return found[0] if found else None

    # -- images -------------------------------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        return self._first("has_image", id=image_id) is not None

    def image(self, image_id: str) -> tuple[bytes, str | None] | None:
        """(config bytes, parent ID) of one image."""
        row = self._first("image", id=image_id)
        return None if row is None else (bytes(row[0]), row[1])

    def images(self, *, heads_only: bool = False) -> dict[str, tuple[bytes, str | None]]:
        """ID -> (config bytes, parent ID) of every image, or of the heads only."""
        return {r[0]: (bytes(r[1]), r[2])
                for r in self._rows("heads" if heads_only else "images")}

    def count_images(self) -> int:
        row = self._first("count")
        return int(row[0]) if row else 0

    def image_chain(self, image_id: str) -> tuple[str | None] | None:
        """The image's top layer as a 1-tuple (its chain ID may be ``None``), or ``None``
        when there is no such image."""
        row = self._first("chain", id=image_id)
        return None if row is None else (row[0],)

    def image_meta(self, image_id: str) -> tuple[str | None, bool] | None:
        """(``lastUpdated``, ``builtLocally``) of one image."""
        row = self._first("meta", id=image_id)
        return None if row is None else (row[0], bool(row[1]))

    def image_size(self, image_id: str) -> int | None:
        """Bytes of the image's whole layer chain (docker's ``Size``)."""
        row = self._first("size", id=image_id)
        return None if row is None else int(row[0])

    def prefix(self, lo: str, hi: str, limit: int) -> list[str]:
        """Up to ``limit`` image IDs in [lo, hi), sorted."""
        return [r[0] for r in self.rows(PREFIX_SQL, {"s": self.store, "lo": lo, "hi": hi,
                                                     "n": limit})]

    def listed_images(self, *, all_images: bool, dangling: bool
                      ) -> tuple[list[ListedImage], list[tuple[str, str, str | None]]]:
        """The images ``docker images`` may list, and every (image ID, repository, tag),
        sorted. The database drops what will not be listed (most images are intermediates):
        untagged heads for ``dangling``, heads and tagged images without ``all_images``."""
        sql = _SQL["listed"]
        if dangling:
            sql += f" AND {IS_HEAD} AND NOT {_TAGGED}"
        elif not all_images:
            sql += f" AND ({IS_HEAD} OR {_TAGGED})"
        images = [(r[0], r[1], r[2], r[3], bool(r[4]))
                  for r in self.rows(sql, {"s": self.store})]
        return images, [(r[0], r[1], r[2]) for r in self._rows("listed_tags")]

    def counts(self) -> dict[str, int]:
        """How many images, layers, tags and problems the store has in the index."""
        row = self._first("counts") or (0, 0, 0, 0)
        return dict(zip(("images", "layers", "tags", "problems"), map(int, row), strict=True))

    def image_ids(self) -> list[str]:
        """Every image ID of the store, sorted."""
        return [r[0] for r in self._rows("ids")]

    # -- the parent graph ---------------------------------------------------------------------
    def graph(self) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
        """Every image ID (sorted), every (child, parent) edge, every (image ID, ref) by ref."""
        return ([r[0] for r in self._rows("ids")], [(r[0], r[1]) for r in self._rows("edges")],
                [(r[0], r[1]) for r in self._rows("refs")])

    def filed_refs(self) -> list[tuple[str, str]]:
        """Every (image ID, ref) by ref that moby's reference store finds by name (``Get``,
        ``ReferencesByName``): a misfiled entry is listed, never found."""
        return [(r[0], r[1]) for r in self._rows("filed_refs")]

    def parent(self, image_id: str) -> str | None:
        row = self._first("parent", id=image_id)
        return None if row is None else row[0]

    def children(self, image_id: str) -> list[str]:
        return sorted(r[0] for r in self._rows("children", id=image_id))

    def ancestors(self, image_id: str) -> set[str]:
        """The image and every image above it through parent edges."""
        return {r[0] for r in self.rows(_ANCESTORS, {"s": self.store, "id": image_id})}

    # -- layers and tags ----------------------------------------------------------------------
    def has_layer(self, chain: str) -> bool:
        return self._first("has_layer", id=chain) is not None

    def tag_target(self, ref: str) -> str | None:
        row = self._first("tag_target", ref=ref)
        return None if row is None else row[0]

    def refs_of(self, image_id: str) -> list[str]:
        return sorted(r[0] for r in self._rows("refs_of", id=image_id))

    # -- what the syncs skipped and what they remember of the disk ----------------------------
    def problems(self) -> list[tuple[str, str, str]]:
        """(path, kind, reason) of every entry the syncs skipped, by path."""
        return [(r[0], r[1], r[2]) for r in self._rows("problems")]

    def ctd_rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of one of a containerd store's tables (``CTD_COLUMNS``)."""
        return self._rows(table)

    def setting(self, key: str) -> str | None:
        row = self._first("setting", key=key)
        return None if row is None else row[0]

    def digests(self, kind: str) -> Digests:
        """Bucket key -> (digest, entries) of one kind of entry, as the last sync left them
        (a kind that is a folder holds a range of keys; ``repositories.json`` is one)."""
        if kind.endswith("/"):
            rows = self._rows("digests", lo=kind, hi=kind[:-1] + "0")
        else:
            rows = self._rows("digest", lo=kind)
        return {r[0][len(kind):]: (int(r[1]), int(r[2])) for r in rows}

    # -- layer file lists (``index.filelists``: rows keyed by diff ID, shared by stores) --------
    def unread_layers(self) -> list[tuple[str, str]]:
        """(diff ID, a chain ID) of this store's layers whose file list was never read."""
        from imagestore.index import filelists

        return filelists.unread_layers(self)

    def chain_layers(self, chain_id: str) -> list[tuple[str, str]]:
        """(chain ID, diff ID) of a chain's layers, bottom first."""
        from imagestore.index import filelists

        return filelists.chain_layers(self, chain_id)

    def layer_entries(self, diff_id: str) -> list[tuple[Any, ...]]:
        """Every entry of a layer's file list (``filelists.FileRow``), by path."""
        from imagestore.index import filelists

        return list(filelists.layer_entries(self, diff_id))

    def file_list_state(self, diff_id: str) -> tuple[int, list[str]] | None:
        """(entries, problems) of a layer's list, ``None`` when it was never read."""
        from imagestore.index import filelists

        return filelists.list_state(self, diff_id)

    def which_files(self, like: str, *, all_stores: bool
                    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]]:
        """Merged entries matching a LIKE pattern (escape ``!``), and the tags of the stores
        asked (``filelists.which``)."""
        from imagestore.index import filelists

        return filelists.which(self, like, all_stores=all_stores)

    def which_indexed(self, like: str, *, all_stores: bool, low: str | None = None,
                      high: str | None = None, keep: Callable[[str], bool] | None = None
                      ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]] | None:
        """``which_files``'s answer from the path index, without the view's whole-store
        merge; ``None`` when too many rows match (``filelists.which_indexed``)."""
        from imagestore.index import filelists

        return filelists.which_indexed(self, like, all_stores=all_stores, low=low, high=high,
                                       keep=keep)


class PlainReader(Reader):
    """A ``Reader`` on a bare ``sqlite3`` connection (the caller holds its transaction)."""

    def __init__(self, conn: sqlite3.Connection, store: int) -> None:
        self.plain = conn
        self.store = store

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.plain.execute(sql, params).fetchall()


@functools.cache
def _text(sql: str) -> TextClause:
    from sqlalchemy import text

    return text(sql)


# -- Core expressions of the same rules, for the listings built with SQLAlchemy ----------------
def is_head() -> Any:
    """True for an image that no image of its store names as its parent."""
    from sqlalchemy import exists

    from imagestore.index import schema

    child, t = schema.parents.alias("child"), schema.images
    return ~exists().where(child.c.store_id == t.c.store_id, child.c.parent_id == t.c.id)


def edge_of(p: Any, t: Any) -> Any:
    """The join of an image to its own parent edge."""
    return (p.c.store_id == t.c.store_id) & (p.c.child_id == t.c.id)


def layer_of(lt: Any, t: Any) -> Any:
    """The join of an image to its top layer."""
    return (lt.c.store_id == t.c.store_id) & (lt.c.chain_id == t.c.chain_id)


__all__ = ["CTD_COLUMNS", "IS_HEAD", "PREFIX_SQL", "STORE_KEYS", "STORE_LISTING", "Digests",
           "ListedImage", "PlainReader", "Reader", "edge_of", "is_head", "layer_of"]
