"""The index database: where it lives, how to connect, and bringing it to the schema head.

Only Alembic revisions create or change the schema; opening an index applies any pending ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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

from imagestore.errors import IndexCorrupt, IndexUnavailable
from imagestore.index.backends import Backend
from imagestore.index.backends.base import Fill
from imagestore.index.location import HEAD, default_index_path

T = TypeVar("T")

if TYPE_CHECKING:
    from alembic.config import Config

    from imagestore.index.location import Identity

def index_url(index: str | os.PathLike[str] | None, root: Path) -> str:
    """An SQLAlchemy URL for ``index``: ``None`` (default file), a path, or a URL."""
    if index is None:
        index = default_index_path(root)
    text = os.fspath(index)
    if not text.strip():
        raise IndexUnavailable("the index path is empty (give a file path or a URL)")
    for short in ("postgresql://", "postgres://"):
        if text.startswith(short):  # the driver imagestore depends on: psycopg (3)
            text = "postgresql+psycopg://" + text[len(short):]
    if "://" not in text:
        return "sqlite:///" + os.path.abspath(text)
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise IndexUnavailable(f"invalid index URL {text!r}: {exc}") from None
    database = url.database
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not database.startswith("file:") and not os.path.isabs(database):
        # Relative to where the command runs, as a plain path would be.
        return url.set(database=os.path.abspath(database)).render_as_string(
            hide_password=False)
    return text


def make_engine(backend: Backend) -> Engine:
    backend.prepare()
    try:
        engine = create_engine(backend.engine_url(), connect_args=backend.connect_args())
    except (ArgumentError, ImportError) as exc:
        raise IndexUnavailable(f"cannot use index {backend.url!r}: {exc}") from None
    backend.configure(engine)
    return engine


# Values in one ``IN (...)`` and rows in one ``executemany``: well under every backend's limit
# on bound parameters, and large enough that the per-statement cost disappears.
IN_BATCH = 500
ROW_BATCH = 5000


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


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


def migrations_dir() -> Path:
    """Alembic scripts: packaged as ``imagestore._migrations``, or ./migrations in a checkout."""
    spec = importlib.util.find_spec("imagestore._migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


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


def upgrade(engine: Engine, revision: str = "head", identity: Identity | None = None
            ) -> None:
    """Apply pending revisions; an index at ``HEAD`` costs one query. ``identity``: the
    store whose root the index mirrored, for a revision that names an older index's rows."""
    if revision == "head" and current_revision(engine) == HEAD:
        return
    from alembic import command

    cfg = alembic_config()
    if identity is not None:
        cfg.attributes["store"] = dataclasses.asdict(identity)
    with engine.connect().execution_options(write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def prepare(backend: Backend, *, readonly: bool, lock: Path, fill: Fill | None = None,
            identity: Identity | None = None) -> Engine:
    """An engine on an index at the schema head.

    A new index is built by the backend, filled by ``fill`` (one write transaction) before
    anyone sees it; a corrupt one is set aside and rebuilt the same way (it is derived
    data), except when opened read-only. A file that is not recognisably an index of ours
    is never touched. An index that cannot be written is used as it stands."""
    backend.identify()
    if backend.frozen:
        engine = make_engine(backend)
        revision = current_revision(engine)
        if revision != HEAD:
            engine.dispose()
            raise IndexUnavailable(f"index {backend.location()} cannot be written and is at "
                                   f"revision {revision}, not {HEAD}: it needs an upgrade")
        return engine
    backend.build(lock, upgrade, fill)
    engine = make_engine(backend)
    try:
        upgrade(engine, identity=identity)
        return engine
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        if not backend.is_corrupt(exc):
            raise IndexUnavailable(f"cannot open index {backend.location()}: "
                                   f"{exc.orig or exc}") from None
        if readonly:
            raise corrupt(backend, exc) from None
    rebuild(backend, lock, fill)
    engine = make_engine(backend)
    upgrade(engine)
    return engine


def corrupt(backend: Backend, exc: BaseException) -> IndexCorrupt:
    detail = getattr(exc, "orig", None) or exc
    return IndexCorrupt(f"index {backend.location()} is corrupt ({detail}); rebuild it with "
                        f"`imagestore sync --full` (Store.sync(full=True)) or delete it")


def rebuild(backend: Backend, lock: Path, fill: Fill | None) -> None:
    """Set a corrupt index aside (it is derived data) and build it again from the root."""
    aside = backend.set_aside()
    warnings.warn(f"index {backend.location()} is corrupt: moved to {aside} and rebuilt from "
                  f"the root", stacklevel=4)
    backend.build(lock, upgrade, fill)  # which removes the corrupt index's logs
