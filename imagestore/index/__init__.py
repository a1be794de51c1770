"""The index: the one package that speaks SQL. Schema, engine and connections, every query
and every write, the fast reader, the ``sql`` sandbox, and the database backends.

Names are loaded on first use: a warm command line reads through ``queries``, ``fastread``
and ``quick`` alone, and must not pay for SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagestore.lazy import loader

if TYPE_CHECKING:
    from imagestore.index.buckets import UNKNOWN
    from imagestore.index.database import Index
    from imagestore.index.queries import Digests, Reader
    from imagestore.index.rows import ImageRow, image_row, row_chain, row_id
    from imagestore.index.writes import Released, Writer

_LAZY = {
    "UNKNOWN": "imagestore.index.buckets", "Digests": "imagestore.index.queries",
    "Index": "imagestore.index.database", "Reader": "imagestore.index.queries",
    "ImageRow": "imagestore.index.rows", "image_row": "imagestore.index.rows",
    "row_chain": "imagestore.index.rows", "row_id": "imagestore.index.rows",
    "Released": "imagestore.index.writes", "Writer": "imagestore.index.writes",
}


__getattr__ = loader(__name__, _LAZY, globals())


__all__ = ["UNKNOWN", "Digests", "ImageRow", "Index", "Reader", "Released", "Writer",
           "image_row", "row_chain", "row_id"]
