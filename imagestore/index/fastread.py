"""Plain sqlite3 reads beside the SQLAlchemy engine: a short-ID search is one indexed range
read, and ``ls`` of 100,000 images is one scan, where SQLAlchemy's per-call machinery and
row objects would cost more than SQLite's own work. Nothing here imports SQLAlchemy: a warm
command line reads through this module alone."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagestore.errors import ImageStoreError
from imagestore.index.location import STAMP_EVERY, stamp
from imagestore.index.queries import PlainReader, Reader

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.sql import ClauseElement

# Written in the header of every index we create, so that a file can be told to be ours
# before anything is written to it or it is set aside as corrupt ("imgs").
APPLICATION_ID = 0x696D6773
# Pages are read through a memory map instead of copied into a small cache: a listing visits
# most of the index.
MMAP_SIZE = 1 << 30
_STAMP = ("UPDATE stores SET last_sync = :now WHERE id = :s "
          "AND (last_sync IS NULL OR last_sync < :old)")
STAMP_TIMEOUT_S = 0.05
# Column names and rows of a query (the rows as they come).
Result = tuple[list[str], Iterator[tuple[Any, ...]]]
# What ``sql`` may do: read tables and call the functions below, nothing else.
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# The functions ``sql`` may call: SQLite's core, date, math, JSON, aggregate and window
# functions, each a pure computation on its arguments. An allow-list, not a deny-list: SQLite
# builds carry functions that are not (``fts3_tokenizer`` hands out a pointer of the process,
# ``load_extension`` loads code, ``sqlite_log`` writes to the error log, the FTS and R-tree
# helpers parse blobs), and a function a newer SQLite adds stays refused until listed here.
ALLOWED_FUNCTIONS = frozenset((
    # core
    "->", "->>", "abs", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex", "if",
    "ifnull", "iif", "instr", "length", "like", "likelihood", "likely", "lower", "ltrim", "max",
    "min", "nullif", "octet_length", "printf", "quote", "random", "replace", "round", "rtrim",
    "sign", "soundex", "sqlite_source_id", "sqlite_version", "substr", "substring", "trim",
    "typeof", "unhex", "unicode", "unistr", "unistr_quote", "unlikely", "upper",
    # date
    "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff", "current_date",
    "current_time", "current_timestamp",
    # math
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh",
    "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power",
    "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
    # json
    "json", "json_array", "json_array_length", "json_error_position", "json_extract",
    "json_insert", "json_object", "json_patch", "json_pretty", "json_quote", "json_remove",
    "json_replace", "json_set", "json_type", "json_valid", "json_group_array", "json_group_object",
    "jsonb", "jsonb_array", "jsonb_extract", "jsonb_insert", "jsonb_object", "jsonb_patch",
    "jsonb_remove", "jsonb_replace", "jsonb_set", "jsonb_group_array", "jsonb_group_object",
    # aggregate
    "avg", "count", "group_concat", "string_agg", "sum", "total", "median", "percentile",
    "percentile_cont", "percentile_disc",
    # window
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
    "first_value", "last_value", "nth_value",
))


class FastReader(ABC):
    """Read-only queries whose rows come back as plain tuples, from one snapshot: the hot
    paths (short-ID search, listings of 100,000 rows) where per-row machinery would cost more
    than the database's own work."""

    @abstractmethod
    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        """Every row of each query, all from the same snapshot."""

    @abstractmethod
    def reader(self, store: int) -> contextlib.AbstractContextManager[Reader]:
        """A ``Reader`` of ``store`` on one snapshot, for the length of the block."""

    def close(self) -> None:
        """Release what the reader holds (connections of other threads included)."""
        return


class SQLiteReader(FastReader):
    """One read-only sqlite3 connection per thread on an index file."""

    def __init__(self, path: str | os.PathLike[str], dialect: Dialect | None = None) -> None:
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

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, on one snapshot for the length of the block."""
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        assert self.dialect is not None, "Core queries need the engine's dialect"
        statements = [compile_plain(query, self.dialect) for query in queries]
        with self.connection() as conn:
            return [conn.execute(sql, params).fetchall() for sql, params in statements]

    @contextlib.contextmanager
    def reader(self, store: int) -> Iterator[Reader]:
        with self.connection() as conn:
            yield PlainReader(conn, store)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(sqlite3.ProgrammingError):  # another thread's
                conn.close()
        self._conns.clear()


def compile_plain(query: ClauseElement, dialect: Dialect) -> tuple[str, list[Any]]:
    """A Core query as positional SQL text and its values (for a plain DBAPI connection)."""
    from sqlalchemy.sql.compiler import SQLCompiler

    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    assert isinstance(compiled, SQLCompiler)
    return str(compiled), [compiled.params[k] for k in compiled.positiontup or ()]


def stamp_synced(path: Path, store: int, when: dt.datetime) -> None:
    """Record that ``store`` mirrored its root at ``when`` (a warm open that found nothing to
    do) unless a process did within ``STAMP_EVERY``. A courtesy: skipped rather than wait
    for a writer."""
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(path, timeout=STAMP_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute(_STAMP, {"now": stamp(when), "s": store,
                                  "old": stamp(when - STAMP_EVERY)})
        finally:
            conn.close()


def cannot_write(path: Path) -> bool:
    """An existing index this process may not write (nor create its logs beside)."""
    try:
        exists = path.stat().st_size > 0
    except OSError:
        return False
    return exists and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))


def is_corrupt(exc: BaseException) -> bool:
    """An SQLite error that means the file's storage is unusable."""
    text = str(exc).lower()
    return "file is not a database" in text or "malformed" in text


def readonly_uri(path: Path) -> str:
    """A URI that opens the index without writing anything: read-only, and immutable when
    its write-ahead log cannot be shared (no ``-shm`` beside it, and none may be made)."""
    shm = Path(str(path) + "-shm")
    if shm.exists() or os.access(path.parent, os.W_OK):
        return f"{path.as_uri()}?mode=ro"
    return f"{path.as_uri()}?mode=ro&immutable=1"


def readonly_query(path: Path, sql: str, params: Sequence[Any],
                   timeout: float | None = None) -> Result:
    """One statement on a connection opened read-only whose authorizer denies anything but
    reads; a progress handler stops it at its deadline (and lets Ctrl-C through). Rows are
    fetched as they are iterated."""
    conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=30)
    deadline = None if not timeout else time.monotonic() + timeout
    expired: list[bool] = []
    refused: list[str] = []

    def authorizer(action: int, _arg1: str | None, arg2: str | None, *_rest: object) -> int:
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in ALLOWED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            refused.append(arg2 or "")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY

    def too_long() -> int:
        # Ctrl-C raises KeyboardInterrupt in here: sqlite3 turns it into "interrupted".
        if deadline is not None and time.monotonic() > deadline:
            expired.append(True)
        return int(bool(expired))

    conn.set_authorizer(authorizer)
    conn.set_progress_handler(too_long, 20000)
    try:
        cur = conn.execute(sql, tuple(params))
    except BaseException as exc:
        conn.close()
        if refused and isinstance(exc, sqlite3.DatabaseError):
            raise ImageStoreError(f"sql: function {refused[0][:100]}() is not allowed (the "
                                  f"sandbox allows SQLite's built-in functions that only "
                                  f"compute)") from None
        raise _sql_error(exc, timeout, bool(expired)) from None
    columns = [d[0] for d in cur.description or ()]

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            while batch := cur.fetchmany(1000):
                yield from batch
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise _sql_error(exc, timeout, bool(expired)) from None
        finally:
            conn.close()

    return columns, rows()


def _sql_error(exc: BaseException, timeout: float | None, expired: bool) -> BaseException:
    if not isinstance(exc, (sqlite3.Error, sqlite3.Warning)) or is_corrupt(exc):
        return exc
    if "interrupted" in str(exc):
        if not expired:
            return KeyboardInterrupt()  # Ctrl-C, swallowed by sqlite3: raised again
        return ImageStoreError(f"sql: stopped after {timeout:g} s (--timeout)")
    return ImageStoreError(f"sql: {exc}")


__all__ = [
    "ALLOWED_FUNCTIONS",
    "APPLICATION_ID",
    "FastReader",
    "Result",
    "SQLiteReader",
    "cannot_write",
    "is_corrupt",
    "readonly_query",
    "readonly_uri",
    "stamp_synced",
]
