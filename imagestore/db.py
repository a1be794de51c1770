"""The index database: where it lives, how to connect, and bringing it to the schema head.

Only Alembic revisions create or change the schema; opening an index applies any pending ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    inspect,
    literal,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from imagestore.dialects import postgresql, sqlite
from imagestore.errors import IndexUnavailable

T = TypeVar("T")

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions (a test keeps the two equal): an index already
# there opens without importing Alembic at all, which a warm CLI call notices.
HEAD = "0004"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagestore"


def default_index_path(root: Path) -> Path:
    """One SQLite file per root, named after it so a person can tell them apart."""
    real = os.path.realpath(root)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", real).strip("-")[-48:] or "root"
    return state_dir() / f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:12]}.sqlite"


def index_url(index: str | os.PathLike[str] | None, root: Path) -> str:
    """An SQLAlchemy URL for ``index``: ``None`` (default file), a path, or a URL."""
    if index is None:
        index = default_index_path(root)
    text = os.fspath(index)
    for short in ("postgresql://", "postgres://"):
        if text.startswith(short):  # the driver imagestore depends on: psycopg (3)
            text = "postgresql+psycopg://" + text[len(short):]
    if "://" in text:
        try:
            make_url(text)
        except ArgumentError as exc:
            raise IndexUnavailable(f"invalid index URL {text!r}: {exc}") from None
        return text
    return "sqlite:///" + os.path.abspath(text)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _dialect(url: str) -> ModuleType:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return sqlite
    if backend == "postgresql":
        return postgresql
    raise IndexUnavailable(f"unsupported index database {backend!r} (use SQLite or PostgreSQL)")


def make_engine(url: str) -> Engine:
    dialect = _dialect(url)
    path = sqlite_path(url)
    if path is not None:
        try:
            sqlite.prepare_file(path)
        except OSError as exc:
            raise IndexUnavailable(f"cannot create index {path}: {exc.strerror or exc}") from None
    try:
        engine = create_engine(url, connect_args=dialect.connect_args())
    except (ArgumentError, ImportError) as exc:
        raise IndexUnavailable(f"cannot use index {url!r}: {exc}") from None
    dialect.configure(engine)
    return engine


# Values in one ``IN (...)`` and rows in one ``executemany``: well under every backend's limit
# on bound parameters, and large enough that the per-statement cost disappears.
IN_BATCH = 500
ROW_BATCH = 5000


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]] | Sequence[
        Sequence[Any]], columns: Sequence[str] | None = None) -> None:
    """``executemany`` straight to the driver: the cold sync inserts hundreds of thousands of
    rows, and per-row parameter processing would cost more than SQLite's own work. Rows are
    dicts, or tuples in the order of ``columns`` (cheaper to bind)."""
    if not rows:
        return
    if columns is None:
        names = list(rows[0])
        marks = [f":{c}" if conn.dialect.name == "sqlite" else f"%({c})s" for c in names]
    else:
        names = list(columns)
        marks = ["?" if conn.dialect.name == "sqlite" else "%s"] * len(names)
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(marks)})",
        list(rows))


BULK_MIN = 20000


@contextlib.contextmanager
def bulk_load(conn: Connection, tables: Sequence[Table], expected: int) -> Iterator[None]:
    """While a large load fills empty tables, drop their secondary indexes and build each
    once at the end: one sort beats a random B-tree insert per row (the cold sync's case).
    DDL is transactional here, so a failed load rolls the indexes back too."""
    empty = [t for t in tables
             if conn.execute(select(literal(1)).select_from(t).limit(1)).first() is None]
    indexes = [ix for t in empty for ix in t.indexes] if expected >= BULK_MIN else []
    for ix in indexes:
        ix.drop(conn)
    yield
    for ix in indexes:
        ix.create(conn)


def is_corrupt(engine: Engine, exc: BaseException) -> bool:
    return bool(_dialect(str(engine.url)).is_corrupt(exc))


def migrations_dir() -> Path:
    """Alembic scripts: packaged as ``imagestore._migrations``, or ./migrations in a checkout."""
    spec = importlib.util.find_spec("imagestore._migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        value = conn.scalar(text("SELECT version_num FROM alembic_version"))
        return None if value is None else str(value)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply pending revisions; an index at ``HEAD`` costs one query."""
    if revision == "head" and current_revision(engine) == HEAD:
        return
    from alembic import command

    cfg = alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def lock_path(url: str, root: Path) -> Path:
    path = sqlite_path(url)
    if path is not None:
        return path.with_name(path.name + ".lock")
    key = hashlib.sha256(f"{url}\0{os.path.realpath(root)}".encode()).hexdigest()[:16]
    folder = state_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / f"{key}.lock"


@contextlib.contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """One writer per index at a time, across processes: an ``flock`` on a file beside it
    (released by the kernel if the holder dies)."""
    with _unavailable(path, "cannot lock index"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _unavailable(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise IndexUnavailable(f"{what} {path}: {exc.strerror or exc}") from None


Fill = Callable[[Connection], None]


def prepare(url: str, *, readonly: bool, lock: Path, fill: Fill | None = None) -> Engine:
    """An engine on an index at the schema head.

    A new SQLite index is built aside, filled by ``fill`` (one write transaction), and put in
    place by a rename; a corrupt one is set aside and rebuilt the same way (it is derived
    data), except when opened read-only."""
    path = sqlite_path(url)
    if path is not None:
        _build(path, lock, fill)
    engine = make_engine(url)
    try:
        upgrade(engine)
        return engine
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        if path is None or not is_corrupt(engine, exc):
            raise IndexUnavailable(f"cannot open index {url}: {exc.orig or exc}") from None
        if readonly:
            raise IndexUnavailable(
                f"index {path} is corrupt; open without --readonly to rebuild it") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    warnings.warn(f"index {path} is corrupt: moved to {aside.name} and rebuilt from the root",
                  stacklevel=3)
    shutil.move(path, aside)
    _build(path, lock, fill)  # which removes the corrupt index's logs
    engine = make_engine(url)
    upgrade(engine)
    return engine


def _build(path: Path, lock: Path, fill: Fill | None) -> None:
    """Create the SQLite index ``path`` unless it exists: in a private file with no journal on
    disk, so each page is written once (a WAL index writes every page twice, and a cold sync
    writes hundreds of MB), then switched to WAL and renamed into place whole. Under the
    writers' lock: a process opening the index meanwhile waits for it, then uses it; one
    killed half-way leaves only the private file, which the next build removes."""
    if path.exists():
        return
    if path.is_symlink():  # building aside would replace the link itself
        raise IndexUnavailable(f"cannot create index {path}: it is a symlink to nothing")
    new = path.with_name(path.name + ".new")
    with _unavailable(path, "cannot create index"):
        sqlite.prepare_folder(path.parent)
    with writer_lock(lock):
        if path.exists():
            return
        with _unavailable(path, "cannot create index"):
            # Logs of a deleted index (left by a process killed while it wrote) would be
            # taken for the new one's and replayed into it.
            sqlite.remove_journals(path)
            sqlite.remove_database(new)
            sqlite.prepare_file(new)
        engine = create_engine("sqlite:///" + str(new), connect_args=sqlite.connect_args())
        sqlite.configure(engine, building=True)
        try:
            upgrade(engine)
            if fill is not None:
                with engine.connect().execution_options(write=True) as conn, conn.begin():
                    fill(conn)
            engine.dispose()
            with _unavailable(path, "cannot create index"):
                sqlite.publish(new, path)
        except BaseException:
            engine.dispose()
            sqlite.remove_database(new)
            raise
