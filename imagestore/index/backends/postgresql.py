"""PostgreSQL: nothing to tune per connection; writers serialise on an advisory lock, and
``sql`` runs in a read-only transaction that the server enforces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, event, text

from imagestore.errors import ImageStoreError
from imagestore.index.backends.base import Backend, Result

# One lock number for "imagestore writer"; sessions on other databases do not collide.
WRITER_LOCK = 0x696D6773


class PostgreSQLBackend(Backend):
    PLACEHOLDER = "%s"

    def connect_args(self) -> dict[str, Any]:
        return {}

    def configure(self, engine: Engine, *, building: bool = False) -> None:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            if conn.get_execution_options().get("write", False):
                conn.execute(text("SELECT pg_advisory_xact_lock(:n)"), {"n": WRITER_LOCK})

    def readonly_query(self, engine: Engine, sql: str, params: Sequence[Any],
                       timeout: float | None = None) -> Result:
        """In a read-only transaction with a statement timeout, through a server-side cursor."""
        if ";" in sql:
            raise ImageStoreError("sql: only a single statement is allowed")
        if params:
            raise ImageStoreError("sql: -p placeholders need an SQLite index")
        conn = engine.connect()
        try:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if timeout:
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            # A server-side cursor for the query alone: rows come as they are read.
            result = conn.execute(text(sql).execution_options(stream_results=True,
                                                              yield_per=1000))
        except Exception as exc:
            conn.close()
            raise ImageStoreError(f"sql: {exc}") from None
        columns = list(result.keys())

        def rows() -> Iterator[tuple[Any, ...]]:
            try:
                for row in result:
                    yield tuple(row)
            except Exception as exc:
                raise ImageStoreError(f"sql: {exc}") from None
            finally:
                conn.rollback()
                conn.close()

        return columns, rows()


__all__ = ["PostgreSQLBackend"]
