"""PostgreSQL: nothing to tune per connection; a store's writers serialise on an advisory
lock of that store (other stores' writers go on), and ``sql`` runs in a read-only
transaction that the server enforces."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

from imagestore.errors import ImageStoreError
from imagestore.index.backends.base import Backend
from imagestore.index.fastread import Result

# One lock number for "imagestore writer"; sessions on other databases do not collide.
WRITER_LOCK = 0x696D6773


class PostgreSQLBackend(Backend):
    PLACEHOLDER = "%s"
    SHARED = True

    def connect_args(self) -> dict[str, Any]:
        return {}

    def configure(self, engine: Engine, *, building: bool = False) -> None:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            options = conn.get_execution_options()
            if not options.get("write", False):
                return
            store = options.get("store")
            if store is None:  # the index as a whole: a migration, a new store's row
                conn.execute(text("SELECT pg_advisory_xact_lock(:n)"), {"n": WRITER_LOCK})
            else:  # one store's rows: other stores' writers go on side by side
                conn.execute(text("SELECT pg_advisory_xact_lock(:n, :s)"),
                             {"n": WRITER_LOCK, "s": store})

    def readonly_query(self, engine: Engine, sql: str, params: Sequence[Any],
                       timeout: float | None = None, *,
                       allow_privileged_role: bool = False) -> Result:
        """In a read-only transaction with a statement timeout, through a server-side cursor,
        and, unless ``allow_privileged_role``, only as a role that cannot reach past the
        database: PostgreSQL lets a read-only transaction call ``pg_read_file`` (superusers,
        ``pg_read_server_files``) and ``pg_terminate_backend`` (``pg_signal_backend``), so a
        role that may is refused before the query runs. The transaction is rolled back, so
        whatever ``set_config`` set goes with it."""
        if ";" in sql:
            raise ImageStoreError("sql: only a single statement is allowed")
        if params:
            raise ImageStoreError("sql: -p placeholders need an SQLite index")
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            raise ImageStoreError(f"sql: cannot connect to {self.location()}: "
                                  f"{_message(exc)}") from None
        try:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if not allow_privileged_role:
                _refuse_privileged(conn)
            if timeout:
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            # A server-side cursor for the query alone: rows come as they are read.
            result = conn.execute(text(sql).execution_options(stream_results=True,
                                                              yield_per=1000))
        except BaseException as exc:
            conn.close()
            raise _sql_error(exc, timeout) from None
        columns = list(result.keys())

        def rows() -> Iterator[tuple[Any, ...]]:
            try:
                for row in result:
                    yield tuple(row)
            except BaseException as exc:
                raise _sql_error(exc, timeout) from None
            finally:
                with contextlib.suppress(DBAPIError):
                    conn.rollback()
                conn.close()

        return columns, rows()


# Roles whose members reach past the database from a read-only query: the server's files
# and programs (``pg_read_file``, ``lo_import``, ``COPY … PROGRAM`` through a function) and
# other sessions (``pg_terminate_backend``, ``pg_cancel_backend``).
PRIVILEGED_ROLES = ("pg_read_server_files", "pg_write_server_files",
                    "pg_execute_server_program", "pg_signal_backend")
_PRIVILEGED = ("SELECT r.rolname, r.rolsuper FROM pg_catalog.pg_roles r "
               "WHERE pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER') "
               "AND (r.rolsuper OR r.rolname IN ("
               + ", ".join(f"'{name}'" for name in PRIVILEGED_ROLES) + ")) "
               "ORDER BY r.rolsuper DESC, r.rolname")


def _refuse_privileged(conn: Connection) -> None:
    """Refuse a session role that is a superuser, or a member (direct or not) of a superuser
    role or of one of ``PRIVILEGED_ROLES``: ``SET ROLE`` from inside the query would reach
    any role it is a member of."""
    found = conn.exec_driver_sql(_PRIVILEGED).all()
    if not found:
        return
    user = conn.exec_driver_sql("SELECT session_user").scalar()
    name, superuser = found[0]
    what = ("a superuser" if name == user else f"a member of the superuser role {name}") \
        if superuser else f"a member of {', '.join(r[0] for r in found)}"
    raise ImageStoreError(f"sql: the role {user} is {what}, whose queries can read the "
                          f"server's files or stop other sessions; connect as a read-only "
                          f"reporting role (see the README) or pass --allow-privileged-role")


def _message(exc: BaseException) -> str:
    """The database's own message, on one line, without SQLAlchemy's statement and links."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    text_ = getattr(diag, "message_primary", None) or str(orig)
    return " ".join(text_.split())


def _sql_error(exc: BaseException, timeout: float | None) -> BaseException:
    if isinstance(exc, ImageStoreError) or not isinstance(exc, DBAPIError):
        return exc  # our own refusal, Ctrl-C, or a bug: as it is
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == _QUERY_CANCELED and timeout:
        return ImageStoreError(f"sql: stopped after {timeout:g} s (--timeout)")
    return ImageStoreError(f"sql: {_message(exc)}")


_QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request


__all__ = ["PostgreSQLBackend"]
