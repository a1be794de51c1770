"""An index: one database (an SQLite file or a PostgreSQL database) that mirrors an image
root, opened at the schema head, with its writers' lock and its fast reader."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.sql import ClauseElement

from imagestore.index import sqlbox
from imagestore.index.backends import Backend, for_url
from imagestore.index.backends.base import Result
from imagestore.index.engine import (
    current_revision,
    index_url,
    make_engine,
    prepare,
    state_dir,
    upgrade,
)
from imagestore.index.locks import writer_lock
from imagestore.index.queries import Reader
from imagestore.index.writes import Writer

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
             fill: Callable[[Writer], None] | None = None) -> Index:
        """The index ``index`` (``None``: the default file for ``image_root``, a path, or an
        SQLAlchemy URL), created and migrated as needed. A new index is filled by ``fill``
        inside its first write transaction, before any other process can see it."""
        backend = for_url(index_url(index, image_root))
        lock = backend.lock_path(state_dir(), image_root)

        def filled(conn: Connection) -> None:
            assert fill is not None
            fill(Writer(conn, backend))

        engine = prepare(backend, readonly=readonly, lock=lock,
                         fill=filled if fill is not None else None)
        return cls(backend, engine, lock)

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

    def location(self) -> str:
        return self.backend.location()

    def revision(self) -> str | None:
        return current_revision(self.engine)

    # -- transactions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Reader]:
        with self.engine.connect() as conn, conn.begin():
            yield Reader(conn, self.backend)

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """The writers' lock (one writer per index at a time), then a write transaction."""
        with contextlib.ExitStack() as stack:
            if self._lock is not None:
                stack.enter_context(writer_lock(self._lock))
            conn = stack.enter_context(self.engine.connect().execution_options(write=True))
            stack.enter_context(conn.begin())
            yield Writer(conn, self.backend)

    # -- fast reads ---------------------------------------------------------------------------
    def prefix(self, lo: str, hi: str, limit: int) -> list[str]:
        """Up to ``limit`` image IDs in [lo, hi), sorted."""
        return [row[0] for row in self._reader.rows(PREFIX_SQL, {"lo": lo, "hi": hi,
                                                                 "n": limit})]

    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        """Every row of each query as a plain tuple, all from one snapshot."""
        return self._reader.fetch(*queries)

    def sql(self, query: str, params: Sequence[Any] = ()) -> Result:
        """One read-only statement, through the sandbox."""
        return sqlbox.run(self.backend, self.engine, query, params)

    def close(self) -> None:
        self._reader.close()
        self.engine.dispose()


__all__ = ["Index"]
