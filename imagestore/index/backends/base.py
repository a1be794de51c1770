"""What the index asks of a database, declared once: every backend implements ``Backend``,
and nothing outside ``imagestore.index.backends`` asks which database it is talking to.

Adding a backend means one module here with a ``Backend`` subclass, and one line in
``backends.for_url``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, make_url
from sqlalchemy.sql import ClauseElement

from imagestore.index.fastread import FastReader, Result
from imagestore.index.queries import Reader

# Fills a new index inside its first write transaction (the connection is that transaction).
Fill = Callable[[Connection], None]
# Brings a new engine's database to the schema head.
Upgrade = Callable[[Engine], None]


class EngineReader(FastReader):
    """The portable fast reader: the engine itself, rows turned into tuples."""

    def __init__(self, engine: Engine, backend: Backend) -> None:
        self.engine = engine
        self.backend = backend

    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        with self.engine.connect() as conn, conn.begin():
            return [[tuple(r) for r in conn.execute(q)] for q in queries]  # type: ignore[call-overload]

    @contextlib.contextmanager
    def reader(self, store: int) -> Iterator[Reader]:
        with self.engine.connect() as conn, conn.begin():
            yield Reader(conn, self.backend, store)


class Backend(ABC):
    """One database server or file behind an index URL."""

    # The index is shared by many hosts (a server), not a local file of this one: it holds
    # configs with their secrets redacted unless asked otherwise.
    SHARED = False

    def __init__(self, url: str) -> None:
        self.url = url

    # -- where it is --------------------------------------------------------------------------
    @property
    def file(self) -> Path | None:
        """The database file, for a backend that keeps the index in one local file."""
        return None

    def location(self) -> str:
        """What ``info`` shows: the file, or the URL without its password."""
        return str(self.file) if self.file else make_url(self.url).render_as_string()

    def lock_path(self, state_dir: Path, root: Path) -> Path:
        """The file whose ``flock`` serialises this index's writers for one root."""
        key = hashlib.sha256(f"{self.url}\0{os.path.realpath(root)}".encode()).hexdigest()[:16]
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return state_dir / f"{key}.lock"

    # -- is it ours? --------------------------------------------------------------------------
    def identify(self) -> None:
        """Raise unless the database is empty or recognisably an index of ours: nothing else
        is ever written to, let alone set aside as corrupt."""
        return

    @property
    def frozen(self) -> bool:
        """The index exists but cannot be written (a read-only file or file system): it is
        read as it stands, neither migrated nor synced."""
        return False

    # -- connecting ---------------------------------------------------------------------------
    def engine_url(self) -> str:
        """The URL the engine connects with (a frozen index is opened read-only)."""
        return self.url

    def prepare(self) -> None:
        """Anything to do before the first connection (create a file, check modes)."""
        return

    @abstractmethod
    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for the DBAPI's ``connect``."""

    @abstractmethod
    def configure(self, engine: Engine, *, building: bool = False) -> None:
        """Per-connection settings and how a transaction begins (a read one, or a write one:
        ``execution_options(write=True)``); ``building``: the engine fills a new index that
        nobody else can see yet."""

    # -- a new or broken index ----------------------------------------------------------------
    def build(self, lock: Path, upgrade: Upgrade, fill: Fill | None) -> None:
        """Create the index if it does not exist, at the schema head and filled by ``fill``,
        so that it appears whole. A server database exists already: nothing to do."""
        return

    def is_corrupt(self, exc: BaseException) -> bool:
        """An error that means the index's storage is unusable (not a lost connection)."""
        return False

    def damage(self, engine: Engine) -> list[str]:
        """What the database's own check of its storage finds wrong (nothing: ``[]``)."""
        return []

    def set_aside(self) -> str:
        """Move a corrupt index out of the way (it is derived data); where it went."""
        raise NotImplementedError(f"{type(self).__name__} cannot set an index aside")

    # -- writing and reading ------------------------------------------------------------------
    # The DBAPI's positional parameter marker.
    PLACEHOLDER = "?"

    def bulk_insert(self, conn: Connection, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]], *, store: int) -> None:
        """``executemany`` straight to the driver, rows as tuples in ``columns`` order, all
        of them rows of ``store``: a cold sync inserts hundreds of thousands of rows, and
        per-row parameter processing (or a copy of each row to prepend the store) would cost
        more than the database's own work. The store's id is an int of ours, written into
        the statement."""
        if rows:
            marks = ", ".join([str(int(store))] + [self.PLACEHOLDER] * len(columns))
            conn.exec_driver_sql(f"INSERT INTO {table} (store_id, {', '.join(columns)}) "
                                 f"VALUES ({marks})", list(rows))

    def fast_reader(self, engine: Engine) -> FastReader:
        return EngineReader(engine, self)

    @abstractmethod
    def readonly_query(self, engine: Engine, sql: str, params: Sequence[Any],
                       timeout: float | None = None, *,
                       allow_privileged_role: bool = False) -> Result:
        """Run one statement the database itself guarantees cannot write, stopped after
        ``timeout`` seconds; rows are fetched as they are iterated (millions of them must not
        be held at once). A server refuses a role whose queries could reach past the
        database (its files, other sessions) unless ``allow_privileged_role``. Errors are
        raised as ``ImageStoreError`` with the database's message, on one line."""
