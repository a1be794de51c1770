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
from imagestore.index.queries import STORE_KEYS, STORE_LISTING, Reader

_STORE = "SELECT id, name, redacted, last_sync, host, root FROM stores WHERE name = :name"
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
        if file is None or not _ours(file):
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
        if revision is None or revision[0] != HEAD or row is None or row[2] \
                or (row[5] and (row[5], row[4]) != (who.root, who.host)):
            # A redacted store lives on a server, never in a local file; a name another
            # root holds is refused by the engine, which says whose it is.
            reader.close()
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
            raise _damaged(self.file, exc) from None

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None, *,
            allow_privileged_role: bool = False) -> Result:
        """As ``Index.sql``: one read-only statement through the sandbox (a local file has
        no roles)."""
        from imagestore.index.sqlbox import statement

        return readonly_query(self.file, statement(query), params, timeout)

    def synced(self, when: dt.datetime) -> None:
        """Record that the store mirrored its root at ``when``, as a sync that changed
        nothing does (at most every ``STAMP_EVERY``), never waiting for a writer."""
        if stamp_due(self.store.last_sync, when):
            stamp_synced(self.file, self.store_id, when)

    def close(self) -> None:
        self._reader.close()


class QuickWhole:
    """A local SQLite index at the schema head, for what concerns all its stores (``stores``,
    and ``sql`` or ``info`` without a root), read through sqlite3 alone as it stands: no root
    is read, nothing is synced. Use ``QuickWhole.open``."""

    def __init__(self, file: Path, reader: SQLiteReader) -> None:
        self.file = file
        self._reader = reader

    @classmethod
    def open(cls, index: str | os.PathLike[str]) -> QuickWhole | None:
        """The index file ``index`` names, or ``None`` when only the engine can open it."""
        file = sqlite_file(index)
        if file is None or not _ours(file):
            return None
        reader = SQLiteReader(file)
        try:
            with reader.connection() as conn:
                revision = conn.execute(_REVISION).fetchone()
        except sqlite3.Error:
            revision = None
        if revision is None or revision[0] != HEAD:
            reader.close()
            return None
        return cls(file, reader)

    def location(self) -> str:
        return str(self.file)

    def revision(self) -> str:
        return HEAD

    def stores(self) -> list[dict[str, Any]]:
        """As ``Index.stores``."""
        try:
            with self._reader.connection() as conn:
                rows = conn.execute(STORE_LISTING).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.file, exc) from None
        return [dict(zip(STORE_KEYS, r, strict=True)) for r in rows]

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None, *,
            allow_privileged_role: bool = False) -> Result:
        """As ``Index.sql`` (a local file has no roles)."""
        from imagestore.index.sqlbox import statement

        return readonly_query(self.file, statement(query), params, timeout)

    def close(self) -> None:
        self._reader.close()


def _ours(file: Path) -> bool:
    """An index file sqlite3 alone may read: a regular file this process may write (a new
    index or a frozen one is the engine's to open, and to explain), made by imagestore."""
    try:
        if not stat.S_ISREG(file.stat().st_mode) or cannot_write(file):
            return False
        with open(file, "rb") as f:
            header = f.read(100)
    except OSError:
        return False
    return len(header) == 100 and int.from_bytes(header[68:72], "big") == APPLICATION_ID


def _damaged(file: Path, exc: sqlite3.DatabaseError) -> Exception:
    if is_corrupt(exc):
        return IndexCorrupt(f"index {file} is corrupt ({exc}); rebuild it with "
                            f"`imagestore sync --full` or delete it")
    return exc


__all__ = ["QuickIndex", "QuickWhole"]
