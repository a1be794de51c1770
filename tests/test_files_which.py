"""``which`` from the path index (``filelists.which_indexed``: the layers holding a path, then
the chains and images above them) gives exactly the answer of the ``image_files`` view
(``which_general``): on the real store for every path of every image and globs over them, on
lists made here with every way an upper layer hides an entry, and across two stores."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest

import imagestore
from imagestore.index import filelists
from imagestore.index.location import stamp
from imagestore.service.files import image_files, image_layers, path_range, which, which_general


def _globs(path: str) -> list[str]:
    """An exact path, then globs that match it: from the root with a literal prefix, from
    the root with none, a file name in any folder, and a name prefix."""
    folder, _, name = path.rpartition("/")
    out = [path, "/" + path, name, name[:1] + "*", "*" + name[-1:]]
    if folder:
        out += [folder + "/*", folder[:1] + "*/" + name, "*/" + name, folder + "/?" + name[1:]]
    return out


def test_the_index_answers_as_the_view_for_every_path_of_every_image(real_root: Path,
                                                                     index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        store.read_files()
        paths = sorted({e.path for image in store.map() for e in image_files(store, image)})
        assert len(paths) > 20
        for path in paths:
            assert which(store, path), path  # every path of an image is found
            for pattern in _globs(path):
                assert which(store, pattern) == which_general(store, pattern), pattern
        assert which(store, "no/such/path") == which_general(store, "no/such/path") == []


def _row(path: str, kind: str = "file", size: int = 1, link: str | None = None,
         whiteout: str | None = None, target: str | None = None) -> filelists.FileRow:
    return (path, kind, size, 0o644, 0, 0, 0, link, None, whiteout, target)


# Bottom to top: every way a layer above hides an entry, and entries given again.
_LISTS = [
    [_row("a", "dir"), _row("a/x"), _row("a/deep", "dir"), _row("a/deep/y"), _row("b", "dir"),
     _row("b/y"), _row("b/keep"), _row("c", "dir"), _row("c/z"), _row("f", size=4),
     _row("g", "dir"), _row("g/deep"), _row("h", "hardlink", link="f"), _row("top"),
     _row("s", "symlink", link="f"), _row("o", "dir"), _row("o/p", "dir"), _row("o/p/q")],
    [_row("a/.wh..wh..opq", whiteout="opaque", target="a"), _row("a/new"),
     _row("b/.wh.y", whiteout="remove", target="b/y"),
     _row(".wh.c", whiteout="remove", target="c"), _row("f", size=9), _row("g", size=7),
     _row("o/p/.wh..wh..opq", whiteout="opaque", target="o/p"), _row("o/p/r")],
    [_row(".wh..wh..opq", whiteout="opaque", target=""), _row("top", size=3)],
]


def _craft(store: Any, chain: list[str]) -> None:
    """Replace the lists of the chain's layers (bottom first) by ``_LISTS``."""
    when = stamp(dt.datetime.now(dt.timezone.utc))
    with store.index.write() as tx:
        for diff_id, rows in zip(chain, _LISTS, strict=False):
            for table in ("layer_files", "layer_file_lists"):
                tx.conn.exec_driver_sql(f"DELETE FROM {table} WHERE diff_id = ?", (diff_id,))
            assert tx.write_file_list(diff_id, rows, [], when)


def test_every_way_of_hiding_an_entry_is_applied_as_the_view_applies_it(
        real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        store.read_files()
        images = sorted(store.map())
        deepest = max(images, key=lambda i: len(image_layers(store, i)))
        chain = image_layers(store, deepest)
        assert len(chain) >= 3
        _craft(store, chain)
        names = sorted({r[0] for rows in _LISTS for r in rows} | {"a/deep/y", "nothing"})
        for name in names:
            for pattern in _globs(name):
                assert which(store, pattern) == which_general(store, pattern), pattern
        for pattern in ("*", "/*", "/a/*", "/o/*", "?"):
            assert which(store, pattern) == which_general(store, pattern), pattern
        # What the rows mean, in an image holding all three layers:
        held = {r["path"] for r in which(store, "/*") if r["image"] == deepest}
        assert "top" in held and "a/x" not in held and "a/new" not in held  # opaque root
        holders = [i for i in images if image_layers(store, i)[:2] == chain[:2]
                   and len(image_layers(store, i)) == 2]
        assert holders
        for image in holders:  # only the first two layers
            paths = {r["path"] for r in which(store, "/*") if r["image"] == image}
            assert {"a/new", "b/keep", "f", "g", "o/p/r", "o/p"} <= paths
            assert not paths & {"a/x", "a/deep", "a/deep/y", "b/y", "c", "c/z", "o/p/q"}
            # a folder replaced by a file hides what lower layers hold below it
            assert "g/deep" not in paths and "g" in paths
            assert [r["size"] for r in which(store, "f") if r["image"] == image] == [9]


def test_across_stores_the_index_answers_as_the_view(real_root: Path, tmp_path: Path
                                                     ) -> None:
    index = tmp_path / "two.sqlite"
    other = shutil.copytree(real_root, tmp_path / "other", symlinks=True)
    with imagestore.open(real_root, index, name="one") as one:
        one.read_files()
    with imagestore.open(other, index, name="two") as two:
        two.read_files()
        for pattern in ("bin/busybox", "busybox", "/bin/*", "committed.txt", "/etc/*"):
            both = which(two, pattern, all_stores=True)
            assert both == which_general(two, pattern, all_stores=True)
            assert {r["store"] for r in both} == {"one", "two"}
            assert which(two, pattern) == [r for r in both if r["store"] == "two"]


def test_too_many_matching_rows_are_left_to_the_view(real_root: Path, index: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with imagestore.open(real_root, index) as store:
        store.read_files()
        expected = which_general(store, "/*")
        monkeypatch.setattr(filelists, "CANDIDATES", 3)
        with store.index.read() as q:
            assert q.which_indexed("%", all_stores=False) is None
        assert which(store, "/*") == expected


@pytest.mark.parametrize("pattern, expected", [
    ("usr/lib/libz.so", ("usr/lib/libz.so", None)),
    ("/usr/lib/libz.so", ("usr/lib/libz.so", None)),
    ("/usr/lib/*.so", ("usr/lib/", "usr/lib0")),
    ("usr/li?/x", ("usr/li", "usr/lj")),
    ("opt/[ab]/x", ("opt/", "opt0")),
    ("log4j-core-2.14*.jar", (None, None)),  # a file name in any folder
    ("*/bin/sh", (None, None)),
])
def test_path_range(pattern: str, expected: tuple[str | None, str | None]) -> None:
    assert path_range(pattern) == expected


def test_hiding_paths_name_every_row_that_can_hide_a_path() -> None:
    assert filelists.hiding_paths("a/b/c") == [
        "a/b/c", ".wh.a", ".wh..wh..opq", "a", "a/.wh.b", "a/.wh..wh..opq", "a/b",
        "a/b/.wh.c", "a/b/.wh..wh..opq"]
