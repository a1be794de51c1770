"""Several stores in one index (a fleet inventory): each store's rows are its own, several
processes sync different stores at once, ``stores`` lists and forgets them, the views say
which store each row is from, and a server index holds no secrets by default. Every test runs
on SQLite and on a real PostgreSQL server started here (skipped, saying why, only when none
can start)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import copy_tree
from pg import create_database, postgres_server

import imagestore
from imagestore.index import Index, listing
from imagestore.index.backends import sqlite as sqlite_backend
from imagestore.index.location import HEAD
from imagestore.moby.redact import REDACTED, redact_config
from imagestore.service import listing as report

DATA = Path(__file__).parent / "data" / "docker-20.10-vfs" / "image" / "vfs"
GENERATOR = Path(__file__).resolve().parent.parent / "bench" / "gen_imagedb.py"


@pytest.fixture(scope="module")
def pg_base() -> Iterator[str]:
    yield from postgres_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_index(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One index for several stores: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    base = request.getfixturevalue("pg_base")
    return create_database(base, "f" + uuid.uuid4().hex[:12])


def _generated(top: Path, n: int, seed: int) -> Path:
    subprocess.run([sys.executable, str(GENERATOR), str(top), str(n), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    return top / "image" / "vfs"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three different hosts' stores: the real one and two generated ones."""
    top = tmp_path_factory.mktemp("fleet")
    return [copy_tree(DATA, top / "real" / "image" / "vfs"),
            _generated(top / "gen1", 400, 11), _generated(top / "gen2", 600, 12)]


def _answers(store: imagestore.Store) -> dict[str, Any]:
    """What a store says about itself, through the library and the command line's reports."""
    return {"contents": listing.contents(store.index),
            "ls": report.image_rows(store, all_images=True),
            "heads": sorted(store.heads()),
            "problems": [p.path for p in (store.last_sync.problems if store.last_sync else [])],
            "len": len(store)}


def _alone(root: Path, tmp_path: Path) -> dict[str, Any]:
    with imagestore.open(root, tmp_path / f"alone-{root.parent.parent.name}.sqlite") as store:
        return _answers(store)


def _cli_sync(index: str, root: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "imagestore.cli", "--index", index,
                             "--root", str(root), "--name", name, "sync"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_three_processes_sync_three_stores_into_one_index(
        fleet: list[Path], shared_index: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    procs = [_cli_sync(shared_index, root, f"host{i}") for i, root in enumerate(fleet)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
    for i, root in enumerate(fleet):
        with imagestore.open(root, shared_index, name=f"host{i}") as store:
            shared = _answers(store)
            assert store.last_sync is not None and store.last_sync.added == 0
        assert shared == _alone(root, tmp_path)
    rows = run_cli(capsys, None, "--index", shared_index, "stores", "--json").json()
    assert [r["name"] for r in rows] == ["host0", "host1", "host2"]
    assert [r["images"] for r in rows] == [39, 400, 600]
    assert {r["host"] for r in rows} == {socket.gethostname()}
    assert {r["driver"] for r in rows} == {"vfs"}  # <data-root>/image/vfs
    assert [r["root"] for r in rows] == [os.path.realpath(r) for r in fleet]
    assert all(r["last_sync"].endswith("Z") for r in rows)


def test_the_default_name_is_host_and_real_path(real_root: Path, tmp_path: Path) -> None:
    link = tmp_path / "via-link"
    link.symlink_to(real_root)
    with imagestore.open(link, tmp_path / "i.sqlite") as store:
        assert store.index.store.name == f"{socket.gethostname()}:{os.path.realpath(real_root)}"


def test_stores_rm_forgets_one_store_only(fleet: list[Path], shared_index: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for i, root in enumerate(fleet[:2]):
        imagestore.open(root, shared_index, name=f"h{i}").close()
    with imagestore.open(fleet[1], shared_index, name="h1") as store:
        before = _answers(store)
    result = run_cli(capsys, None, "--index", shared_index, "stores", "rm", "h0")
    assert result.code == 0 and "h0" in result.out
    with imagestore.open(fleet[1], shared_index, name="h1") as store:
        assert _answers(store) == before
        left = [tuple(r) for r in store.index.sql(
            "SELECT count(*) FROM images i JOIN stores s ON s.id = i.store_id "
            "WHERE s.name = 'h0'", allow_privileged_role=True)[1]]
        assert left == [(0,)]
    listed = run_cli(capsys, None, "--index", shared_index, "stores", "--json").json()
    assert [r["name"] for r in listed] == ["h1"]
    missing = run_cli(capsys, None, "--index", shared_index, "stores", "rm", "h0")
    assert missing.code == 1 and "no store named 'h0'" in missing.err
    assert missing.err.count("\n") == 1


def test_a_write_through_one_store_changes_only_it(fleet: list[Path], shared_index: str,
                                                   tmp_path: Path) -> None:
    roots = [copy_tree(DATA, tmp_path / f"w{i}" / "image" / "vfs") for i in range(2)]
    for i, root in enumerate(roots):
        imagestore.open(root, shared_index, name=f"w{i}").close()
    with imagestore.open(roots[1], shared_index, name="w1") as other:
        before = listing.contents(other.index)
    with imagestore.open(roots[0], shared_index, name="w0") as store:
        web = store.resolve("web:1.0")
        cfg = json.loads(store.get(web).raw)
        cfg["comment"] = "only in w0"
        new = store.create(json.dumps(cfg).encode())
        store.set_parent(new, web)
        store.set_last_updated(web)
        gone = sorted(h for h in store.heads() if h != new)[0]
        store.delete(gone)
        assert new in store and gone not in store
    with imagestore.open(roots[1], shared_index, name="w1") as other:
        assert listing.contents(other.index) == before
        assert new not in other and gone in other


def test_the_views_say_which_store(fleet: list[Path], shared_index: str) -> None:
    for i, root in enumerate(fleet):
        imagestore.open(root, shared_index, name=f"v{i}").close()
    with imagestore.open(fleet[0], shared_index, name="v0") as store:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in store.index.sql(sql, allow_privileged_role=True)[1]]

        per_store = dict(rows("SELECT store, count(*) FROM image_list GROUP BY store"))
        assert per_store == {"v0": 39, "v1": 400, "v2": 600}
        summary = {r[0]: r[1:] for r in rows(
            "SELECT store, images, tags, layers, bytes FROM store_summary")}
        assert summary["v0"][:3] == (39, 12, 13)
        # Which stores hold this diff ID? (the real store's layers are its own)
        diff = rows("SELECT diff_id FROM layer_stores WHERE store = 'v0' LIMIT 1")[0][0]
        assert rows(f"SELECT store FROM layer_stores WHERE diff_id = '{diff}'") == [("v0",)]
        tags = dict(rows("SELECT store, count(*) FROM tag_list GROUP BY store"))
        assert tags["v0"] == 12
        layers = rows("SELECT store, count(*) FROM layer_usage GROUP BY store ORDER BY store")
        assert layers[0] == ("v0", 13)
        problems = rows("SELECT DISTINCT store FROM sync_problems")
        assert all(p[0] in per_store for p in problems)


def test_layers_shared_across_stores(shared_index: str, tmp_path: Path) -> None:
    roots = [copy_tree(DATA, tmp_path / f"s{i}" / "image" / "vfs") for i in range(2)]
    for i, root in enumerate(roots):
        imagestore.open(root, shared_index, name=f"s{i}").close()
    with imagestore.open(roots[0], shared_index, name="s0") as store:
        shared = list(store.index.sql("SELECT diff_id, stores FROM shared_layers",
                                      allow_privileged_role=True)[1])
    assert len(shared) == 13 and all(r[1] == 2 for r in shared)


def test_a_sync_killed_midway_leaves_its_store_as_it_was(
        fleet: list[Path], shared_index: str, tmp_path: Path) -> None:
    big = _generated(tmp_path / "big", 6000, 5)
    imagestore.open(fleet[1], shared_index, name="other").close()
    with imagestore.open(fleet[1], shared_index, name="other") as store:
        before = listing.contents(store.index)
    proc = _cli_sync(shared_index, big, "big")
    deadline = time.monotonic() + 60
    while not _has_store(shared_index, "big"):  # its row is made before its first sync
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # the cold sync of 6,000 images is under way
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with imagestore.open(fleet[1], shared_index, name="other") as store:
        assert listing.contents(store.index) == before
    with imagestore.open(big, shared_index, name="big", sync=False) as store:
        assert len(store) == 0  # nothing half-written: the sync's transaction never committed
        report_ = store.sync()
        assert report_.added == 6000 and len(store) == 6000


def _has_store(index: str, name: str) -> bool:
    try:
        whole = Index.open_all(index)
    except imagestore.ImageStoreError:  # not made yet
        return False
    try:
        return name in [r["name"] for r in whole.stores()]
    finally:
        whole.close()


def test_an_index_on_a_server_holds_no_secrets_by_default(real_root: Path, pg_base: str,
                                                          tmp_path: Path) -> None:
    url = create_database(pg_base, "e" + uuid.uuid4().hex[:12])
    with_env = next(i for i in _disk_configs(real_root)
                    if any("=" in e for e in _env(_disk_configs(real_root)[i])))
    with imagestore.open(real_root, url) as store:
        assert store.index.redact
        stored = json.loads(store.get(with_env).raw)
        assert stored["config"]["Env"] and all(e.endswith("=" + REDACTED)
                                               for e in stored["config"]["Env"])
    with imagestore.open(real_root, url, keep_env=True) as store:  # all read again, whole
        assert json.loads(store.get(with_env).raw)["config"]["Env"] == \
            _env(_disk_configs(real_root)[with_env])
    with imagestore.open(real_root, tmp_path / "local.sqlite") as store:
        assert not store.index.redact
        assert store.get(with_env).raw == _disk_configs(real_root)[with_env]


def _disk_configs(root: Path) -> dict[str, bytes]:
    folder = root / "imagedb" / "content" / "sha256"
    return {"sha256:" + p.name: p.read_bytes() for p in folder.iterdir()}


def _env(raw: bytes) -> list[str]:
    env: list[str] = json.loads(raw).get("config", {}).get("Env") or []
    return env


def test_redaction_keeps_names_and_drops_values() -> None:
    raw = json.dumps({
        "config": {"Env": ["PATH=/bin", "TOKEN=s3cr=t", "BARE"], "Cmd": ["sh"]},
        "container_config": {"Env": ["A=1"],
                             "Cmd": ["/bin/sh", "-c", "|2 PASS=hunter2 USER=me /bin/sh -c x"]},
        "history": [{"created_by": "RUN |1 KEY=abc /bin/sh -c make"},
                    {"created_by": "/bin/sh -c #(nop) ADD file:1 in /"}],
    }).encode()
    out = json.loads(redact_config(raw))
    assert out["config"]["Env"] == [f"PATH={REDACTED}", f"TOKEN={REDACTED}", "BARE"]
    assert out["container_config"]["Env"] == [f"A={REDACTED}"]
    assert out["container_config"]["Cmd"][2] == \
        f"|2 PASS={REDACTED} USER={REDACTED} /bin/sh -c x"
    assert out["history"][0]["created_by"] == f"RUN |1 KEY={REDACTED} /bin/sh -c make"
    assert out["history"][1]["created_by"] == "/bin/sh -c #(nop) ADD file:1 in /"
    assert b"hunter2" not in redact_config(raw) and b"s3cr" not in redact_config(raw)
    assert redact_config(b"not json") == b"not json"


def test_a_frozen_index_without_the_store_says_so(real_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / "i.sqlite"
    imagestore.open(real_root, index, name="there").close()
    # As if the file were read-only to this process (root may write any file).
    monkeypatch.setattr(sqlite_backend, "cannot_write", lambda path: True)
    with imagestore.open(real_root, index, name="there") as store:
        assert store.index.frozen and len(store) == 39
    with pytest.raises(imagestore.NoSuchStore, match="no store named 'elsewhere'"):
        imagestore.open(real_root, index, name="elsewhere")


def _pg_flag(index: str) -> list[str]:
    """``sql`` on the test server runs as its superuser: allowed only when said so."""
    return ["--allow-privileged-role"] if index.startswith("postgresql") else []


def test_a_name_another_root_holds_is_refused_unless_moved(
        fleet: list[Path], shared_index: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23, item 2: ``--name host-a`` on root B took root A's store (``stores`` showed
    A's root with B's count, and opening A flipped it back). Now the name is A's until moved
    with ``--rename-root``, after which it is B's, with B's images only."""
    a, b = fleet[0], fleet[1]
    assert run_cli(capsys, a, "--index", shared_index, "--name", "host-a", "sync").code == 0
    refused = run_cli(capsys, b, "--index", shared_index, "--name", "host-a", "ls")
    assert refused.code == 1 and refused.out == ""
    assert refused.err.count("\n") == 1
    assert f"store name 'host-a' belongs to {os.path.realpath(a)} on host " \
           f"{socket.gethostname()}" in refused.err and "--rename-root" in refused.err
    with pytest.raises(imagestore.StoreNameTaken) as taken:  # the library says the same
        imagestore.open(b, shared_index, name="host-a")
    assert (taken.value.root, taken.value.host) == (os.path.realpath(a), socket.gethostname())
    listed = run_cli(capsys, None, "--index", shared_index, "stores", "--json").json()
    assert [(r["root"], r["images"]) for r in listed] == [(os.path.realpath(a), 39)]

    moved = run_cli(capsys, b, "--index", shared_index, "--name", "host-a", "--rename-root",
                    "ls", "-a", "-q")
    assert moved.code == 0, moved.err
    assert len(moved.out.split()) == 400  # B's images, none of A's
    listed = run_cli(capsys, None, "--index", shared_index, "stores", "--json").json()
    assert [(r["root"], r["images"]) for r in listed] == [(os.path.realpath(b), 400)]
    with imagestore.open(b, shared_index, name="host-a") as store:
        assert len(store) == 400 and store.last_sync is not None
        assert store.last_sync.added == 0  # moved and read once; now an ordinary store
    again = run_cli(capsys, a, "--index", shared_index, "--name", "host-a", "ls")
    assert again.code == 1 and f"belongs to {os.path.realpath(b)}" in again.err  # no flip

    # The same root from another host is another store too.
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    with pytest.raises(imagestore.StoreNameTaken, match=r"not to .* on elsewhere"):
        imagestore.open(b, shared_index, name="host-a")


def test_sql_info_and_stores_run_on_the_index_alone(
        fleet: list[Path], shared_index: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 23, item 3: ``--index URL sql`` exited 2 ("no store given"). Without a root,
    ``sql``, ``info`` and ``stores`` read the index as it stands (no root is synced), and a
    store whose root is gone is still read by ``--name``, and forgotten by ``stores rm``."""
    gone = copy_tree(DATA, tmp_path / "gone" / "image" / "vfs")
    imagestore.open(gone, shared_index, name="gone").close()
    kept = copy_tree(DATA, tmp_path / "kept" / "image" / "vfs")
    imagestore.open(kept, shared_index, name="kept").close()
    for content in list((kept / "imagedb/content/sha256").iterdir())[:5]:
        content.unlink()  # the index alone is read: this is not synced
    shutil.rmtree(tmp_path / "gone")

    def cli(*args: str) -> Any:
        result = run_cli(capsys, None, "--index", shared_index, *args)
        assert result.code == 0, result.err
        return result.json()

    query = "SELECT store, images FROM store_summary ORDER BY store"
    assert cli("sql", query, "--json", *_pg_flag(shared_index)) == [
        {"store": "gone", "images": 39}, {"store": "kept", "images": 39}]
    info = cli("info", "--json")
    assert (info["stores"], info["images"]) == (2, 78)
    assert info["revision"] == HEAD
    named = cli("--name", "gone", "info", "--json")
    assert (named["root"], named["store"], named["images"]) == (str(gone), "gone", 39)
    assert len({r["id"] for r in cli("--name", "gone", "ls", "-a", "--json")}) == 39
    assert [r["name"] for r in cli("stores", "--json")] == ["gone", "kept"]
    forgot = run_cli(capsys, None, "--index", shared_index, "stores", "rm", "gone")
    assert forgot.code == 0 and "gone" in forgot.out
    assert [r["name"] for r in cli("stores", "--json")] == ["kept"]
    missing = run_cli(capsys, None, "--index", shared_index, "--name", "gone", "ls")
    assert missing.code == 1 and "no store named 'gone'" in missing.err
