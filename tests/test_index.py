"""The index's life: where it lives, who may read it, corruption, a daemon on the root."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from snapshot import rebuilt, snapshot
from sqlalchemy import select

import imagestore
from imagestore.index import schema
from imagestore.index.backends import sqlite as sqlite_dialect
from imagestore.index.fastread import SQLiteReader
from imagestore.moby.daemon import running_daemon


def test_index_files_are_private_whatever_the_umask(real_root: Path, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        index = tmp_path / "new-folder" / "i.sqlite"
        with imagestore.open(real_root, index) as store:
            store.set_last_updated(store.search("f1e1"))
        assert stat.S_IMODE(index.parent.stat().st_mode) == 0o700
        for path in index.parent.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(old)


def test_warns_when_others_can_read_the_index(real_root: Path, index: Path) -> None:
    imagestore.open(real_root, index).close()
    index.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users"):
        imagestore.open(real_root, index).close()


def test_deleting_the_index_rebuilds_the_same_state(real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        store.delete(store.resolve("web:prod"))
        before = snapshot(store)
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    with imagestore.open(real_root, index) as store:
        assert snapshot(store) == before


def _fake_dockerd(data_root: Path) -> subprocess.Popen[bytes]:
    # argv[0] "dockerd" and a --data-root, as /proc shows a real daemon.
    proc = subprocess.Popen(["dockerd", "-c", "import time; time.sleep(60)", "--data-root",
                             str(data_root)], executable=sys.executable)
    for _ in range(100):
        if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"dockerd"):
            break
        time.sleep(0.02)
    return proc


def test_writes_refused_while_dockerd_owns_the_root(real_root: Path, tmp_path: Path,
                                                    index: Path) -> None:
    data_root = tmp_path / "docker"
    (data_root / "image").mkdir(parents=True)
    root = data_root / "image" / "vfs"
    real_root.rename(root)
    daemon = _fake_dockerd(data_root)
    try:
        found = running_daemon(root)
        assert found is not None and (found.pid, found.sure) == (daemon.pid, True)
        with imagestore.open(root, index) as store:
            assert len(store) == 39  # reading is fine
            with pytest.raises(imagestore.DaemonRunning, match=f"pid {daemon.pid}"):
                store.delete(store.resolve("web:prod"))
            assert (root / "imagedb/content/sha256" / store.resolve("web:prod")[7:]).exists()
        with imagestore.open(root, index, force=True) as store:
            store.set_built_locally(store.resolve("web:prod"))
        refused = subprocess.run(
            [sys.executable, "-m", "imagestore.cli", "--root", str(root), "--index", str(index),
             "rm", "web:prod"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert refused.stderr.endswith(
            "or pass --force at the risk of corrupting its view\n")  # the CLI's own flag
        assert "force=True" not in refused.stderr
    finally:
        daemon.kill()
        daemon.wait()
    assert running_daemon(root) is None


def test_another_data_roots_daemon_does_not_count(real_root: Path, tmp_path: Path) -> None:
    daemon = _fake_dockerd(tmp_path / "elsewhere")
    try:
        assert running_daemon(real_root) is None
    finally:
        daemon.kill()
        daemon.wait()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(real_root: Path,
                                                                     index: Path) -> None:
    with imagestore.open(real_root, index) as store, store.index.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 10_000
        # The parent edge goes with its image (ON DELETE CASCADE needs foreign_keys on).
        image_id = store.resolve("web:prod")
        conn.exec_driver_sql("DELETE FROM images WHERE id = ?", (image_id,))
        left = conn.exec_driver_sql("SELECT count(*) FROM image_parents WHERE child_id = ?",
                                    (image_id,)).scalar()
        assert left == 0
        conn.rollback()


def test_fast_reads_are_read_only_and_memory_mapped(real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        reader = SQLiteReader(index, store.index.engine.dialect)
        with reader.reader(store.index.store_id) as q:
            assert q.rows("PRAGMA mmap_size", {})[0][0] > 0
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                q.rows("DELETE FROM images", {})
        reader.close()
        (images,) = store.index.fetch(select(schema.images.c.id))
        assert len(images) == len(store) == 39


def test_a_new_index_has_large_pages_an_older_one_keeps_its_own(real_root: Path,
                                                                 tmp_path: Path) -> None:
    """Wide config rows share 32 KB pages; an index made with other pages still works."""
    with imagestore.open(real_root, tmp_path / "new.sqlite") as store, \
            store.index.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == sqlite_dialect.PAGE_SIZE \
            == 32768
        want = len(store)
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as raw:
        raw.execute("PRAGMA page_size = 4096")
        raw.execute("VACUUM")
    old.chmod(0o600)
    with imagestore.open(real_root, old) as store, store.index.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        assert len(store) == want > 0


def test_no_sync_removes_crash_leftovers_fsck_repair_does(
        real_root: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp file looks the same whether its writer died or is writing now: every open,
    read-only or not, records leftovers as problems and leaves them; fsck --repair removes."""
    imagestore.open(real_root, index).close()
    content = real_root / "imagedb/content/sha256"
    meta = next(p for p in (real_root / "imagedb/metadata/sha256").iterdir())
    leftovers = [content / ".tmp-abc123", meta / ".tmp-parent0123",
                 real_root / "layerdb/sha256" / ("b" * 64 + "-0f0f-removing")]
    for path in leftovers[:2]:
        path.write_bytes(b"half")
    leftovers[2].mkdir()
    expected = {"imagedb/content/sha256/.tmp-abc123": "temp-file",
                f"imagedb/metadata/sha256/{meta.name}/.tmp-parent0123": "temp-file"}
    for readonly in (True, False):
        with imagestore.open(real_root, index, readonly=readonly) as store:
            assert all(p.exists() for p in leftovers)
            assert len(store) == 39
            assert {p.path: p.kind for p in store.sync().problems} == expected
    with imagestore.open(real_root, index) as store:
        findings = store.check()
        assert {f.path for f in findings if f.check == "temp-file"} == {
            *expected, "layerdb/sha256/" + leftovers[2].name}
        store.repair(findings)
        assert not any(p.exists() for p in leftovers)
        again = store.sync()
        assert (again.added, again.removed, again.changed) == (0, 0, 0)
        assert again.problems == []


# -- a new index is built aside and appears whole ------------------------------------------
OPEN_AND_COUNT = """
import sys, imagestore
print("opening", flush=True)
with imagestore.open(sys.argv[1], sys.argv[2], sync=False) as store:
    print(len(store), flush=True)
"""

BUILD_SLOWLY = """
import sys, time, imagestore
def slow(phase, done, total):
    print("building", flush=True)
    time.sleep(60)
imagestore.open(sys.argv[1], sys.argv[2], progress=slow)
"""


def test_a_new_index_appears_whole_to_a_process_opening_it_meanwhile(real_root: Path,
                                                                      index: Path) -> None:
    """While the first sync fills a new index, the index is not there to be read half-built:
    another process opening it waits for the build, then sees every image."""
    other: list[subprocess.Popen[str]] = []

    def meanwhile(phase: str, done: int, total: int) -> None:
        if other:
            return
        assert not index.exists()
        assert index.with_name(index.name + ".new").exists()
        proc = subprocess.Popen([sys.executable, "-c", OPEN_AND_COUNT, str(real_root),
                                 str(index)], stdout=subprocess.PIPE, text=True)
        other.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "opening\n"
        time.sleep(0.5)  # it is in imagestore.open now, waiting for this build
        assert proc.poll() is None

    with imagestore.open(real_root, index, progress=meanwhile) as store:
        assert store.last_sync is not None and store.last_sync.added == 39
    out, _ = other[0].communicate(timeout=60)
    assert other[0].returncode == 0
    assert out == "39\n"
    assert not index.with_name(index.name + ".new").exists()
    with imagestore.open(real_root, index, sync=False) as store, \
            store.index.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_build_killed_half_way_leaves_no_index_and_the_next_open_builds_it(
        real_root: Path, index: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUILD_SLOWLY, str(real_root), str(index)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "building\n"
    proc.kill()
    proc.wait()
    assert not index.exists()
    assert index.with_name(index.name + ".new").exists()  # what the kill left behind
    with imagestore.open(real_root, index) as store:
        assert store.last_sync is not None and store.last_sync.added == 39
        assert snapshot(store) == rebuilt(real_root, tmp_path)
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.sqlite",
                                                             "index.sqlite.lock"]


def test_a_failed_build_leaves_nothing(real_root: Path, index: Path) -> None:
    class Stop(Exception):
        pass

    def fail(phase: str, done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        imagestore.open(real_root, index, progress=fail)
    assert [p.name for p in index.parent.iterdir()] == ["index.sqlite.lock"]
    with imagestore.open(real_root, index) as store:
        assert len(store) == 39


def test_an_index_path_that_is_a_dangling_symlink_is_refused(real_root: Path,
                                                              tmp_path: Path) -> None:
    link = tmp_path / "i.sqlite"
    link.symlink_to(tmp_path / "elsewhere" / "i.sqlite")
    with pytest.raises(imagestore.IndexUnavailable, match="symlink to nothing"):
        imagestore.open(real_root, link)
    assert link.is_symlink()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "i.sqlite").touch(mode=0o600)  # an empty file: a new index
    with imagestore.open(real_root, link) as store:
        assert len(store) == 39
    assert link.is_symlink()


def test_a_log_left_beside_a_deleted_index_is_not_replayed_into_the_new_one(
        real_root: Path, index: Path, tmp_path: Path) -> None:
    """A process killed with frames in the WAL leaves ``<index>-wal``; the user deletes the
    index file alone. The new index must not take that log for its own."""
    imagestore.open(real_root, index).close()
    raw = sqlite3.connect(index)
    raw.execute("PRAGMA wal_autocheckpoint = 0")
    raw.execute("DELETE FROM image_parents")
    raw.execute("DELETE FROM images")
    raw.commit()
    stale = Path(str(index) + "-wal").read_bytes()  # what a kill now would leave
    raw.close()
    assert len(stale) > 32
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    Path(str(index) + "-wal").write_bytes(stale)
    with imagestore.open(real_root, index) as store:
        assert len(store) == 39
        assert snapshot(store) == rebuilt(real_root, tmp_path)
