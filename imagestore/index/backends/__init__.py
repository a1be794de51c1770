"""The databases an index can live in; ``for_url`` is the one place that picks one."""

from __future__ import annotations

from sqlalchemy import make_url

from imagestore.errors import IndexUnavailable
from imagestore.index.backends.base import Backend
from imagestore.index.backends.postgresql import PostgreSQLBackend
from imagestore.index.backends.sqlite import SQLiteBackend
from imagestore.index.fastread import FastReader

_BACKENDS: dict[str, type[Backend]] = {
    "sqlite": SQLiteBackend,
    "postgresql": PostgreSQLBackend,
}


def for_url(url: str) -> Backend:
    name = make_url(url).get_backend_name()
    try:
        return _BACKENDS[name](url)
    except KeyError:
        raise IndexUnavailable(
            f"unsupported index database {name!r} (use SQLite or PostgreSQL)") from None


__all__ = ["Backend", "FastReader", "for_url"]
