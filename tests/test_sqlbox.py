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


@pytest.mark.parametrize(("query", "name"), [
    ("SELECT hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),  # a pointer of the process
    ("SELECT fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer"),
    ("SELECT x FROM (SELECT FTS3_TOKENIZER('simple') AS x)", "fts3_tokenizer"),
    ("SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get"),  # refused by default
    ("SELECT sqlite_log(1, 'x')", "sqlite_log"),
    ("SELECT load_extension('/nonexistent.so')", "load_extension"),
    ("WITH t(x) AS (SELECT zeroblob(10)) SELECT length(x) FROM t", "zeroblob"),
])
def test_functions_off_the_allow_list_are_refused(synced: Index, query: str,
                                                  name: str) -> None:
    """The sandbox is an allow-list of functions: SQLite's ``fts3_tokenizer`` (and whatever
    function the next build adds) is refused, by name."""
    with pytest.raises(ImageStoreError, match=rf"^sql: function {name}\(\) is not allowed"):
        synced.sql(query)
    with pytest.raises(ImageStoreError, match=r"is not allowed"):
        synced.backend.readonly_query(synced.engine, query, ())


def test_the_allowed_functions_answer(synced: Index) -> None:
    query = ("SELECT abs(-1), upper('a'), json_extract('{\"a\": 2}', '$.a'), '{\"b\": 3}' ->> 'b', "
             "julianday('2000-01-01'), strftime('%Y', '2000-01-01'), sqrt(16), "
             "coalesce(NULL, 1), iif(1, 'y', 'n'), printf('%d', 5), 'ab' LIKE 'a%', "
             "count(*) OVER (), row_number() OVER () FROM images LIMIT 1")
    assert list(synced.sql(query)[1]) == [(1, "A", 2, 3, 2451544.5, "2000", 4.0, 1, "y", "5",
                                            1, 39, 1)]


def test_every_view_reads_through_the_sandbox(synced: Index) -> None:
    """The views call functions too (``group_concat``, ``max``…): all on the list."""
    for view in ("image_list", "image_layers", "layer_usage", "sync_problems", "store_summary",
                 "layer_stores", "shared_layers", "tag_list"):
        columns, rows = synced.sql(f"SELECT * FROM {view}")
        assert columns and list(rows) is not None
