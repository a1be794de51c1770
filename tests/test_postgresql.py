"""The index on PostgreSQL answers exactly as on SQLite (a real server, started by the test;
skipped, saying why, only where none can start)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cli_helpers import run_cli
from pg import create_database, postgres_server
from snapshot import rebuilt, snapshot
from sqlalchemy import inspect, text

import imagestore
from imagestore.index import Index
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
        rows = list(store.index.sql("SELECT count(*) FROM image_list WHERE is_head",
                                    allow_privileged_role=True)[1])
        assert rows == [(8,)]
        shared = list(store.index.sql("SELECT images FROM layer_usage ORDER BY images DESC",
                                      allow_privileged_role=True)[1])
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
                store.index.sql(query, allow_privileged_role=True)
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


def _role(pg_url: str, role: str, *grants: str) -> str:
    """A login role made as the README's recipe makes a reporting role (plus ``grants``); the
    index's URL as that role."""
    import psycopg

    database = pg_url.split("/")[3].split("?")[0]
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        for statement in (f"CREATE ROLE {role} LOGIN",
                          f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
                          f"GRANT USAGE ON SCHEMA public TO {role}",
                          f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
                          f"ALTER ROLE {role} SET default_transaction_read_only = on",
                          *grants):
            conn.execute(statement)
    return pg_url.replace("imagestore@", f"{role}@")


def _one_line(message: str) -> bool:
    return message.count("\n") == 1 and "sqlalche" not in message and "[SQL" not in message


def test_sql_refuses_a_role_that_reaches_past_the_database(
        real_root: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 23, item 7: ``pg_read_file``, ``pg_terminate_backend`` and ``set_config`` ran with
    the role's full rights. A superuser, or a member of ``pg_signal_backend`` (or of the server
    file roles), is refused unless ``--allow-privileged-role``; a reporting role made as the
    README says runs read-only, and cannot read files or stop sessions."""
    imagestore.open(real_root, pg_url).close()  # the test server's role is a superuser
    whole = Index.open_all(pg_url)
    try:
        with pytest.raises(imagestore.ImageStoreError, match="the role imagestore is a super"):
            whole.sql("SELECT pg_read_file('PG_VERSION')")  # ran, and handed the file out
    finally:
        whole.close()
    superuser = run_cli(capsys, None, "--index", pg_url, "sql",
                        "SELECT pg_read_file('PG_VERSION')")
    assert superuser.code == 1 and _one_line(superuser.err)
    assert superuser.err.startswith("imagestore: sql: the role imagestore is a superuser")
    assert "--allow-privileged-role" in superuser.err and superuser.out == ""
    allowed = run_cli(capsys, None, "--index", pg_url, "sql", "--allow-privileged-role",
                      "SELECT count(*) AS n FROM images", "--json")
    assert allowed.json() == [{"n": 39}]

    signaller = _role(pg_url, "signaller", "GRANT pg_signal_backend TO signaller")
    refused = run_cli(capsys, None, "--index", signaller, "sql", "SELECT 1")
    assert refused.code == 1 and "a member of pg_signal_backend" in refused.err

    reporting = _role(pg_url, "reporting")
    with imagestore.open(real_root, pg_url) as store, store.index.engine.connect() as other:
        # ``other``: a session of the index's own role, which the reporting role cannot end
        pid = other.exec_driver_sql("SELECT pg_backend_pid()").scalar()

        def sql(query: str, *more: str) -> Any:
            return run_cli(capsys, None, "--index", reporting, "sql", query, *more)

        assert sql("SELECT count(*) AS n FROM image_list", "--json").json() == [{"n": 39}]
        assert sql("SELECT current_setting('transaction_read_only') AS ro",
                   "--json").json() == [{"ro": "on"}]
        for query in ("SELECT pg_read_file('PG_VERSION')",
                      f"SELECT pg_terminate_backend({pid})",
                      "SELECT lo_import('/etc/passwd')"):
            result = sql(query)
            assert result.code == 1 and _one_line(result.err), query
            assert result.err.startswith("imagestore: sql: "), result.err
        assert other.exec_driver_sql("SELECT 1").scalar() == 1  # never terminated
        whole = Index.open_all(reporting)  # one process, its connection pooled
        try:
            assert list(whole.sql("SELECT set_config('search_path', 'x', false)")[1]) == \
                [("x",)]
            # gone with the query's transaction: the next query on that connection
            assert list(whole.sql("SELECT current_setting('search_path')")[1]) != [("x",)]
        finally:
            whole.close()
        slow = sql("SELECT pg_sleep(30)", "--timeout", "0.5")
        assert slow.err == "imagestore: sql: stopped after 0.5 s (--timeout)\n"
        wrong = sql("SELECT * FROM no_such_table")
        assert wrong.code == 1 and _one_line(wrong.err)
        assert 'relation "no_such_table" does not exist' in wrong.err


def test_containerd_stores_beside_a_classic_one_on_postgresql(real_root: Path, pg_url: str,
                                                              tmp_path: Path) -> None:
    """A fleet index on PostgreSQL: a classic store, Docker 29's namespace and a Kubernetes
    node's, side by side; each answers as on SQLite; revision 0007 goes down (forgetting the
    containerd stores) and up again with the classic store's rows kept."""
    from ctd import unpack_a, unpack_c

    ctd_c, docker_c = unpack_c(tmp_path / "c")
    ctd_a = unpack_a(tmp_path / "a")
    lite = tmp_path / "lite.sqlite"
    answers = {}
    for where in (lite, pg_url):
        with imagestore.open(ctd_c, where, docker_root=docker_c) as c, \
                imagestore.open(ctd_a, where, namespace="k8s.io") as k8s:
            answers[str(where)] = ([m.attrs for m in c.images.list(all=True)],
                                   sorted(c.heads()), [m.attrs for m in k8s.images.list()])
    assert answers[str(lite)] == answers[pg_url]
    with imagestore.open(real_root, pg_url) as store:
        kinds = sorted((r["kind"], r["namespace"] or "", r["images"])
                       for r in store.index.stores())
        assert kinds == [("containerd", "k8s.io", 3), ("containerd", "moby", 17),
                         ("moby", "", 39)]
        shared = list(store.index.sql(
            "SELECT kinds FROM shared_layers", allow_privileged_role=True)[1])
        assert all(isinstance(r[0], str) for r in shared)
        engine = store.index.engine
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stores")).scalar() == 1
    with imagestore.open(real_root, pg_url) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert len(store) == 39
        assert [r["kind"] for r in store.index.stores()] == ["moby"]


def test_file_lists_on_postgresql_answer_as_on_sqlite(real_root: Path, pg_url: str,
                                                      tmp_path: Path) -> None:
    """Revision 0008's lists and view on PostgreSQL: read once, the same files, which and
    view as on SQLite; the revision goes down and up again with the classic rows kept."""
    from imagestore.service.files import image_files, which_general

    answers = {}
    for where in (tmp_path / "lite.sqlite", pg_url):
        with imagestore.open(real_root, where) as store:
            report_ = store.read_files()
            assert report_.problems == []
            ids = sorted(store.map())
            answers[str(where)] = (
                {i: sorted((e.path, e.type, e.size, e.layer) for e in image_files(store, i))
                 for i in ids},
                store.which("*.txt"), which_general(store, "*.txt"),
                sorted(tuple(r) for r in store.index.sql(
                    "SELECT image, path, type, size FROM image_files",
                    allow_privileged_role=True)[1]))
            assert store.read_files().layers == 0  # read once
    lite, pg = answers[str(tmp_path / "lite.sqlite")], answers[pg_url]
    assert lite == pg
    assert pg[1] == pg[2] and len(pg[1]) > 10  # the store's .txt files, by both paths
    with imagestore.open(real_root, pg_url) as store:
        engine = store.index.engine
        config = db.alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0007")
        assert "layer_files" not in inspect(engine).get_table_names()
    with imagestore.open(real_root, pg_url) as store:
        assert db.current_revision(store.index.engine) == HEAD
        assert len(store) == 39
        assert store.read_files().layers > 0  # the lists went with the revision
