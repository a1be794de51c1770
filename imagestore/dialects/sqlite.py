"""SQLite: WAL so readers never block, ``BEGIN IMMEDIATE`` so writers queue instead of
failing half-way, a busy timeout so contention waits, and private files (configs hold secrets).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

BUSY_TIMEOUT_S = 60.0
# Configs are a few KB each: on 4 KB pages most rows take a page of their own, on larger
# ones several share it. At 100,000 images, 16 KB pages wrote 17 % less than 4 KB ones and a
# cold sync took ~10 % less time; 32 KB pages take another ~3 % off (fewer, larger writes),
# with the same warm open, listing and search times; 64 KB ones gain nothing more.
PAGE_SIZE = 32768


def connect_args() -> dict[str, Any]:
    # isolation_level=None: pysqlite must not BEGIN on its own; the begin event does.
    return {"timeout": BUSY_TIMEOUT_S, "isolation_level": None}


def prepare_folder(folder: Path) -> None:
    """The index's folder, 0700 when imagestore creates it (whatever the umask)."""
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)


def prepare_file(path: Path) -> None:
    """Create the index 0600 in a 0700 folder (whatever the umask); warn if others can read."""
    prepare_folder(path.parent)
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
            stacklevel=3,
        )


def remove_journals(path: Path) -> None:
    """Whatever journal a database file may have left beside it."""
    for suffix in ("-journal", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def remove_database(path: Path) -> None:
    path.unlink(missing_ok=True)
    remove_journals(path)


def publish(new: Path, path: Path) -> None:
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


def configure(engine: Engine, *, readonly: bool = False, building: bool = False) -> None:
    """``building``: a private file that ``publish`` will put in place; its journal is kept
    in memory and nothing is synced until then (a crash leaves a file nobody uses)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if building:
            cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode = MEMORY")
            cur.execute("PRAGMA synchronous = OFF")
        elif not readonly:
            # Only a new, empty file takes it (before WAL is on); an older index keeps its own.
            cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_corrupt(exc: BaseException) -> bool:
    """An error that means the file is not a usable SQLite database."""
    text = str(exc).lower()
    return "file is not a database" in text or "malformed" in text
