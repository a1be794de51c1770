"""Layer file lists in the index: read on first need and once per diff ID, shared by the
stores of an index, removed when no store holds them; the ``image_files`` view against the
Python merge; the ``files``, ``which``, ``diff``, ``waste`` and ``sync --files`` commands."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli

import imagestore
from imagestore.moby.layerfiles import TAR_SPLIT
from imagestore.service.files import dive_efficiency, image_files, like_of, matches, merge


def _count(store: Any, table: str) -> int:
    _, rows = store.index.sql(f"SELECT count(*) FROM {table}")
    return int(next(iter(rows))[0])


def test_lists_are_read_on_first_need_only(real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        assert _count(store, "layer_file_lists") == 0  # open and sync read none
        files = store.images.get("bb:1.35").files()
        assert {"bin/busybox", "bin/sh"} <= {e.path for e in files}
        read = _count(store, "layer_file_lists")
        assert read > 0
        assert store.read_files().layers == 0
        assert _count(store, "layer_file_lists") == read


def test_lists_no_store_holds_are_removed_by_the_next_reading(real_root: Path,
                                                              tmp_path: Path) -> None:
    index = tmp_path / "two.sqlite"
    other = shutil.copytree(real_root, tmp_path / "other", symlinks=True)
    with imagestore.open(real_root, index, name="one") as one:
        one.read_files()
        held = _count(one, "layer_file_lists")
    with imagestore.open(other, index, name="two") as two:
        assert two.read_files().layers == 0  # the same diff IDs: nothing read again
        two.index.forget("one")
        assert two.read_files().removed == 0  # "two" still holds every one of them
        assert _count(two, "layer_file_lists") == held
        two.index.forget("two")
    with imagestore.open(real_root, index, name="three") as three:
        shutil.rmtree(real_root / "layerdb" / "sha256")
        three.sync()
        assert three.read_files().removed == held
        assert _count(three, "layer_files") == 0


def test_a_hostile_layer_is_a_recorded_problem(real_root: Path, index: Path) -> None:
    folder = next(p for p in sorted((real_root / "layerdb/sha256").iterdir())
                  if p.is_dir())
    (folder / TAR_SPLIT).write_bytes(gzip.compress(b"{not json\n"))
    with imagestore.open(real_root, index) as store:
        report = store.read_files()
        assert len(report.problems) == 1 and "invalid" in report.problems[0][1]
        listed = list(store.index.sql("SELECT problems FROM layer_file_lists "
                                      "WHERE problems IS NOT NULL")[1])
        assert len(listed) == 1


def _row(path: str, kind: str = "file", size: int = 0, link: str | None = None,
         whiteout: str | None = None, target: str | None = None) -> tuple[object, ...]:
    return (path, kind, size, 0o644, 0, 0, 0, link, None, whiteout, target)


def test_merge_applies_whiteouts_opaque_folders_and_replacements() -> None:
    lower = [_row("a", "dir"), _row("a/x", size=1), _row("b", "dir"), _row("b/y", size=2),
             _row("c", "dir"), _row("c/z", size=3), _row("f", size=4), _row("g", "dir"),
             _row("g/deep", size=5)]
    upper = [_row("a/.wh..wh..opq", whiteout="opaque", target="a"), _row("a/new", size=6),
             _row("b/.wh.y", whiteout="remove", target="b/y"),
             _row(".wh.c", whiteout="remove", target="c"), _row("g", size=7),
             _row("h", "hardlink", link="f")]
    merged = merge([("sha256:l1", lower), ("sha256:l2", upper)])
    assert sorted(merged) == ["a", "a/new", "b", "f", "g", "h"]
    assert (merged["h"].size, merged["g"].type, merged["a/new"].layer) == (4, "file",
                                                                          "sha256:l2")
    waste = dive_efficiency([("sha256:l1", lower), ("sha256:l2", upper)])
    by_path = {p["path"]: p["bytes"] for p in waste["paths"]}
    # dive counts leaves of each layer's tree only: a folder with files is no leaf, so the
    # removed folder c and the folder g replaced by a file are each seen once, never wasted.
    assert by_path == {"b/y": 2}
    # leaves: a/x 1, b/y 2 then 0, c/z 3, f 4, g/deep 5, a/new 6, c's whiteout 3, g 7, h 0
    assert waste["efficiency"] == pytest.approx(29 / 31)


@pytest.mark.parametrize("pattern, path, hit", [
    ("log4j-core-2.14*.jar", "opt/app/lib/log4j-core-2.14.1.jar", True),
    ("log4j-core-2.14*.jar", "log4j-core-2.14.1.jar", True),
    ("log4j-core-2.14*.jar", "opt/log4j-core-2.14/other.jar", False),
    ("/opt/*/lib/*.jar", "opt/app/lib/a.jar", True), ("bin/sh", "bin/sh", True),
    ("bin/sh", "usr/bin/sh", False), ("100%_[ab]", "x/100%_a", True),
])
def test_globs(pattern: str, path: str, hit: bool) -> None:
    assert matches(path, pattern) is hit
    like = like_of(pattern)
    import fnmatch
    sql_like = like.replace("%", "*").replace("_", "?")  # a loose check of the LIKE
    assert not hit or fnmatch.fnmatchcase(path, sql_like.replace("!*", "%")
                                          .replace("!?", "_").replace("!!", "!")) \
        or "[" in pattern


def test_the_commands(real_root: Path, index: Path, capsys: pytest.CaptureFixture[str]
                      ) -> None:
    r = run_cli(capsys, real_root, "sync", "--files", "--json", index=index)
    assert r.code == 0 and r.json()["files"]["layers"] > 0
    r = run_cli(capsys, real_root, "files", "committed:1", "--json", index=index)
    paths = [e["path"] for e in r.json()]
    assert r.code == 0 and paths == sorted(paths) and "committed.txt" in paths
    with imagestore.open(real_root, index) as store:
        ours = [e.path for e in image_files(store, store.resolve("committed:1"))]
    assert paths == ours
    r = run_cli(capsys, real_root, "which", "committed.txt", "--json", index=index)
    assert [(x["tags"], x["path"]) for x in r.json()] == [(["committed:1"], "committed.txt")]
    r = run_cli(capsys, real_root, "which", "--all-stores", "busybox", index=index)
    assert r.code == 0 and "bb:1.35" in r.out
    r = run_cli(capsys, real_root, "diff", "bb:1.35", "committed:1", index=index)
    assert r.code == 0 and r.out == "A /committed.txt\n"
    r = run_cli(capsys, real_root, "waste", "committed:1", "--json", index=index)
    assert r.code == 0 and r.json()["efficiency"] == 1.0


def test_the_view_agrees_with_the_merge_but_for_replaced_folders(real_root: Path,
                                                                  index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        store.read_files()
        for image in sorted(store.map()):
            merged = {e.path for e in image_files(store, image)}
            rows = store.index.sql("SELECT path FROM image_files WHERE image = ?",
                                   [image])[1]
            assert {r[0] for r in rows} == merged
