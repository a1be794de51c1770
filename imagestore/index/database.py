"""An index: one database (an SQLite file or a PostgreSQL database) that mirrors an image
root, opened at the schema head, with its writers' lock and its fast reader."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.sql import ClauseElement

from imagestore.errors import IndexUnavailable
from imagestore.index import sqlbox
from imagestore.index.backends import Backend, for_url
from imagestore.index.backends.base import Result
from imagestore.index.engine import (
    corrupt,
    current_revision,
    index_url,
    make_engine,
    prepare,
    rebuild,
    state_dir,
    upgrade,
)
from imagestore.index.locks import writer_lock
from imagestore.index.queries import Reader
from imagestore.index.writes import Writer

_DB_ERRORS = (DatabaseError, sqlite3.DatabaseError)
# Every image whose ID starts with a prefix is in [lo, hi): one range read of the primary
# key's index (tests/test_search.py checks the plan).
PREFIX_SQL = "SELECT id FROM images WHERE id >= :lo AND id < :hi ORDER BY id LIMIT :n"


class Index:
    """Use ``Index.open``; reads and writes go through ``read()`` and ``write()``."""

    def __init__(self, backend: Backend, engine: Engine, lock: Path | None) -> None:
        self.backend = backend
        self.engine = engine
        self._lock = lock
        self._reader = backend.fast_reader(engine)

    @classmethod
    def open(cls, index: str | os.PathLike[str] | None, image_root: Path, *, readonly: bool,
             fill: Callable[[Writer], None] | None = None,
             forbidden: Sequence[Path] = ()) -> Index:
        """The index ``index`` (``None``: the default file for ``image_root``, a path, or an
        SQLAlchemy URL), created and migrated as needed. A new index is filled by ``fill``
        inside its first write transaction, before any other process can see it. An index
        file inside one of the ``forbidden`` folders is refused before anything is done."""
        backend = for_url(index_url(index, image_root))
        if backend.file is not None:
            real = os.path.realpath(backend.file)
            for folder in forbidden:
                top = os.path.realpath(folder)
                if os.path.commonpath([real, top]) == top:
                    raise IndexUnavailable(f"index {backend.file} is inside the Docker root "
                                           f"{folder}; keep it elsewhere")
        lock = backend.lock_path(state_dir(), image_root)

        def filled(conn: Connection) -> None:
            assert fill is not None
            fill(Writer(conn, backend))

        engine = prepare(backend, readonly=readonly, lock=lock,
                         fill=filled if fill is not None else None)
        return cls(backend, engine, lock)

    def rebuild(self, fill: Callable[[Writer], object]) -> None:
        """Set this (corrupt) index aside and build it again, filled by ``fill``; raises the
        ``IndexCorrupt`` it was given where the backend cannot set an index aside."""
        if self.file is None or self._lock is None:
            raise IndexUnavailable(f"index {self.location()} is corrupt and cannot be rebuilt "
                                   f"here")
        self.close()
        def filled(conn: Connection) -> None:
            fill(Writer(conn, self.backend))

        rebuild(self.backend, self._lock, filled)
        self.engine = make_engine(self.backend)
        upgrade(self.engine)
        self._reader = self.backend.fast_reader(self.engine)

    @classmethod
    def scratch(cls) -> Index:
        """A private in-memory index at the schema head, seen by no other process."""
        backend = for_url("sqlite://")
        engine = make_engine(backend)
        upgrade(engine)
        return cls(backend, engine, None)

    # -- what it is ---------------------------------------------------------------------------
    @property
    def file(self) -> Path | None:
        return self.backend.file

    @property
    def frozen(self) -> bool:
        """The index cannot be written: it answers as it stands, and is never synced."""
        return self.backend.frozen

    def location(self) -> str:
        return self.backend.location()

    def revision(self) -> str | None:
        return current_revision(self.engine)

    def damage(self) -> list[str]:
        """What the database finds wrong with its own storage (``[]``: nothing); reads the
        whole index, so it is for fsck, not for every open."""
        return self.backend.damage(self.engine)

    # -- transactions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Reader]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield Reader(conn, self.backend)
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """The writers' lock (one writer per index at a time), then a write transaction."""
        if self.frozen:
            raise IndexUnavailable(f"index {self.location()} cannot be written")
        try:
            with contextlib.ExitStack() as stack:
                if self._lock is not None:
                    stack.enter_context(writer_lock(self._lock))
                conn = stack.enter_context(self.engine.connect().execution_options(write=True))
                stack.enter_context(conn.begin())
                yield Writer(conn, self.backend)
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    def _damaged(self, exc: Exception) -> Exception:
        """A damaged index's error, wherever it surfaced, as one ``IndexCorrupt``; any other
        error as it is."""
        return corrupt(self.backend, exc) if self.backend.is_corrupt(exc) else exc

    # -- fast reads ---------------------------------------------------------------------------
    def prefix(self, lo: str, hi: str, limit: int) -> list[str]:
        """Up to ``limit`` image IDs in [lo, hi), sorted."""
        try:
            rows = self._reader.rows(PREFIX_SQL, {"lo": lo, "hi": hi, "n": limit})
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None
        return [row[0] for row in rows]

    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        """Every row of each query as a plain tuple, all from one snapshot."""
        try:
            return self._reader.fetch(*queries)
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None
            ) -> Result:
        """One read-only statement through the sandbox: its columns, and its rows as they
        come (stopped after ``timeout`` seconds)."""
        try:
            columns, rows = sqlbox.run(self.backend, self.engine, query, params, timeout)
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

        def checked_rows() -> Iterator[tuple[Any, ...]]:
            try:
                yield from rows
            except _DB_ERRORS as exc:
                raise self._damaged(exc) from None

        return columns, checked_rows()

    def close(self) -> None:
        self._reader.close()
        self.engine.dispose()


__all__ = ["Index"]
