"""Every schema change is an Alembic revision, tested as an upgrade of an index with data."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pytest_alembic import Config
from pytest_alembic.tests import (  # noqa: F401 - pytest collects these built-in tests
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine, inspect, text

import imagestore
from imagestore.index import Index
from imagestore.index import engine as db
from imagestore.index.backends import for_url
from imagestore.index.location import HEAD
from imagestore.moby.root import Root
from imagestore.service import listing as report
from imagestore.sync import run


@pytest.fixture
def alembic_config() -> Config:
    # The scripts the installed package ships, not the checkout's: a plain install must work.
    return Config(config_options={"script_location": str(db.migrations_dir())})


@pytest.fixture
def alembic_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(for_url(f"sqlite:///{tmp_path / 'alembic.sqlite'}"))
    yield engine
    engine.dispose()


def test_migrations_ship_with_the_package() -> None:
    versions = {p.name for p in (db.migrations_dir() / "versions").glob("0*.py")}
    assert {"0001_initial.py", "0002_reporting_views.py", "0003_entry_buckets.py",
            "0004_listing_index.py", "0005_stores.py", "0006_misfiled_references.py",
            "0007_containerd_stores.py", "0008_layer_files.py"} <= versions
    assert db.head_revision() == HEAD == "0008"  # a warm open needs neither Alembic nor SQLAlchemy


# Revision 0006 has repositories.json read once more (for the references it used to skip).
REREAD_BY_0006 = {"repositories.json": 1}


def _index_at(revision: str, root: Path, path: Path) -> Engine:
    """An index that holds data, as the code of ``revision`` left it: filled at head, then
    taken down with the revisions' own downgrades (which keep the data of older tables)."""
    added: list[int] = []
    Index.open(path, root, readonly=False,
               fill=lambda tx: added.append(run(tx, Root(root)).added)).close()
    assert added == [39]
    engine = db.make_engine(for_url(f"sqlite:///{path}"))
    config = db.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    assert db.current_revision(engine) == revision
    return engine


def test_upgrade_0001_to_head_keeps_data(real_root: Path, tmp_path: Path) -> None:
    engine = _index_at("0001", real_root, tmp_path / "old.sqlite")
    before = _counts(engine)
    assert "image_list" not in inspect(engine).get_view_names()
    engine.dispose()

    with imagestore.open(real_root, tmp_path / "old.sqlite", sync=False) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert _counts(store.index.engine) == before
        assert len(store) == 39
        with store.index.engine.connect() as conn:
            heads = conn.execute(text("SELECT count(*) FROM image_list WHERE is_head")).scalar()
        assert heads == len(store.heads()) == 8


def test_upgrade_0002_to_0003_rereads_nothing_and_fills_the_buckets(
        real_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _index_at("0002", real_root, tmp_path / "old.sqlite")
    assert "entry_buckets" not in inspect(engine).get_table_names()
    before = _counts(engine, "entries")
    engine.dispose()
    # Gone while the index was at 0002: nothing of its bucket is left on disk.
    content = real_root / "imagedb/content/sha256"
    alone = next(p for p in sorted(content.iterdir())
                 if len(list(content.glob(p.name[:3] + "*"))) == 1
                 and not (real_root / "imagedb/metadata/sha256" / p.name).exists())
    alone.unlink()

    with imagestore.open(real_root, tmp_path / "old.sqlite") as store:
        assert store.last_sync is not None
        assert store.last_sync.read["imagedb/content/sha256/"] == 0  # none read again
        assert db.current_revision(store.index.engine) == HEAD
        assert "sha256:" + alone.name not in store
        assert len(store) == 38
        assert "entries" not in inspect(store.index.engine).get_table_names()
        report = store.sync()
        assert (report.added, report.removed, report.changed) == (0, 0, 0)
        with store.index.engine.connect() as conn:
            summed = conn.execute(text("SELECT sum(entries) FROM entry_buckets")).scalar()
            unknown = conn.execute(text(
                "SELECT count(*) FROM entry_buckets WHERE digest < 0")).scalar()
            listed = conn.execute(text(  # plain JSON: sqlite3 users can read it
                "SELECT count(*) FROM entry_buckets, json_each(entry_buckets.signatures)"
            )).scalar()
        assert (summed, listed, unknown) == (before["entries"] - 1, summed, 0)


def test_upgrade_0003_to_0004_lists_from_the_covering_index(real_root: Path,
                                                            tmp_path: Path) -> None:
    engine = _index_at("0003", real_root, tmp_path / "old.sqlite")
    before = _counts(engine)
    engine.dispose()
    with imagestore.open(real_root, tmp_path / "old.sqlite", sync=False) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert _counts(store.index.engine) == before
        with store.index.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id, created, chain_id FROM images "
                "WHERE store_id = 1"))
        assert "COVERING INDEX ix_images_listing" in plan
        assert len(report.image_rows(store)) == 13


def test_upgrade_0004_to_0005_makes_the_rows_the_default_store(real_root: Path,
                                                                tmp_path: Path) -> None:
    engine = _index_at("0004", real_root, tmp_path / "old.sqlite")
    before = _counts(engine, "entry_buckets", "problems", "settings")
    engine.dispose()
    with imagestore.open(real_root, tmp_path / "old.sqlite") as store:
        assert store.index.store.name == f"{socket.gethostname()}:{os.path.realpath(real_root)}"
        assert _counts(store.index.engine, "entry_buckets", "problems", "settings") == before
        assert store.last_sync is not None
        assert store.last_sync.read == REREAD_BY_0006  # nothing else read again
        rows = [tuple(r) for r in store.index.sql(
            "SELECT store, images, root FROM store_summary")[1]]
        assert rows == [(store.index.store.name, 39, os.path.realpath(real_root))]
        listed = [tuple(r) for r in store.index.sql(
            "SELECT count(*), count(DISTINCT store) FROM image_list")[1]]
        assert listed == [(39, 1)]


def test_an_index_upgraded_without_its_root_is_adopted_by_the_first_store(
        real_root: Path, tmp_path: Path) -> None:
    """``alembic upgrade head`` by hand does not know the root: the rows wait, unnamed, for
    the first store opened on the index."""
    engine = _index_at("0004", real_root, tmp_path / "old.sqlite")
    before = _counts(engine)
    config = db.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, root FROM stores")).all() == [("unnamed", None)]
    engine.dispose()
    with imagestore.open(real_root, tmp_path / "old.sqlite", name="mine") as store:
        assert store.index.store.name == "mine"
        assert _counts(store.index.engine) == before
        assert store.last_sync is not None and store.last_sync.read == REREAD_BY_0006
        assert [r["name"] for r in store.index.stores()] == ["mine"]


def test_downgrade_below_0005_refuses_an_index_with_several_stores(
        real_root: Path, tmp_path: Path) -> None:
    index = tmp_path / "two.sqlite"
    imagestore.open(real_root, index, name="one").close()
    with imagestore.open(real_root, index, name="two") as store:
        engine = store.index.engine
        config = db.alembic_config()
        with engine.begin() as conn, pytest.raises(RuntimeError, match="holds 2 stores"):
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert db.current_revision(engine) == "0005"  # 0007, 0006 went down; 0005 would not
        with engine.begin() as conn:  # forgetting is the head's code: back up to the head
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        store.index.forget("two")
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert db.current_revision(engine) == "0004"
        assert _counts(engine)["images"] == 39


def _counts(engine: Engine, *more: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("images", "image_parents", "layers", "mounts", "tags", *more)}


def test_a_plain_engine_sees_the_views(real_root: Path, index: Path) -> None:
    imagestore.open(real_root, index).close()
    engine = create_engine(f"sqlite:///{index}")
    assert {"image_list", "image_layers", "layer_usage", "sync_problems"} <= set(
        inspect(engine).get_view_names())
    engine.dispose()


def test_upgrade_0005_to_0006_lists_the_references_docker_lists(real_root: Path,
                                                                 tmp_path: Path) -> None:
    """An index of revision 0005 left out a tag filed under another repository's key;
    upgraded, it lists it (``other 1``, as ``docker images`` does) after reading
    repositories.json once more, and nothing else."""
    path = real_root / "repositories.json"
    doc = json.loads(path.read_text())
    web = doc["Repositories"]["web"]["web:1.0"]
    doc["Repositories"]["wrongrepo"] = {"other:1": web}
    path.write_text(json.dumps(doc))
    engine = _index_at("0005", real_root, tmp_path / "old.sqlite")
    before = _counts(engine, "problems")
    assert before["tags"] == 12  # the downgrade kept what 0005 made of the file
    engine.dispose()
    with imagestore.open(real_root, tmp_path / "old.sqlite") as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert store.last_sync is not None and store.last_sync.read == REREAD_BY_0006
        assert _counts(store.index.engine, "problems") == {**before, "tags": 13}
        assert ("other", "1", web) in {(r["repository"], r["tag"], r["id"])
                                       for r in report.image_rows(store)}
        assert [p.kind for p in store.last_sync.problems] == ["bad-reference"]


def test_upgrade_0006_to_0007_keeps_the_classic_store_beside_containerd_ones(
        real_root: Path, tmp_path: Path) -> None:
    """An index of revision 0006 holds a classic store; upgraded, its rows are kept, it is
    of kind ``moby``, every view has gained ``kind``, and containerd stores join it. Going
    back down forgets the containerd stores (0006 knows none) and keeps the classic one."""
    from ctd import unpack_a, unpack_c

    path = tmp_path / "old.sqlite"
    engine = _index_at("0006", real_root, path)
    before = _counts(engine, "problems", "entry_buckets", "settings")
    engine.dispose()
    ctd_c, docker_c = unpack_c(tmp_path / "c")
    ctd_a = unpack_a(tmp_path / "a")
    with imagestore.open(real_root, path) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert store.last_sync is not None and not store.last_sync.read  # nothing re-read
        assert _counts(store.index.engine, "problems", "entry_buckets", "settings") == before
    imagestore.open(ctd_c, path, docker_root=docker_c).close()
    imagestore.open(ctd_a, path, namespace="k8s.io").close()
    with imagestore.open(real_root, path) as store:
        kinds = {(r["kind"], r["namespace"], r["images"]) for r in store.index.stores()}
        assert kinds == {("moby", None, 39), ("containerd", "moby", 17),
                         ("containerd", "k8s.io", 3)}
        for view in ("image_list", "image_layers", "layer_usage", "sync_problems",
                     "store_summary", "layer_stores", "tag_list"):
            columns, _ = store.index.sql(f"SELECT * FROM {view} LIMIT 0")
            assert columns[-1] == {"store_summary": "namespace",
                                   "sync_problems": "store_kind"}.get(view, "kind")
        listed: dict[str, int] = dict(store.index.sql(
            "SELECT kind, count(*) FROM image_list GROUP BY kind")[1])
        assert listed == {"moby": 39, "containerd": 20}
        engine = store.index.engine
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
        assert db.current_revision(engine) == "0006"
        assert _counts(engine, "problems", "entry_buckets", "settings") == before
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stores")).scalar() == 1
            assert "kind" not in {c["name"] for c in inspect(conn).get_columns("stores")}


def test_upgrade_0007_to_0008_keeps_data_and_reads_file_lists_once(
        real_root: Path, tmp_path: Path) -> None:
    """An index of revision 0007 gains the empty file-list tables and the ``image_files``
    view; nothing is read until asked. Read once, the lists are keyed by diff ID (a second
    store of the same layers reads none again), the view agrees with the Python merge, and
    going back down drops them and keeps the rest."""
    from imagestore.service.files import image_files

    path = tmp_path / "old.sqlite"
    engine = _index_at("0007", real_root, path)
    before = _counts(engine, "problems", "entry_buckets", "settings")
    assert "layer_files" not in inspect(engine).get_table_names()
    engine.dispose()
    with imagestore.open(real_root, path) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert store.last_sync is not None and not store.last_sync.read
        assert _counts(store.index.engine, "problems", "entry_buckets", "settings") == before
        with store.index.engine.connect() as conn:  # an index that never asks stays as it was
            assert conn.execute(text("SELECT count(*) FROM layer_file_lists")).scalar() == 0
        report = store.read_files()
        diffs = {r[0] for r in store.index.sql("SELECT DISTINCT diff_id FROM layers")[1]}
        assert report.layers == len(diffs) and report.problems == []
        assert store.read_files().layers == 0  # each diff ID once
        for image in sorted(store.map()):
            merged = {(e.path, e.type, e.size) for e in image_files(store, image)}
            _, rows = store.index.sql("SELECT path, type, size FROM image_files "
                                      "WHERE image = ?", [image])
            assert {tuple(r) for r in rows} == merged
        entries = _counts(store.index.engine, "layer_files")["layer_files"]
    with imagestore.open(real_root, path, name="second") as other:
        assert other.read_files().layers == 0  # shared by every store of the index
        engine = other.index.engine
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0007")
        assert db.current_revision(engine) == "0007"
        assert "layer_files" not in inspect(engine).get_table_names()
        assert "image_files" not in inspect(engine).get_view_names()
        assert _counts(engine, "problems", "entry_buckets", "settings")["images"] == 78
    assert entries > 0
