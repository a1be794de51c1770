"""The ``stores`` table: which image roots an index mirrors, under which names.

A store's row is made in a short transaction of its own, before its first sync: a cold
sync of one new store then holds only that store's lock, and several new stores fill at
once on a server. An index made before stores existed holds one store named ``unnamed``
with no root (when its upgrade did not know the root); the first store opened on it adopts
those rows, which is what that index's single root would have done.

A name belongs to one image root on one host. Opening another root under a name already
taken is refused, naming whose it is: the two roots' rows would otherwise replace each other
at every sync, each listed under the other's root. ``move`` gives the name to the new root,
whose rows are then read again whole.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from imagestore.errors import StoreNameTaken
from imagestore.index import schema
from imagestore.index.location import Identity, StoreInfo, stamp
from imagestore.index.queries import STORE_KEYS, STORE_LISTING

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


def check_owner(owner: Identity, who: Identity, *, move: bool = False) -> bool:
    """Whether the store ``owner`` is ``who``'s to open: the same root on the same host, or a
    store whose root was never known (an upgraded index's). Another root's store is refused
    with one line saying whose it is, unless ``move``: then False (it is to be moved)."""
    if not owner.root or (owner.root, owner.host) == (who.root, who.host):
        return True
    if move:
        return False
    raise StoreNameTaken(owner.name, owner.host, owner.root,
                         f"store name {owner.name!r} belongs to {owner.root} on host "
                         f"{owner.host or '(unknown)'}, not to {who.root} on {who.host}: "
                         f"choose another --name, or pass --rename-root to move the name "
                         f"to this root (its rows are then read again from it)")


def claim(conn: Connection, who: Identity, *, redacted: bool, move: bool = False
          ) -> StoreInfo:
    """The store named ``who.name``: found, adopted from an unnamed older index, or made. A
    name that belongs to another root is refused (``check_owner``), or with ``move`` given to
    this root: its ``last_sync`` is cleared, and the caller reads the root again whole."""
    found = find(conn, who.name)
    if found is not None:
        if check_owner(identity_of(conn, found.id), who, move=move):
            return found
        st = schema.stores
        conn.execute(update(st).where(st.c.id == found.id).values(
            host=who.host, root=who.root, driver=who.driver or None, last_sync=None))
        return StoreInfo(found.id, found.name, found.redacted, None)
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
    """Every store of the index, by name, with its image count (the SQL a warm ``stores``
    asks through sqlite3 alone)."""
    return [dict(zip(STORE_KEYS, r, strict=True)) for r in conn.execute(text(STORE_LISTING))]


def forget(conn: Connection, store: int) -> None:
    """Delete a store's rows, then the store."""
    for table in schema.STORE_TABLES:
        t = schema.Base.metadata.tables[table]
        conn.execute(delete(t).where(t.c.store_id == store))
    conn.execute(delete(schema.stores).where(schema.stores.c.id == store))


__all__ = ["UNNAMED", "Identity", "StoreInfo", "check_owner", "claim", "find", "forget",
           "identity_of", "listing", "set_redacted", "stamp", "synced"]
