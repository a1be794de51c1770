"""An index: one database (an SQLite file or a PostgreSQL database) that mirrors an image
root, opened at the schema head, with its writers' lock and its fast reader."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.sql import ClauseElement

from imagestore.errors import IndexUnavailable, NoSuchStore
from imagestore.index import sqlbox, stores
from imagestore.index.backends import Backend, for_url
from imagestore.index.engine import (
    corrupt,
    current_revision,
    index_url,
    make_engine,
    prepare,
    rebuild,
    upgrade,
)
from imagestore.index.fastread import Result, stamp_synced
from imagestore.index.location import (
    Identity,
    StoreInfo,
    identity,
    stamp_due,
    state_dir,
    within,
)
from imagestore.index.locks import writer_lock
from imagestore.index.queries import Reader
from imagestore.index.writes import Writer

_DB_ERRORS = (DatabaseError, sqlite3.DatabaseError)


class Index:
    """Use ``Index.open``; reads and writes go through ``read()`` and ``write()``, and see
    the rows of one store of the index (``store``)."""

    def __init__(self, backend: Backend, engine: Engine, lock: Path | None,
                 store: StoreInfo | None = None, *, redact: bool = False) -> None:
        self.backend = backend
        self.engine = engine
        self._lock = lock
        self._store = store
        self.redact = redact
        self.moved = False  # the store's name was given to this root: read it again whole
        self._reader = backend.fast_reader(engine)

    @classmethod
    def open(cls, index: str | os.PathLike[str] | None, image_root: Path, *, readonly: bool,
             fill: Callable[[Writer], None] | None = None,
             forbidden: Sequence[Path] = (), name: str | None = None,
             keep_env: bool = False, rename_root: bool = False) -> Index:
        """The store of ``image_root`` (named ``name``, default ``HOST:/real/path``) in the
        index ``index`` (``None``: the default file for ``image_root``, a path, or an
        SQLAlchemy URL), created and migrated as needed. A new index is filled by ``fill``
        inside its first write transaction, before any other process can see it. An index
        file inside one of the ``forbidden`` folders is refused before anything is done.

        An index on a server (not a local file) stores configs with their Env values and
        build arguments redacted, unless ``keep_env``. A name that belongs to another root
        is refused (``StoreNameTaken``) unless ``rename_root``, which gives it to this root
        (``moved`` is then set: the store's rows are another root's until read again)."""
        who = identity(image_root, name)
        backend = for_url(index_url(index, image_root))
        redact = backend.SHARED and not keep_env
        if backend.file is not None:
            for folder in forbidden:
                if within(backend.file, folder):
                    raise IndexUnavailable(f"index {backend.file} is inside the Docker root "
                                           f"{folder}; keep it elsewhere")
        lock = backend.lock_path(state_dir(), image_root)

        def filled(conn: Connection) -> None:
            assert fill is not None
            info = stores.claim(conn, who, redacted=redact)
            fill(Writer(conn, backend, info.id, redact=redact))

        engine = prepare(backend, readonly=readonly, lock=lock,
                         fill=filled if fill is not None else None, identity=who)
        opened = cls(backend, engine, lock, redact=redact)
        try:
            opened._store = opened._claim(who, move=rename_root)
        except BaseException:
            opened.close()
            raise
        return opened

    def select(self, name: str) -> Identity:
        """See the store ``name`` from now on, as the index holds it (its root is not read,
        nor needed: it may be gone, or on another host); its identity, root included."""
        with self.engine.connect() as conn:
            found = stores.find(conn, name)
            if found is None:
                raise NoSuchStore(name, f"index {self.location()} holds no store named "
                                        f"{name!r}")
            self._store = found
            return stores.identity_of(conn, found.id)

    @classmethod
    def open_all(cls, index: str | os.PathLike[str]) -> Index:
        """An existing index, for what concerns all its stores (``stores``, ``forget``)."""
        backend = for_url(index_url(index, Path("/")))
        if backend.file is not None and not backend.file.exists():
            raise IndexUnavailable(f"no index at {backend.file}")
        lock = backend.lock_path(state_dir(), Path("/"))
        return cls(backend, prepare(backend, readonly=True, lock=lock), lock)

    def _claim(self, who: Identity, *, move: bool = False) -> StoreInfo:
        """This store's row, made (or adopted from an older index, or moved from another
        root with ``move``) in a short transaction of its own when it is not there yet."""
        with self.engine.connect() as conn:
            found = stores.find(conn, who.name)
            owner = None if found is None else stores.identity_of(conn, found.id)
        if found is not None and owner is not None \
                and stores.check_owner(owner, who, move=move):
            return found
        if self.frozen:
            raise NoSuchStore(who.name, f"index {self.location()} holds no store named "
                                        f"{who.name!r} and cannot be written") \
                if found is None else IndexUnavailable(f"index {self.location()} cannot be "
                                                       f"written: the store cannot be moved")
        with self._locked(store=None) as conn:
            info = stores.claim(conn, who, redacted=self.redact, move=move)
        self.moved = found is not None
        return info

    @property
    def store(self) -> StoreInfo:
        if self._store is None:
            raise IndexUnavailable("this index was opened without a store")
        return self._store

    @property
    def store_id(self) -> int:
        return self.store.id

    def rebuild(self, fill: Callable[[Writer], object]) -> None:
        """Set this (corrupt) index aside and build it again, filled by ``fill``; raises the
        ``IndexCorrupt`` it was given where the backend cannot set an index aside."""
        if self.file is None or self._lock is None:
            raise IndexUnavailable(f"index {self.location()} is corrupt and cannot be rebuilt "
                                   f"here")
        self.close()
        who = self._identity()

        def filled(conn: Connection) -> None:
            info = stores.claim(conn, who, redacted=self.redact)
            fill(Writer(conn, self.backend, info.id, redact=self.redact))

        rebuild(self.backend, self._lock, filled)
        self.engine = make_engine(self.backend)
        upgrade(self.engine)
        self._reader = self.backend.fast_reader(self.engine)
        self._store = self._claim(who)

    def _identity(self) -> Identity:
        with self.engine.connect() as conn:
            return stores.identity_of(conn, self.store_id)

    @classmethod
    def scratch(cls, image_root: Path) -> Index:
        """A private in-memory index at the schema head, seen by no other process, with one
        store for ``image_root``."""
        backend = for_url("sqlite://")
        engine = make_engine(backend)
        upgrade(engine)
        made = cls(backend, engine, None)
        made._store = made._claim(identity(image_root))
        return made

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

    def note_synced(self, when: dt.datetime) -> None:
        """Record that the store mirrored its root at ``when`` (an open that found nothing to
        sync), at most every ``STAMP_EVERY``: on SQLite without waiting for a writer (it is
        a courtesy), on a server in a short transaction of the store's own."""
        if self.frozen or not stamp_due(self.store.last_sync, when):
            return
        if self.backend.file is not None:
            stamp_synced(self.backend.file, self.store_id, when)
            return
        with self._locked(store=self.store_id) as conn:
            stores.synced(conn, self.store_id, when)

    # -- transactions -------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Reader]:
        """One snapshot of this store's rows, through the fast reader (SQLite: a plain
        connection)."""
        try:
            with self._reader.reader(self.store_id) as q:
                yield q
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """The writers' lock, then a write transaction on this store's rows. On SQLite one
        writer per index at a time (a lock file); on a server one per store (an advisory
        lock), so stores sync side by side."""
        with self._locked(store=self.store_id) as conn:
            yield Writer(conn, self.backend, self.store_id, redact=self.redact)

    @contextlib.contextmanager
    def _locked(self, *, store: int | None) -> Iterator[Connection]:
        if self.frozen:
            raise IndexUnavailable(f"index {self.location()} cannot be written")
        try:
            with contextlib.ExitStack() as stack:
                if self._lock is not None and self.backend.file is not None:
                    stack.enter_context(writer_lock(self._lock))
                conn = stack.enter_context(
                    self.engine.connect().execution_options(write=True, store=store))
                stack.enter_context(conn.begin())
                yield conn
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    # -- every store --------------------------------------------------------------------------
    def stores(self) -> list[dict[str, Any]]:
        """Every store of the index: name, host, root, driver, images, last_sync."""
        with self.engine.connect() as conn, conn.begin():
            return stores.listing(conn)

    def forget(self, name: str) -> None:
        """Delete every row of the store ``name`` (nothing on any disk)."""
        with self.engine.connect() as conn:
            found = stores.find(conn, name)
        if found is None:
            raise NoSuchStore(name, f"index {self.location()} holds no store named {name!r}")
        with self._locked(store=found.id) as conn:
            stores.forget(conn, found.id)

    def _damaged(self, exc: Exception) -> Exception:
        """A damaged index's error, wherever it surfaced, as one ``IndexCorrupt``; any other
        error as it is."""
        return corrupt(self.backend, exc) if self.backend.is_corrupt(exc) else exc

    # -- fast reads ---------------------------------------------------------------------------
    def fetch(self, *queries: ClauseElement) -> list[list[tuple[Any, ...]]]:
        """Every row of each query as a plain tuple, all from one snapshot."""
        try:
            return self._reader.fetch(*queries)
        except _DB_ERRORS as exc:
            raise self._damaged(exc) from None

    def sql(self, query: str, params: Sequence[Any] = (), timeout: float | None = None, *,
            allow_privileged_role: bool = False) -> Result:
        """One read-only statement through the sandbox: its columns, and its rows as they
        come (stopped after ``timeout`` seconds). On a server, a role that could reach past
        the database (a superuser, ``pg_read_server_files``, ``pg_signal_backend``…) is
        refused unless ``allow_privileged_role``."""
        try:
            columns, rows = sqlbox.run(self.backend, self.engine, query, params, timeout,
                                       allow_privileged_role=allow_privileged_role)
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
