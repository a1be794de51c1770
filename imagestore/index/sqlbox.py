"""The ``sql`` command's sandbox: one read-only statement over the index, a security
boundary (the index holds every config's ``Env`` and build arguments).

Two walls: the statement must start as a query does (``SELECT``, ``WITH``, ``VALUES``,
``EXPLAIN``), and the backend runs it where the database itself refuses any write (SQLite:
a read-only connection whose authorizer denies everything but reads and an allow-list of
functions, ``fastread.ALLOWED_FUNCTIONS``; PostgreSQL: a read-only transaction, as a role
that can reach neither the server's files nor other sessions).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from imagestore.errors import ImageStoreError
from imagestore.index.fastread import Result

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from imagestore.index.backends import Backend

_ALLOWED_START = re.compile(r"\s*(select|with|values|explain)\b", re.IGNORECASE)
_COMMENTS = re.compile(r"(--[^\n]*\n?)|(/\*.*?\*/)", re.DOTALL)


def statement(query: str) -> str:
    """The query without comments or a trailing ``;``, if it may be run at all."""
    body = _COMMENTS.sub(" ", query).strip().rstrip(";").strip()
    if not _ALLOWED_START.match(body):
        raise ImageStoreError(
            "sql: only a single SELECT / WITH / VALUES / EXPLAIN statement is allowed")
    return body


def run(backend: Backend, engine: Engine, query: str, params: Sequence[Any] = (),
        timeout: float | None = None, *, allow_privileged_role: bool = False) -> Result:
    """Column names and rows (as they come) of one read-only statement, stopped after
    ``timeout`` seconds; anything else is refused and nothing is written. On a server, a
    role that could reach past the database is refused unless ``allow_privileged_role``."""
    return backend.readonly_query(engine, statement(query), params, timeout,
                                  allow_privileged_role=allow_privileged_role)


__all__ = ["run", "statement"]
