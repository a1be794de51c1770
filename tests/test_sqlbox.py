"""The `sql` sandbox on its own: two walls, each holding without the other.

The first wall (``sqlbox.statement``) lets through only text that starts as a query does;
the second (the backend's ``readonly_query``) runs it where the database itself refuses any
write. Each is tested alone here; tests/test_cli_sql.py tests them together, end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from snapshot import dump

import imagestore
from imagestore import ImageStoreError
from imagestore.index import Index, sqlbox


@pytest.fixture
def synced(real_root: Path, index: Path) -> Iterator[Index]:
    with imagestore.open(real_root, index) as store:
        yield store.index


@pytest.mark.parametrize("query", [
    "SELECT 1", "  select 1;", "WITH x AS (SELECT 1) SELECT * FROM x", "VALUES (1)",
    "EXPLAIN QUERY PLAN SELECT 1", "-- a comment\nSELECT 1", "/* a\ncomment */ SELECT 1",
])
def test_the_first_wall_lets_queries_through(query: str) -> None:
    assert sqlbox.statement(query).lstrip().lower().startswith(
        ("select", "with", "values", "explain"))


@pytest.mark.parametrize("query", [
    "DELETE FROM images", "/* SELECT */ DELETE FROM images", "-- SELECT\nDROP TABLE images",
    "PRAGMA user_version = 7", "ATTACH DATABASE 'x' AS y", "", ";", "selectx 1",
])
def test_the_first_wall_stops_what_does_not_start_as_a_query(query: str) -> None:
    with pytest.raises(ImageStoreError, match="only a single SELECT"):
        sqlbox.statement(query)


@pytest.mark.parametrize("query", [
    "WITH x AS (SELECT 1) DELETE FROM images",
    "WITH x AS (SELECT 1) INSERT INTO settings SELECT 'a', 'b' FROM x",
    "DELETE FROM images", "UPDATE images SET os = 'x'", "DROP TABLE images",
    "ATTACH DATABASE ':memory:' AS other", "PRAGMA journal_mode = DELETE",
    "VACUUM", "select load_extension('/nonexistent.so')",
])
def test_the_second_wall_refuses_writes_the_first_would_let_by(synced: Index, index: Path,
                                                                query: str) -> None:
    """Straight to the backend, past the first wall: the database itself says no."""
    before = dump(index)
    with pytest.raises(ImageStoreError, match=r"^sql: "):
        synced.backend.readonly_query(synced.engine, query, ())
    assert dump(index) == before


def test_reads_answer_with_columns_and_bound_values(synced: Index) -> None:
    columns, rows = synced.sql("SELECT count(*) AS n, ? AS p FROM images", ("x",))
    assert (columns, list(rows)) == (["n", "p"], [(39, "x")])
    columns, rows = synced.sql(
        "WITH RECURSIVE up(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM up WHERE n < 3) "
        "SELECT n FROM up")
    assert list(rows) == [(1,), (2,), (3,)]


def test_a_bad_query_is_one_error_naming_the_problem(synced: Index) -> None:
    with pytest.raises(ImageStoreError, match="no such table: missing_table"):
        synced.sql("SELECT * FROM missing_table")
