"""The index: the one package that speaks SQL. Schema, engine and connections, every query
and every write, the fast reader, the ``sql`` sandbox, and the database backends."""

from __future__ import annotations

from imagestore.index.buckets import UNKNOWN, Digests
from imagestore.index.database import Index
from imagestore.index.queries import Reader
from imagestore.index.rows import ImageRow, image_row, row_chain, row_id
from imagestore.index.writes import Released, Writer

__all__ = ["UNKNOWN", "Digests", "ImageRow", "Index", "Reader", "Released", "Writer",
           "image_row", "row_chain", "row_id"]
