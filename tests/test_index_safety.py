"""The index never clobbers what is not its own, and a damaged one is rebuilt or reported.

The index is derived data, so a damaged index of ours is set aside and rebuilt from the root
(or, read-only, reported in one line). Anything else at the index path is never written to,
let alone moved aside: another program's database, a text file, a file inside the Docker
root."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from cli_helpers import run_cli
from sqlalchemy import select

import imagestore
from imagestore import IndexCorrupt, IndexUnavailable
from imagestore.index import schema


def _pages(index: Path, table: str) -> list[int]:
    conn = sqlite3.connect(index)
    try:
        return [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (table,))]
    finally:
        conn.close()


def _damage(index: Path, table: str) -> None:
    """Overwrite every page of one table, as a bad disk or a stray write would."""
    conn = sqlite3.connect(index)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    pages = _pages(index, table)
    assert pages
    with open(index, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * size)
            f.write(b"\xa5" * size)


def _ls(capsys: pytest.CaptureFixture[str], root: Path, index: Path, *more: str) -> list[str]:
    result = run_cli(capsys, root, *more, "ls", "-a", "--json", index=index)
    assert result.code == 0, result.err
    return sorted(r["id"] for r in result.json())


@pytest.mark.parametrize("table", ["ix_images_listing", "entry_buckets", "alembic_version"])
def test_damaged_pages_are_set_aside_and_rebuilt(capsys: pytest.CaptureFixture[str],
                                                 real_root: Path, index: Path,
                                                 table: str) -> None:
    """Wherever the damage is met (opening, syncing, listing), the command answers as before,
    with one warning, and the damaged file is kept aside."""
    expected = _ls(capsys, real_root, index)
    _damage(index, table)
    result = run_cli(capsys, real_root, "ls", "-a", "--json", index=index)
    assert result.code == 0, result.err
    assert sorted(r["id"] for r in result.json()) == expected
    assert "corrupt" in result.err and "Traceback" not in result.err
    assert list(index.parent.glob("index.sqlite.corrupt-*"))
    assert _ls(capsys, real_root, index) == expected
    assert run_cli(capsys, real_root, "fsck", index=index).code == 0


def test_readonly_reports_damage_in_one_line(capsys: pytest.CaptureFixture[str],
                                             real_root: Path, index: Path) -> None:
    _ls(capsys, real_root, index)
    _damage(index, "ix_images_listing")
    before = index.read_bytes()
    result = run_cli(capsys, real_root, "--readonly", "ls", index=index)
    assert result.code == 1
    assert result.err.startswith("imagestore: ") and len(result.err.splitlines()) == 1
    assert "corrupt" in result.err and "sync --full" in result.err
    assert index.read_bytes() == before
    with imagestore.open(real_root, index, readonly=True, sync=False) as store, \
            pytest.raises(IndexCorrupt):
        store.index.fetch(select(schema.images.c.id, schema.images.c.created,
                                 schema.images.c.chain_id))


def test_sync_full_and_fsck_repair_rebuild_a_damaged_index(capsys: pytest.CaptureFixture[str],
                                                          real_root: Path, index: Path) -> None:
    expected = _ls(capsys, real_root, index)
    _damage(index, "images")
    found = run_cli(capsys, real_root, "--readonly", "fsck", "--json", index=index)
    assert found.code == 1
    assert [f["check"] for f in found.json()["findings"]] == ["index"]
    assert run_cli(capsys, real_root, "fsck", "--repair", index=index).code == 0
    assert _ls(capsys, real_root, index) == expected
    _damage(index, "images")
    assert run_cli(capsys, real_root, "sync", "--full", index=index).code == 0
    assert _ls(capsys, real_root, index) == expected


@pytest.mark.parametrize("content", [
    b"this is not a database" * 100,
    b"\0garbage" * 1000,
    b'{"Repositories": {}}',
])
def test_a_file_that_is_not_ours_is_never_touched(capsys: pytest.CaptureFixture[str],
                                                  real_root: Path, tmp_path: Path,
                                                  content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    for args in (["ls"], ["sync", "--full"], ["fsck", "--repair"], ["--readonly", "ls"]):
        result = run_cli(capsys, real_root, *args, index=path)
        assert result.code == 1
        assert "not an imagestore index" in result.err and len(result.err.splitlines()) == 1
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "root"]


def test_another_programs_database_is_never_touched(capsys: pytest.CaptureFixture[str],
                                                    real_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    result = run_cli(capsys, real_root, "ls", index=path)
    assert result.code == 1 and "not an imagestore index" in result.err
    assert path.read_bytes() == before


def test_an_index_inside_the_docker_root_is_refused(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, real_root: Path) -> None:
    data_root = tmp_path / "docker"
    image_root = data_root / "image" / "vfs"
    image_root.parent.mkdir(parents=True)
    real_root.rename(image_root)
    tags = image_root / "repositories.json"
    before = tags.read_bytes()
    for index in (tags, image_root / "index.sqlite", data_root / "containers" / "i.sqlite"):
        for args in (["ls"], ["--readonly", "ls"], ["sql", "SELECT 1"]):
            result = run_cli(capsys, data_root, *args, index=index)
            assert result.code == 1
            assert "inside the Docker root" in result.err
    assert tags.read_bytes() == before
    assert not (image_root / "index.sqlite").exists()
    assert not (data_root / "containers").exists()
    assert json.loads(before)["Repositories"]


def test_relative_and_empty_index_paths(capsys: pytest.CaptureFixture[str], real_root: Path,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for index in ("sqlite:///rel.sqlite", "rel.sqlite"):
        info = run_cli(capsys, real_root, "--index", index, "info", "--json")
        assert info.code == 0, info.err
        assert info.json()["index"] == str(tmp_path / "rel.sqlite")
        sql = run_cli(capsys, real_root, "--index", index, "sql",
                      "SELECT count(*) AS n FROM images", "--json")
        assert sql.json() == [{"n": 39}]
    with pytest.raises(IndexUnavailable, match="empty"):
        imagestore.open(real_root, "")
    result = run_cli(capsys, real_root, "--index", "", "ls")
    assert result.code == 1 and "empty" in result.err


def test_an_index_that_cannot_be_written_answers_as_it_stands(
        capsys: pytest.CaptureFixture[str], real_root: Path, index: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only index file (or file system) is opened read-only and read, never synced."""
    expected = _ls(capsys, real_root, index)
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    real_access = os.access

    def access(path: object, mode: int, **kwargs: object) -> bool:
        if mode & os.W_OK and str(path).startswith(str(index.parent)):
            return False
        return real_access(path, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    before = index.read_bytes()
    (real_root / "imagedb/content/sha256" / expected[0][7:]).unlink()  # a change not synced
    for args in (["ls", "-a", "--json"], ["--readonly", "ls", "-a", "--json"]):
        result = run_cli(capsys, real_root, *args, index=index)
        assert result.code == 0, result.err
        assert sorted(r["id"] for r in result.json()) == expected
        assert "cannot be written" in result.err
    sql = run_cli(capsys, real_root, "sql", "SELECT count(*) AS n FROM images", "--json",
                  index=index)
    assert sql.json() == [{"n": 39}]
    assert run_cli(capsys, real_root, "inspect", expected[1], index=index).code == 0
    assert index.read_bytes() == before
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.sqlite",
                                                             "index.sqlite.lock"]
