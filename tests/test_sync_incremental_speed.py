"""An incremental sync works in proportion to what changed, not to the store's size, and
still gives exactly what a rebuild gives: the images, their problems and every layer row
(chain sizes and depths included). Behaviour only: the counters of the sync's report and the
rows of the index, never a clock."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import config, make_layers

import imagestore
from imagestore.moby.digest import chain_ids, digest_of
from imagestore.moby.root import LAYERS, Root
from imagestore.sync import chains
from imagestore.sync.changes import layer_listing
from imagestore.sync.compact import Link, pack_scan, stacked, unpack_scan
from imagestore.sync.scan import scan

OpenStore = Callable[..., imagestore.Store]
CONTENT = "imagedb/content/sha256/"
METADATA = "imagedb/metadata/sha256/"


def diff(name: str) -> str:
    return digest_of(name.encode())


def write_content(root: Path, raw: bytes) -> str:
    """As dockerd writes it: made aside, renamed into place."""
    image_id = digest_of(raw)
    tmp = root / CONTENT / ".tmp-new"
    tmp.write_bytes(raw)
    os.replace(tmp, root / CONTENT / image_id[7:])
    return image_id


def write_parent(root: Path, child: str, parent: str) -> None:
    folder = root / METADATA / child[7:]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".new-parent").write_text(parent)
    os.replace(folder / ".new-parent", folder / "parent")


def rows(index: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a sync writes that the graph does not show, sorted."""
    conn = sqlite3.connect(index)
    try:
        return {
            "layers": conn.execute(
                "SELECT chain_id, diff_id, parent_id, diff_size, size, cache_id, depth "
                "FROM layers ORDER BY chain_id").fetchall(),
            "images": conn.execute(
                "SELECT id, chain_id, layer_count, last_updated, built_locally "
                "FROM images ORDER BY id").fetchall(),
            "parents": conn.execute(
                "SELECT child_id, parent_id FROM image_parents ORDER BY child_id").fetchall(),
            "problems": conn.execute(
                "SELECT path, kind, reason FROM sync_problems ORDER BY path").fetchall(),
        }
    finally:
        conn.close()


def rebuilt(root: Path, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    index = tmp_path / f"rebuild-{len(list(tmp_path.glob('rebuild-*')))}.sqlite"
    with imagestore.open(root, index=index, readonly=True):
        pass
    return rows(index)


@pytest.fixture
def grown(empty_root: Path, open_store: OpenStore) -> tuple[Path, imagestore.Store, list[str]]:
    """A synced store of a few images on shared layers; the chain IDs of its layers."""
    root = empty_root
    base = [diff(f"base-{i}") for i in range(4)]
    made = make_layers(root, base, sizes=[10, 20, 30, 40])
    for i in range(1, 5):
        write_content(root, config(f"image {i}", base[:i]))
    store = open_store(root)
    assert len(store) == 4
    return root, store, made


def test_a_pull_reads_only_what_it_brought(grown: tuple[Path, imagestore.Store, list[str]],
                                           index: Path, tmp_path: Path) -> None:
    root, store, _ = grown
    base = [diff(f"base-{i}") for i in range(4)]
    pulled = [*base[:2], diff("new-1"), diff("new-2")]
    make_layers(root, pulled, sizes=[10, 20, 5, 7])  # two new folders on a stored chain
    image = write_content(root, config("pulled", pulled))
    report = store.sync()
    assert report.read[LAYERS] == 2
    assert report.read[CONTENT] == 1
    assert (report.added, report.removed, report.changed) == (1, 0, 0)
    assert rows(index) == rebuilt(root, tmp_path)
    sizes = {c: s for c, _, _, _, s, _, _ in rows(index)["layers"]}
    assert sizes[chain_ids(pulled)[-1]] == 10 + 20 + 5 + 7
    assert image in store.map()


def test_a_pull_with_workers_gives_what_a_rebuild_gives(
        grown: tuple[Path, imagestore.Store, list[str]], index: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The images' scans start in the workers before the layers are listed."""
    root, store, _ = grown
    monkeypatch.setattr("imagestore.sync.workers.PARALLEL_MIN", 2)
    base = [diff(f"base-{i}") for i in range(4)]
    pulled = [*base[:3], diff("new-1")]
    make_layers(root, pulled, sizes=[10, 20, 30, 3])
    write_content(root, config("pulled", pulled))
    write_parent(root, write_content(root, config("child", base[:1])), sorted(store.map())[0])
    report = store.sync()
    assert (report.read[LAYERS], report.read[CONTENT]) == (1, 2)
    assert rows(index) == rebuilt(root, tmp_path)


def test_a_removed_layer_takes_the_stored_layers_above_it(
        grown: tuple[Path, imagestore.Store, list[str]], index: Path, tmp_path: Path) -> None:
    root, store, made = grown
    folder = root / LAYERS / made[1][7:]
    aside = root.parent / "aside"
    shutil.move(folder, aside)
    report = store.sync()
    assert report.read[LAYERS] == 0
    assert len(store) == 1
    assert rows(index) == rebuilt(root, tmp_path)
    shutil.move(aside, folder)  # back: every layer above it loads again, with its size
    store.sync()
    assert len(store) == 4
    assert rows(index) == rebuilt(root, tmp_path)


def test_a_replaced_layer_gives_new_sizes_to_the_stored_layers_above_it(
        grown: tuple[Path, imagestore.Store, list[str]], index: Path, tmp_path: Path) -> None:
    root, store, made = grown
    folder = root / LAYERS / made[0][7:]
    aside = root.parent / "aside"  # made while the old one is there: a new inode
    aside.mkdir()
    for file in ("diff", "cache-id"):
        shutil.copy(folder / file, aside / file)
    (aside / "size").write_text("1000")
    shutil.rmtree(folder)
    os.rename(aside, folder)
    report = store.sync()
    assert report.read[LAYERS] == 1
    assert rows(index) == rebuilt(root, tmp_path)
    sizes = {c: s for c, _, _, _, s, _, _ in rows(index)["layers"]}
    assert sizes[made[3]] == 1000 + 20 + 30 + 40


def test_a_layer_whose_parent_arrives_later_loads_then(
        grown: tuple[Path, imagestore.Store, list[str]], index: Path, tmp_path: Path) -> None:
    root, store, _ = grown
    later = [diff("base-0"), diff("late-parent"), diff("late-child")]
    make_layers(root, later, sizes=[10, 1, 2])  # the stored base folder as it was
    parent_folder = root / LAYERS / chain_ids(later)[1][7:]
    aside = root.parent / "aside"
    shutil.move(parent_folder, aside)
    image = write_content(root, config("late", later))
    report = store.sync()
    assert image not in store.map()
    assert {p.kind for p in report.problems} == {"bad-layer", "missing-layer"}
    assert rows(index) == rebuilt(root, tmp_path)
    shutil.move(aside, parent_folder)
    report = store.sync()
    assert image in store.map()
    assert report.problems == []
    assert rows(index) == rebuilt(root, tmp_path)


def test_a_new_parent_cycle_is_broken_as_a_rebuild_breaks_it(
        grown: tuple[Path, imagestore.Store, list[str]], index: Path, tmp_path: Path) -> None:
    root, store, _ = grown
    ids = sorted(store.map())
    write_parent(root, ids[1], ids[0])
    write_parent(root, ids[2], ids[1])
    store.sync()
    write_parent(root, ids[0], ids[2])  # closes the loop through two stored links
    report = store.sync()
    assert [p.kind for p in report.problems] == ["parent-cycle"]
    assert rows(index) == rebuilt(root, tmp_path)
    os.remove(root / METADATA / ids[0][7:] / "parent")  # undone: the link comes back
    store.sync()
    assert rows(index) == rebuilt(root, tmp_path)
    assert store.get_parent(ids[2]) == ids[1]


def test_layer_listing_gives_what_scan_gives(empty_root: Path) -> None:
    root = empty_root
    make_layers(root, [diff(f"l-{i}") for i in range(40)])
    assert layer_listing(str(root)) == scan(Root(root), LAYERS)
    (root / LAYERS / "tmp-123").mkdir()
    (root / LAYERS / ("a" * 64)).write_text("a file, not a folder")
    (root / LAYERS / ("B" * 64)).mkdir()
    (root / LAYERS / ("c" * 63)).mkdir()
    listing = layer_listing(str(root))
    assert listing == scan(Root(root), LAYERS)
    assert set(listing.others) == {"tmp-123", "a" * 64, "B" * 64, "c" * 63}
    shutil.rmtree(root / LAYERS)
    assert layer_listing(str(root)) == scan(Root(root), LAYERS)


def test_scans_pack_and_unpack_exactly() -> None:
    names = sorted(diff(str(i))[7:] for i in range(50))
    for kept in (names, [*names[:3], ".tmp-x", *names[3:]], [], ["F" * 64], ["ab"]):
        packed = pack_scan(kept, list(range(len(kept))), {"abc": (5, 1)}, ["n"], ["o"])
        assert unpack_scan(packed) == (kept, list(range(len(kept))), {"abc": (5, 1)}, ["n"],
                                       ["o"])


def test_chains_resolved_on_known_parents_match_chains_resolved_whole() -> None:
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    links = {a: Link(None, 1, b""), b: Link(a, 2, b""), c: Link(b, 4, b"x"),
             d: Link(bytes([9]) * 32, 8, b"x")}  # its parent is nowhere
    whole, whole_problems = chains.resolve(links)
    part, part_problems = chains.resolve({c: links[c], d: links[d]},
                                         {b: whole[b]})
    assert part == {c: whole[c]}
    assert part == {c: stacked(stacked(stacked(0, 1), 2), 4)}
    assert part_problems == whole_problems != []
