"""Plain sqlite3 reads for the hot paths, beside the SQLAlchemy engine: a short-ID search is
one indexed range read, and ``ls`` of 100,000 images is one scan, where SQLAlchemy's per-call
machinery and row objects would cost more than SQLite's own work."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

from imagestore.index.backends.base import FastReader, compile_plain

# Pages are read through a memory map instead of copied into a small cache: a listing visits
# most of the index.
MMAP_SIZE = 1 << 30


class SQLiteReader(FastReader):
    """One read-only sqlite3 connection per thread on an index file."""

    def __init__(self, path: str | os.PathLike[str], dialect: Dialect) -> None:
        self.path = path
        self.dialect = dialect
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: each read sees the latest committed state)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        conn = self._connection()
        statements = [compile_plain(query, self.dialect) for query in queries]
        conn.execute("BEGIN")
        try:
            return [conn.execute(sql, params).fetchall() for sql, params in statements]
        finally:
            conn.execute("COMMIT")

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(sqlite3.ProgrammingError):  # another thread's
                conn.close()
        self._conns.clear()
