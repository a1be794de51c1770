"""A warm command line: read commands answer through sqlite3 alone (no SQLAlchemy, no
Alembic, no write transaction) when the index is at its head revision and nothing changed on
disk, and through the engine, which syncs, as soon as anything did."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURE_ROOT, copy_tree, make_layers

import imagestore
from imagestore.moby.root import Root
from imagestore.sync.fresh import unchanged

HEAVY = {"sqlalchemy", "alembic"}


def settle(root: Path) -> None:
    """The folders changed in the last moments dated a minute back, as in a root nobody
    touched for a while (a folder changed within the last 2 s is never trusted)."""
    past = time.time() - 60
    for folder, _, _ in os.walk(root):
        if os.stat(folder).st_mtime > past:
            os.utime(folder, (past, past))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = copy_tree(FIXTURE_ROOT, tmp_path / "root")
    settle(made)
    return made


def cli(root: Path, index: Path, *args: str) -> tuple[str, set[str]]:
    """Run the command in a fresh interpreter: its output, and the top-level packages it
    imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "imagestore.cli", "--root", str(root),
         "--index", str(index), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done.stdout, imported


def fresh(root: Path, index: Path) -> bool:
    with imagestore.open(root, index, sync=False) as store, store.index.read() as q:
        return unchanged(Root(root), q)


def test_warm_reads_import_nothing_heavy_and_answer_as_the_store(root: Path,
                                                                 index: Path) -> None:
    with imagestore.open(root, index) as store:  # the first open builds the index
        child, image = next((i, im) for i, im in sorted(store.heads().items()) if im.parent)
        parent = image.parent
        assert parent is not None
        expected = {
            "search": [child], "parent": [parent], "children": store.children(parent),
            "heads": sorted(store.heads()), "sql": ["n", str(len(store))],
        }
        everything = set(store.map())
    commands = {"search": [child[7:19]], "parent": [child], "children": [parent],
                "heads": [], "sql": ["SELECT count(*) AS n FROM images"]}
    for name, args in commands.items():
        out, imported = cli(root, index, name, *args)
        assert not imported & HEAVY, name
        assert out.split() == expected[name], name
    out, imported = cli(root, index, "inspect", child)
    assert not imported & HEAVY
    assert (json.loads(out)[0]["id"], json.loads(out)[0]["parent"]) == (child, parent)
    out, imported = cli(root, index, "ls", "-a", "--json")
    assert not imported & HEAVY
    assert {r["id"] for r in json.loads(out)} == everything
    out, imported = cli(root, index, "tree", "--json")
    assert not imported & HEAVY

    def ids(nodes: list[dict[str, object]]) -> set[str]:
        return {str(n["id"]) for n in nodes} | {
            i for n in nodes for i in ids(n["children"])}  # type: ignore[arg-type]

    assert ids(json.loads(out)) == everything
    out, imported = cli(root, index, "info", "--json")
    assert not imported & HEAVY
    assert json.loads(out)["images"] == len(everything)


def test_ls_prints_the_same_either_way(root: Path, index: Path) -> None:
    cold, imported = cli(root, index, "ls", "-a")  # builds the index: the engine
    assert "sqlalchemy" in imported
    warm, imported = cli(root, index, "ls", "-a")
    assert not imported & HEAVY
    assert warm == cold


def _change(root: Path, change: str) -> str:
    """Make one change the way dockerd makes it (renamed into place); the image it is about."""
    content = root / "imagedb" / "content" / "sha256"
    metadata = root / "imagedb" / "metadata" / "sha256"
    with imagestore.open(root, root.parent / "scratch.sqlite") as store:
        head = sorted(store.heads())[0]
        data = store.get(head).raw
    hex_id = head[len("sha256:"):]
    if change == "tag":
        path = Root(root).repositories
        doc = json.loads(path.read_text())
        doc["Repositories"]["quick"] = {"quick:latest": head}
        path.with_name("repositories.json.tmp").write_text(json.dumps(doc))
        os.replace(path.with_name("repositories.json.tmp"), path)
    elif change == "new image":
        doc = json.loads(data)
        doc["comment"] = "made by a pull"
        new = json.dumps(doc).encode()
        (content / ".tmp").write_bytes(new)
        os.replace(content / ".tmp", content / hashlib.sha256(new).hexdigest())
        return "sha256:" + hashlib.sha256(new).hexdigest()
    elif change == "metadata":
        (metadata / hex_id).mkdir(exist_ok=True)
        (metadata / hex_id / ".tmp").write_text("2030-01-01T00:00:00Z")
        os.replace(metadata / hex_id / ".tmp", metadata / hex_id / "lastUpdated")
    elif change == "remove image":
        (content / hex_id).unlink()
        shutil.rmtree(metadata / hex_id, ignore_errors=True)
    elif change == "new layer":
        make_layers(root, ["sha256:" + "cd" * 32])
    elif change == "mount":
        chain = "sha256:" + sorted(os.listdir(root / "layerdb" / "sha256"))[0]
        mount = root / "layerdb" / "mounts" / ("ef" * 32)
        mount.mkdir(parents=True)
        for name, value in (("mount-id", "a" * 64), ("init-id", "a" * 64 + "-init"),
                            ("parent", chain)):
            (mount / name).write_text(value)
    return head


@pytest.mark.parametrize("change", ["tag", "new image", "metadata", "remove image",
                                    "new layer", "mount"])
def test_every_change_goes_through_the_engine(root: Path, index: Path, change: str) -> None:
    """After each kind of change dockerd makes, the next read syncs (imports the engine) and
    answers from the new state; once the disk settles, the next is quick again."""
    cli(root, index, "ls")
    assert fresh(root, index)
    image_id = _change(root, change)
    settle(root)
    assert not fresh(root, index)
    out, imported = cli(root, index, "ls", "-a", "--json")
    assert "sqlalchemy" in imported
    rows = json.loads(out)
    with imagestore.open(root, index) as store:
        assert {r["id"] for r in rows} == set(store.map())
    assert (image_id in {r["id"] for r in rows}) == (change != "remove image")
    if change == "tag":
        assert {"id": image_id, "repository": "quick", "tag": "latest"}.items() <= next(
            r for r in rows if r["repository"] == "quick").items()
    again, imported = cli(root, index, "ls", "-a", "--json")
    assert not imported & HEAVY
    assert again == out


def test_a_recorded_problem_is_looked_at_again(root: Path, index: Path) -> None:
    """A sync looks again at every entry with a problem (outside an unchanged folder-signed
    kind), so the quick path never answers for such a store."""
    hex_id = sorted(os.listdir(root / "imagedb" / "metadata" / "sha256"))[0]
    (root / "imagedb" / "metadata" / "sha256" / hex_id / ".tmp-parent123").write_text("x")
    settle(root)
    with imagestore.open(root, index) as store:
        assert store.last_sync is not None and store.last_sync.problems
    assert not fresh(root, index)
    _, imported = cli(root, index, "heads")
    assert "sqlalchemy" in imported


def test_the_quick_path_records_when_it_found_the_store_in_sync(root: Path,
                                                                 index: Path) -> None:
    cli(root, index, "ls")
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE stores SET last_sync = '2001-01-01T00:00:00.000000Z'")
    conn.close()
    _, imported = cli(root, index, "heads")
    assert not imported & HEAVY
    with sqlite3.connect(index) as conn:
        (stamp,) = conn.execute("SELECT last_sync FROM stores").fetchone()
    conn.close()
    assert stamp > "2020"


def test_an_index_at_another_revision_is_migrated_by_the_engine(root: Path,
                                                                index: Path) -> None:
    cli(root, index, "ls")
    with sqlite3.connect(index) as conn:
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        conn.execute("UPDATE alembic_version SET version_num = 'zzzz'")
    conn.close()
    with pytest.raises(AssertionError):  # the engine opens it, and cannot place 'zzzz'
        cli(root, index, "heads")
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (head,))
    conn.close()
    _, imported = cli(root, index, "heads")
    assert not imported & HEAVY


def test_a_warm_open_does_not_wait_for_the_writers_lock(root: Path, index: Path) -> None:
    """Nothing changed: ``open`` answers from one read snapshot, while another process holds
    the writers' lock for a long sync (of another store, say), with the report of a sync
    that found nothing to do."""
    with imagestore.open(root, index) as store:
        count = len(store)
    with sqlite3.connect(index) as conn:  # synced long ago: the open records the time
        conn.execute("UPDATE stores SET last_sync = '2001-01-01T00:00:00.000000Z'")
    conn.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; "
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(index) + ".lock"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with imagestore.open(root, index) as store:
            report = store.last_sync
        assert time.monotonic() - started < 30  # the lock is held for 60 s
        assert report is not None
        assert (report.added, report.removed, report.changed, report.unchanged) == \
            (0, 0, 0, count)
        assert sum(report.read.values()) == 0
        with sqlite3.connect(index) as conn:
            (stamp,) = conn.execute("SELECT last_sync FROM stores").fetchone()
        conn.close()
        assert stamp > "2020"
    finally:
        holder.kill()
        holder.wait()


def test_a_change_is_synced_by_open_under_the_lock(root: Path, index: Path) -> None:
    with imagestore.open(root, index) as store:
        head = sorted(store.heads())[0]
    (root / "imagedb" / "content" / "sha256" / head[len("sha256:"):]).unlink()
    settle(root)
    with imagestore.open(root, index) as store:
        assert store.last_sync is not None and store.last_sync.removed == 1
        assert head not in store


def bare(*args: str) -> tuple[str, set[str]]:
    """As ``cli``, without the implied ``--root`` and ``--index``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "imagestore.cli", *args],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done.stdout, imported


def test_stores_and_the_index_alone_answer_warm(root: Path, index: Path) -> None:
    """Issue 23, item 12: ``stores`` took a second (SQLAlchemy and Alembic loaded, the index
    opened by the engine) where ``ls`` took a tenth. It reads through sqlite3 alone now, as do
    ``sql`` and ``info`` on the index alone, and answers as the engine does."""
    imagestore.open(root, index, name="a").close()
    imagestore.open(root, index).close()
    from imagestore.index import Index

    whole = Index.open_all(index)
    try:
        expected = whole.stores()
    finally:
        whole.close()
    for args in (["--index", str(index)], ["--root", str(root), "--index", str(index)]):
        out, imported = bare(*args, "stores", "--json")
        assert not imported & HEAVY, args
        assert json.loads(out) == expected
    out, imported = bare("--index", str(index), "sql", "SELECT count(*) AS n FROM images",
                         "--json")
    assert not imported & HEAVY and json.loads(out) == [{"n": 78}]
    out, imported = bare("--index", str(index), "info", "--json")
    assert not imported & HEAVY
    assert (json.loads(out)["stores"], json.loads(out)["images"]) == (2, 78)
