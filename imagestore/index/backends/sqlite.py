"""SQLite: WAL so readers never block, ``BEGIN IMMEDIATE`` so writers queue instead of
failing half-way, a busy timeout so contention waits, private files (configs hold secrets),
and a new index built aside so that it appears whole.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from imagestore.errors import ImageStoreError, IndexUnavailable
from imagestore.index.backends.base import Backend, Fill, Upgrade
from imagestore.index.fastread import (
    APPLICATION_ID,
    FastReader,
    Result,
    SQLiteReader,
    cannot_write,
    is_corrupt,
    readonly_query,
    readonly_uri,
)
from imagestore.index.locks import unavailable, writer_lock

BUSY_TIMEOUT_S = 60.0
_HEADER = b"SQLite format 3\x00"
# Configs are a few KB each: on larger pages several share one (figures in
# docs/performance.md); an older index keeps the page size it was made with.
PAGE_SIZE = 32768


class SQLiteBackend(Backend):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        database = make_url(url).database
        self._file = Path(database) if database and database != ":memory:" else None
        self._frozen = self._file is not None and cannot_write(self._file)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def identify(self) -> None:
        path = self._file
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IndexUnavailable(f"cannot read index {path}: {exc.strerror or exc}") from None
        if not head:
            return  # an empty file: a new index
        if len(head) < 100 or not head.startswith(_HEADER):
            raise IndexUnavailable(f"{path} is not an imagestore index (not an SQLite "
                                   f"database); not touching it")
        if int.from_bytes(head[68:72], "big") == APPLICATION_ID:
            return
        # An index made before application IDs, or another program's database.
        try:
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            raise IndexUnavailable(f"{path} is damaged and cannot be recognised as an "
                                   f"imagestore index; not touching it (remove it yourself "
                                   f"to rebuild the index)") from None
        if tables and not {"alembic_version", "images"} <= tables:
            raise IndexUnavailable(f"{path} is an SQLite database but not an imagestore "
                                   f"index; not touching it")

    @property
    def file(self) -> Path | None:
        return self._file

    def lock_path(self, state_dir: Path, root: Path) -> Path:
        if self._file is None:
            return super().lock_path(state_dir, root)
        return self._file.with_name(self._file.name + ".lock")

    def engine_url(self) -> str:
        if self._file is None or not self._frozen:
            return self.url
        return "sqlite:///" + readonly_uri(self._file) + "&uri=true"

    def prepare(self) -> None:
        if self._file is not None and not self._frozen:
            try:
                _prepare_file(self._file)
            except OSError as exc:
                raise IndexUnavailable(
                    f"cannot create index {self._file}: {exc.strerror or exc}") from None

    def connect_args(self) -> dict[str, Any]:
        # isolation_level=None: pysqlite must not BEGIN on its own; the begin event does.
        return {"timeout": BUSY_TIMEOUT_S, "isolation_level": None}

    def configure(self, engine: Engine, *, building: bool = False) -> None:
        """``building``: a private file that ``build`` will put in place; its journal is kept
        in memory and nothing is synced until then (a crash leaves a file nobody uses)."""

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if building:
                cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                cur.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                cur.execute("PRAGMA journal_mode = MEMORY")
                cur.execute("PRAGMA synchronous = OFF")
            elif self._frozen:
                cur.execute("PRAGMA query_only = ON")
            else:
                # Only a new, empty file takes it (before WAL is on).
                cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def build(self, lock: Path, upgrade: Upgrade, fill: Fill | None) -> None:
        """Create the index file unless it exists: in a private file with no journal on disk,
        so each page is written once (a WAL index writes every page twice), then switched to
        WAL and renamed into place whole. Under the writers' lock: a process opening the
        index meanwhile waits for it, then uses it; one killed half-way leaves only the
        private file, which the next build removes."""
        path = self._file
        if path is None or path.exists():
            return
        if path.is_symlink():  # building aside would replace the link itself
            raise IndexUnavailable(f"cannot create index {path}: it is a symlink to nothing")
        new = path.with_name(path.name + ".new")
        with unavailable(path, "cannot create index"):
            _prepare_folder(path.parent)
        with writer_lock(lock):
            if path.exists():
                return
            with unavailable(path, "cannot create index"):
                # Logs of a deleted index (left by a process killed while it wrote) would be
                # taken for the new one's and replayed into it.
                _remove_journals(path)
                _remove_database(new)
                _prepare_file(new)
            engine = create_engine("sqlite:///" + str(new), connect_args=self.connect_args())
            self.configure(engine, building=True)
            try:
                upgrade(engine)
                if fill is not None:
                    with engine.connect().execution_options(write=True) as conn, conn.begin():
                        fill(conn)
                engine.dispose()
                with unavailable(path, "cannot create index"):
                    _publish(new, path)
            except BaseException:
                engine.dispose()
                _remove_database(new)
                raise

    def is_corrupt(self, exc: BaseException) -> bool:
        return is_corrupt(exc)

    def damage(self, engine: Engine) -> list[str]:
        try:
            with engine.connect() as conn:
                found = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check")]
        except Exception as exc:  # a header or schema too damaged to check
            return [str(getattr(exc, "orig", None) or exc)]
        return [] if found == ["ok"] else found

    def set_aside(self) -> str:
        path = self._file
        assert path is not None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        os.replace(path, aside)
        return aside.name

    def fast_reader(self, engine: Engine) -> FastReader:
        if self._file is None or self._frozen:
            return super().fast_reader(engine)
        return SQLiteReader(self._file, engine.dialect)

    def readonly_query(self, engine: Engine, sql: str, params: Sequence[Any],
                       timeout: float | None = None, *,
                       allow_privileged_role: bool = False) -> Result:
        # A local file has no roles: the sandbox's authorizer is the whole boundary.
        if self._file is None:
            raise ImageStoreError("sql: the index is not a file")
        return readonly_query(self._file, sql, params, timeout)


def _prepare_folder(folder: Path) -> None:
    """The index's folder, 0700 when imagestore creates it (whatever the umask)."""
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)


def _prepare_file(path: Path) -> None:
    """Create the index 0600 in a 0700 folder (whatever the umask); warn if others can read."""
    _prepare_folder(path.parent)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(
            f"index {path} is readable by other users; image configs often hold secrets "
            f"(chmod 600 it)",
            stacklevel=4,
        )


def _remove_journals(path: Path) -> None:
    """Whatever journal a database file may have left beside it."""
    for suffix in ("-journal", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    _remove_journals(path)


def _publish(new: Path, path: Path) -> None:
    """Put a database built aside in place of ``path``: in WAL mode from its first reader on,
    on disk before it is visible, and visible at once and whole."""
    conn = sqlite3.connect(new, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    fd = os.open(new, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(new, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["SQLiteBackend"]
