"""What the index remembers of the disk: entry signatures, grouped in buckets.

A bucket row holds the digest of its entries' signatures and the signatures themselves, as a
JSON object (name -> signature) that sqlite3 users can read with ``json_each``. A warm sync
compares digests only; a bucket whose digest moved is compared entry by entry. A folder's own
signature, where a kind is signed by its folder, is a setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from imagestore.index import schema
from imagestore.index.backends import Backend
from imagestore.index.engine import IN_BATCH, batches
from imagestore.index.queries import Digests

# The digest of a bucket that must be compared entry by entry (real digests are >= 0).
UNKNOWN = -1



def under(column: Any, kind: str) -> Any:
    """Rows whose key lies under ``kind`` (a range, so the primary key answers it)."""
    if kind.endswith("/"):
        return (column >= kind) & (column < kind[:-1] + "0")
    return column == kind


class Buckets:
    """One store's ``entry_buckets`` and ``settings`` rows, inside one write transaction."""

    def __init__(self, conn: Connection, backend: Backend, store: int) -> None:
        self.conn = conn
        self.backend = backend
        self.store = store

    def digests(self, kind: str) -> Digests:
        """Bucket key -> (digest, entries) of one kind."""
        b = schema.entry_buckets
        start = len(kind)
        # Fetched whole: a fetch per row of 4,096 buckets shows in every sync.
        return {prefix[start:]: (digest, entries) for prefix, digest, entries in self.conn.execute(
            select(b.c.prefix, b.c.digest, b.c.entries)
            .where(b.c.store_id == self.store, under(b.c.prefix, kind))).all()}

    def any(self, kind: str) -> bool:
        b = schema.entry_buckets
        return self.conn.execute(
            select(b.c.prefix).where(b.c.store_id == self.store, under(b.c.prefix, kind))
            .limit(1)).first() is not None

    def signatures(self, kind: str, keys: set[str] | None) -> dict[str, int]:
        """Name -> stored signature of the entries of one kind in these buckets (``None``:
        all of them)."""
        b = schema.entry_buckets
        query = select(b.c.signatures).where(b.c.store_id == self.store)
        out: dict[str, int] = {}
        if keys is None:
            for text in self.conn.scalars(query.where(under(b.c.prefix, kind))):
                out.update(_load(text))
            return out
        for chunk in batches(sorted(kind + k for k in keys), IN_BATCH):
            for text in self.conn.scalars(query.where(b.c.prefix.in_(chunk))):
                out.update(_load(text))
        return out

    def save(self, kind: str, rows: Iterable[tuple[str, int, dict[str, int]]],
             replaced: Iterable[str]) -> None:
        """Replace the ``replaced`` buckets with ``rows`` (key, digest, signatures), which
        may come one bucket at a time: a cold sync's 12,000 need not all be alive at once."""
        b = schema.entry_buckets
        for chunk in batches(sorted(kind + k for k in replaced), IN_BATCH):
            self.conn.execute(delete(b).where(b.c.store_id == self.store,
                                              b.c.prefix.in_(chunk)))
        batch: list[tuple[str, int, int, str]] = []
        for key, digest, sigs in rows:
            batch.append((kind + key, digest, len(sigs), _dump(sigs)))
            if len(batch) == IN_BATCH:
                self._insert(batch)
                batch = []
        self._insert(batch)

    def _insert(self, rows: list[tuple[str, int, int, str]]) -> None:
        self.backend.bulk_insert(self.conn, "entry_buckets",
                                 ("prefix", "digest", "entries", "signatures"), rows,
                                 store=self.store)

    def record(self, kind: str, key: str, name: str, signature: int | None) -> None:
        """One entry's new signature (``None``: it is gone), after the store itself wrote it.

        The bucket is marked unknown rather than summed again (the next sync compares it
        entry by entry); a bucket with no row reads as empty, so the row stays, even with no
        entry left in it."""
        b = schema.entry_buckets
        prefix = kind + key
        mine = (b.c.store_id == self.store) & (b.c.prefix == prefix)
        sigs = _load(self.conn.scalar(select(b.c.signatures).where(mine)))
        if signature is None:
            sigs.pop(name, None)
        else:
            sigs[name] = signature
        self.conn.execute(delete(b).where(mine))
        self.conn.execute(insert(b).values(store_id=self.store, prefix=prefix, digest=UNKNOWN,
                                           entries=len(sigs), signatures=_dump(sigs)))

    def setting(self, key: str) -> str | None:
        s = schema.settings
        return self.conn.scalar(select(s.c.value).where(s.c.store_id == self.store,
                                                        s.c.key == key))

    def set_setting(self, key: str, value: str | None) -> None:
        s = schema.settings
        self.conn.execute(delete(s).where(s.c.store_id == self.store, s.c.key == key))
        if value is not None:
            self.conn.execute(insert(s).values(store_id=self.store, key=key, value=value))


def _dump(sigs: dict[str, int]) -> str:
    return json.dumps(sigs, separators=(",", ":"), sort_keys=True)


def _load(text: str | None) -> dict[str, int]:
    """Signatures of one bucket; anything unreadable counts as nothing stored (its entries
    are then read again, which is always safe)."""
    try:
        sigs = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(sigs, dict):
        return {}
    return {k: v for k, v in sigs.items() if type(v) is int}


__all__ = ["UNKNOWN", "Buckets", "Digests", "under"]
