"""PostgreSQL: nothing to tune per connection; writers serialise on an advisory lock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, text

# One lock number for "imagestore writer"; sessions on other databases do not collide.
WRITER_LOCK = 0x696D6773


def connect_args() -> dict[str, Any]:
    return {}


def configure(engine: Engine, *, readonly: bool = False) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("write", False):
            conn.execute(text("SELECT pg_advisory_xact_lock(:n)"), {"n": WRITER_LOCK})


def is_corrupt(exc: BaseException) -> bool:
    return False
