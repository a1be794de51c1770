"""A warm command line's index: one store of a local SQLite index already at the schema head,
read through ``sqlite3`` alone. Opening it costs a few milliseconds and imports neither
SQLAlchemy nor Alembic; anything it cannot vouch for (no file yet, another revision, a
file it may not write, a store it does not hold) sends the caller to ``Index.open``, which
creates, migrates, repairs and explains."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from imagestore.errors import IndexCorrupt
from imagestore.index.fastread import (
    APPLICATION_ID,
    Result,
    SQLiteReader,
    cannot_write,
    is_corrupt,
    readonly_query,
    stamp_synced,
)
from imagestore.index.location import HEAD, StoreInfo, identity, sqlite_file, stamp_due
from imagestore.index.queries import Reader

_STORE = "SELECT id, name, redacted, last_sync FROM stores WHERE name = :name"
_REVISION = "SELECT version_num FROM alembic_version"


class QuickIndex:
    """Use ``QuickIndex.open``; ``read()`` and ``sql()`` as on ``Index``."""

    def __init__(self, file: Path, reader: SQLiteReader, store: StoreInfo) -> None:
        self.file = file
        self.store = store
        self._reader = reader

    @classmethod
    def open(cls, index: str | os.PathLike[str] | None, image_root: Path, *,
             name: str | None = None) -> QuickIndex | None:
        """The store of ``image_root`` (named ``name``) in ``index``, or ``None`` when only
        the engine can open it."""
        file = sqlite_file(index, image_root)
        if file is None or not _regular(file) or cannot_write(file):
            return None  # a new index, or a frozen one: the engine opens it
        try:
            with open(file, "rb") as f:
                header = f.read(100)
        except OSError:
            return None
        if len(header) < 100 or int.from_bytes(header[68:72], "big") != APPLICATION_ID:
            return None
        who = identity(image_root, name)
        reader = SQLiteReader(file)
        try:
            with reader.connection() as conn:
                revision = conn.execute(_REVISION).fetchone()
                row = conn.execute(_STORE, {"name": who.name}).fetchone()
        except sqlite3.Error:
            reader.close()
            return None
        if revision is None or revision[0] != HEAD or row is None or row[2]:
            reader.close()  # a redacted store lives on a server, never in a local file
            return None
        return cls(file, reader, StoreInfo(row[0], row[1], bool(row[2]), row[3]))

    @property
    def store_id(self) -> int:
        return self.store.id

    def location(self) -> str:
        return str(self.file)

    def revision(self) -> str:
        return HEAD  # opened only at the head

    @contextlib.contextmanager
    def read(self) -> Iterator[Reader]:
        try:
            with self._reader.reader(self.store_id) as q:
                yield q
        except sqlite3.DatabaseError as exc:
            if is_corrupt(exc):
                raise IndexCorrupt(f"index {self.file} is corrupt ({exc}); rebuild it with "
                                   f"`imagestore sync --full` or delete it") from None
            raise

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None
            ) -> Result:
        """As ``Index.sql``: one read-only statement through the sandbox."""
        from imagestore.index.sqlbox import statement

        return readonly_query(self.file, statement(query), params, timeout)

    def synced(self, when: dt.datetime) -> None:
        """Record that the store mirrored its root at ``when``, as a sync that changed
        nothing does (at most every ``STAMP_EVERY``), never waiting for a writer."""
        if stamp_due(self.store.last_sync, when):
            stamp_synced(self.file, self.store_id, when)

    def close(self) -> None:
        self._reader.close()


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


__all__ = ["QuickIndex"]
