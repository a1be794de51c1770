"""PostgreSQL: nothing to tune per connection; a store's writers serialise on an advisory
lock of that store (other stores' writers go on), and ``sql`` runs in a read-only
transaction that the server enforces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, event, text

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
