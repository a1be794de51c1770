"""The ``stores`` table: which image roots an index mirrors, under which names.

A store's row is made in a short transaction of its own, before its first sync: a cold
sync of one new store then holds only that store's lock, and several new stores fill at
once on a server. An index made before stores existed holds one store named ``unnamed``
with no root (when its upgrade did not know the root); the first store opened on it adopts
those rows, which is what that index's single root would have done.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from imagestore.index import schema
from imagestore.index.location import Identity, StoreInfo, stamp

UNNAMED = "unnamed"  # revision 0005's name for the rows of an index older than stores


def find(conn: Connection, name: str) -> StoreInfo | None:
    st = schema.stores
    row = conn.execute(select(st.c.id, st.c.name, st.c.redacted, st.c.last_sync)
                       .where(st.c.name == name)).first()
    return None if row is None else StoreInfo(row.id, row.name, bool(row.redacted),
                                              row.last_sync)


def identity_of(conn: Connection, store: int) -> Identity:
    st = schema.stores
    row = conn.execute(select(st.c.name, st.c.host, st.c.root, st.c.driver)
                       .where(st.c.id == store)).one()
    return Identity(row.name, row.host or "", row.root or "", row.driver or "")


def claim(conn: Connection, who: Identity, *, redacted: bool) -> StoreInfo:
    """The store named ``who.name``: found, adopted from an unnamed older index, or made."""
    found = find(conn, who.name)
    if found is not None:
        return found
    st = schema.stores
    values = {"name": who.name, "host": who.host, "root": who.root,
              "driver": who.driver or None}
    unnamed = find(conn, UNNAMED)
    if unnamed is not None and conn.scalar(select(st.c.root).where(st.c.id == unnamed.id)) \
            is None:
        conn.execute(update(st).where(st.c.id == unnamed.id).values(**values))
        return StoreInfo(unnamed.id, who.name, unnamed.redacted, unnamed.last_sync)
    try:
        with conn.begin_nested():
            conn.execute(insert(st).values(**values, redacted=redacted, last_sync=None))
    except IntegrityError:  # another process made it meanwhile
        pass
    made = find(conn, who.name)
    assert made is not None
    return made


def set_redacted(conn: Connection, store: int, redacted: bool) -> None:
    st = schema.stores
    conn.execute(update(st).where(st.c.id == store).values(redacted=redacted))


def synced(conn: Connection, store: int, when: dt.datetime | None = None) -> None:
    """The store's rows now mirror its root as of ``when`` (default: now)."""
    st = schema.stores
    conn.execute(update(st).where(st.c.id == store).values(
        last_sync=stamp(when or dt.datetime.now(dt.timezone.utc))))


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every store of the index, by name, with its image count."""
    st, t = schema.stores, schema.images
    images = (select(func.count()).select_from(t).where(t.c.store_id == st.c.id)
              .scalar_subquery())
    rows = conn.execute(select(st.c.name, st.c.host, st.c.root, st.c.driver,
                               images.label("images"), st.c.last_sync).order_by(st.c.name))
    return [dict(r._mapping) for r in rows]


def forget(conn: Connection, store: int) -> None:
    """Delete a store's rows, then the store."""
    for table in schema.STORE_TABLES:
        t = schema.Base.metadata.tables[table]
        conn.execute(delete(t).where(t.c.store_id == store))
    conn.execute(delete(schema.stores).where(schema.stores.c.id == store))


__all__ = ["UNNAMED", "Identity", "StoreInfo", "claim", "find", "forget", "identity_of", "listing",
           "set_redacted", "stamp", "synced"]
