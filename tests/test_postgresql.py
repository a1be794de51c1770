"""The index on PostgreSQL answers exactly as on SQLite (a real server, started by the test;
skipped, saying why, only where none can start)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from pg import create_database, postgres_server
from snapshot import rebuilt, snapshot
from sqlalchemy import inspect, text

import imagestore
from imagestore.index import engine as db
from imagestore.index.location import HEAD
from imagestore.service import listing as report


@pytest.fixture(scope="module")
def pg_base() -> Iterator[str]:
    yield from postgres_server()


@pytest.fixture
def pg_url(pg_base: str) -> str:
    return create_database(pg_base, "t" + uuid.uuid4().hex[:12])


def test_real_store_on_postgresql_matches_sqlite(real_root: Path, pg_url: str,
                                                 tmp_path: Path) -> None:
    with imagestore.open(real_root, pg_url) as store:
        assert db.current_revision(store.index.engine) == db.head_revision()
        assert snapshot(store) == rebuilt(real_root, tmp_path)
        for image_id in store.map():
            assert store.search(image_id[7:19]) == image_id
        with imagestore.open(real_root, tmp_path / "lite.sqlite") as lite:
            assert report.image_rows(store, all_images=True) == \
                report.image_rows(lite, all_images=True)
            assert [n.to_dict() for n in report.forest(store)] == \
                [n.to_dict() for n in report.forest(lite)]
        rows = list(store.index.sql("SELECT count(*) FROM image_list WHERE is_head")[1])
        assert rows == [(8,)]
        shared = list(store.index.sql("SELECT images FROM layer_usage ORDER BY images DESC")[1])
        assert shared[0][0] == 24


def test_writes_and_incremental_sync_on_postgresql(real_root: Path, pg_url: str,
                                                   tmp_path: Path) -> None:
    with imagestore.open(real_root, pg_url) as store:
        web = store.resolve("web:1.0")
        cfg = json.loads(store.get(web).raw)
        cfg["comment"] = "on postgresql"
        new = store.create(json.dumps(cfg).encode())
        store.set_parent(new, web)
        with pytest.raises(imagestore.ImageStoreError, match="cycle"):
            store.set_parent(web, new)
        released = store.delete(store.resolve("scratchy:latest"))
        assert [m.chain_id for m in released] == []  # its layer is shared with the old head
        (real_root / "imagedb/content/sha256" / new[7:]).unlink()  # behind the index's back
        result = store.sync()
        assert result.removed == 1
        assert snapshot(store) == rebuilt(real_root, tmp_path)


def test_sql_is_read_only_on_postgresql(real_root: Path, pg_url: str) -> None:
    with imagestore.open(real_root, pg_url) as store:
        for query in ("DELETE FROM images", "WITH x AS (SELECT 1) DELETE FROM images",
                      "SELECT 1; DELETE FROM images"):
            with pytest.raises(imagestore.ImageStoreError):
                store.index.sql(query)
        assert len(store) == 39


def test_upgrade_from_0002_with_data_on_postgresql(real_root: Path, pg_url: str,
                                                   tmp_path: Path) -> None:
    """Revision 0003 moves signatures into buckets with Python in the migration: it must
    run (and go back down) on PostgreSQL too, keeping every row."""
    with imagestore.open(real_root, pg_url) as store:
        assert len(store) == 39
        engine = store.index.engine
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        with engine.connect() as conn:
            entries = conn.execute(text("SELECT count(*) FROM entries")).scalar()
        assert entries and "entry_buckets" not in inspect(engine).get_table_names()
    with imagestore.open(real_root, pg_url) as store:
        assert db.current_revision(store.index.engine) == HEAD
        report_ = store.sync()
        assert (report_.added, report_.removed, report_.changed) == (0, 0, 0)
        with store.index.engine.connect() as conn:
            summed = conn.execute(text("SELECT sum(entries) FROM entry_buckets")).scalar()
        assert summed == entries
        assert snapshot(store) == rebuilt(real_root, tmp_path)
