"""moby's store_test.go (docs/moby-semantics.md §5.5, §5.6) and the store's writes on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import config, make_layers
from snapshot import references
from sqlalchemy import select

import imagestore
from imagestore import (
    ImageNotFound,
    ImageStoreError,
    InvalidImageConfig,
    LayerMetadata,
    LayerNotFound,
    ReadOnlyStore,
)
from imagestore.index import schema
from imagestore.index.fastread import SQLiteReader
from imagestore.moby.digest import digest_of
from imagestore.moby.imagedb import ImageDB

OpenStore = Callable[..., imagestore.Store]

FOO_HEX = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
FOO_DIFF = "sha256:" + FOO_HEX
ID_ABC = "sha256:f40b4ddcd4289be71c5f8f305c5b8babb4266ef2c39bc599ac968dfc6c8b720e"
ID_INVALID = "sha256:f1234d75178d892a133a410355a5a990cf75d2f33eba25d575943d4df632f3a4"
ID_ABC_FOO = "sha256:8d25a9c45df515f9d0fe8e4a6b1c64dd3b965a84790ddbcc7954bb9bc89eb993"
RFC3339NANO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")


def moby_config(comment: str, diff_ids: list[str] | None = None) -> bytes:
    """The exact bytes moby's store tests use (Go raw strings with ", " separators)."""
    if diff_ids is None:
        return f'{{"comment": "{comment}", "rootfs": {{"type": "layers"}}}}'.encode()
    diffs = ", ".join(f'"{d}"' for d in diff_ids)
    return (f'{{"comment": "{comment}", "rootfs": {{"type": "layers", "diff_ids": [{diffs}]}}}}'
            .encode())


def diff(name: str) -> str:
    return digest_of(name.encode())


def hex_(image_id: str) -> str:
    return image_id.split(":", 1)[1]


def content_file(root: Path, image_id: str) -> Path:
    return root / "imagedb" / "content" / "sha256" / hex_(image_id)


def meta_file(root: Path, image_id: str, key: str) -> Path:
    return root / "imagedb" / "metadata" / "sha256" / hex_(image_id) / key


def layer_dir(root: Path, chain: str) -> Path:
    return root / "layerdb" / "sha256" / hex_(chain)


def add_mount(root: Path, name: str, parent: str | None) -> None:
    folder = root / "layerdb" / "mounts" / name
    folder.mkdir(parents=True)
    (folder / "mount-id").write_text("m" * 64)
    (folder / "init-id").write_text("m" * 64 + "-init")
    if parent is not None:
        (folder / "parent").write_text(parent)


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under root: type, mode, size, mtime and content hash (files+mtimes)."""
    out: dict[str, Any] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            entry: tuple[Any, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                      st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                entry += (st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            out[str(path.relative_to(root))] = entry
    return out


def state(store: imagestore.Store) -> dict[str, Any]:
    images = store.map()
    return {
        "len": len(store),
        "ids": sorted(images),
        "parents": {i: store.get_parent(i) for i in images},
        "image_parents": {i: img.parent for i, img in images.items()},
        "heads": sorted(store.heads()),
        "children": {i: store.children(i) for i in images},
        "last_updated": {i: store.get_last_updated(i) for i in images},
        "built_locally": {i: store.is_built_locally(i) for i in images},
        "raw": {i: img.raw for i, img in images.items()},
    }


# -- store_test.go ---------------------------------------------------------------------------
def test_create_rejects_config_without_rootfs(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    with pytest.raises(InvalidImageConfig) as info:
        store.create(b"{}")
    assert str(info.value) == "invalid image JSON, no RootFS key"
    assert len(store) == 0
    # NewFromJSON runs before fs.Set: nothing was written.
    assert list((empty_root / "imagedb" / "content" / "sha256").iterdir()) == []


def test_restore(empty_root: Path, open_store: OpenStore) -> None:
    make_layers(empty_root, [FOO_DIFF])
    imagedb = ImageDB(empty_root / "imagedb")
    id1 = imagedb.set(moby_config("abc"))
    assert id1 == ID_ABC
    assert imagedb.set(b"invalid") == ID_INVALID
    id2 = imagedb.set(moby_config("def", [FOO_DIFF]))
    imagedb.set_metadata(id2, "parent", id1.encode())

    store = open_store(empty_root)
    assert len(store.map()) == 2
    assert len(store) == 2
    img1 = store.get(id1)
    assert img1.id == id1
    assert str(img1) == id1
    assert img1.comment == "abc"
    assert store.get(id2).comment == "def"
    assert store.get_parent(id1) is None
    assert store.get_parent(id2) == id1
    assert store.get(id2).parent == id1
    assert store.children(id1) == [id2]
    assert list(store.heads()) == [id2]
    assert store.search(id1[:10]) == id1
    assert store.search(hex_(id1)[:6]) == id1
    with pytest.raises(ImageNotFound) as info:
        store.search(hex_(id1)[1:6])
    assert "40b4d" in str(info.value)
    # The invalid config is skipped and reported, not fatal; its file stays.
    problems = {p.path: p for p in store.sync().problems}
    invalid = problems["imagedb/content/sha256/" + hex_(ID_INVALID)]
    assert invalid.kind == "invalid-config"
    assert content_file(empty_root, ID_INVALID).read_bytes() == b"invalid"
    with pytest.raises(ImageNotFound):
        store.get(ID_INVALID)


def test_add_delete(empty_root: Path, open_store: OpenStore) -> None:
    # moby's bytes use a diff id without "sha256:"; no layerdb entry can hold that chain id,
    # so the same test runs on the proper digest of "foo".
    (chain,) = make_layers(empty_root, [FOO_DIFF], sizes=[3])
    store = open_store(empty_root)
    id1 = store.create(moby_config("abc", [FOO_DIFF]))
    assert id1 == digest_of(moby_config("abc", [FOO_DIFF]))
    assert store.get(id1).comment == "abc"
    id2 = store.create(moby_config("def", [FOO_DIFF]))
    store.set_parent(id2, id1)
    assert store.get_parent(id2) == id1
    assert store.delete(id1) == []  # id2 still holds the layer
    with pytest.raises(ImageNotFound):
        store.get(id1)
    assert not content_file(empty_root, id1).exists()
    assert store.get(id2).comment == "def"
    assert store.get_parent(id2) is None
    assert store.get(id2).parent is None
    assert not meta_file(empty_root, id2, "parent").exists()
    assert layer_dir(empty_root, chain).is_dir()
    assert store.delete(id2) == [LayerMetadata(chain, FOO_DIFF, 3, 3)]
    assert not layer_dir(empty_root, chain).exists()
    assert len(store) == 0


def test_create_with_moby_bytes_writes_content_then_fails_on_layer(
    empty_root: Path, open_store: OpenStore
) -> None:
    raw = moby_config("abc", [FOO_HEX])
    assert digest_of(raw) == ID_ABC_FOO
    store = open_store(empty_root)
    with pytest.raises(LayerNotFound):
        store.create(raw)
    assert content_file(empty_root, ID_ABC_FOO).read_bytes() == raw
    assert ID_ABC_FOO not in store
    assert len(store) == 0


def test_search_after_delete(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc"))
    assert image_id == ID_ABC
    assert store.search(image_id[:15]) == image_id
    assert store.delete(image_id) == []
    with pytest.raises(ImageNotFound, match="No such image"):
        store.search(image_id[:15])
    with pytest.raises(ImageNotFound):
        store.search(image_id)


def test_delete_not_existing(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    with pytest.raises(ImageNotFound):
        store.delete("i_dont_exists")
    with pytest.raises(ImageNotFound):
        store.delete(ID_ABC)
    with pytest.raises(ImageNotFound):
        store.delete("sha256:../../layerdb")


def test_parent_reset(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    id1, id2, id3 = (store.create(moby_config(f"abc{i}")) for i in (1, 2, 3))
    store.set_parent(id1, id2)
    assert store.children(id2) == [id1]
    store.set_parent(id1, id3)
    assert store.children(id2) == []
    assert store.children(id3) == [id1]
    assert store.get_parent(id1) == id3
    assert meta_file(empty_root, id1, "parent").read_bytes() == id3.encode()
    assert set(store.heads()) == {id1, id2}


def test_get_and_set_last_updated(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc1"))
    assert store.get_last_updated(image_id) is None
    assert not meta_file(empty_root, image_id, "lastUpdated").exists()
    store.set_last_updated(image_id)
    when = store.get_last_updated(image_id)
    assert when is not None
    assert when.utcoffset() == timedelta(0)
    text = meta_file(empty_root, image_id, "lastUpdated").read_text()
    assert RFC3339NANO_Z.fullmatch(text), text


def test_store_len(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    ids = [store.create(moby_config(f"abc{i}")) for i in range(10)]
    assert len(store) == 10
    assert len(store.map()) == 10
    assert ids[0] == "sha256:e96757107211e22df969d695ee1e1b401c042a2a12bf05dcbc9d2f232808c4ce"
    assert ids[1] == "sha256:e73205f339f4d72652de984df0b0375a932a6eec096c5af302ad3ad51adf85c9"
    assert ids[2] == "sha256:ad4ac594c2295e0b4ee6fc18dcb1b191dbbb6a2ff18820f824323e41532497bf"
    assert ids[3] == "sha256:6ac6b5508154e9d239b1597ab6e756d30a1ec893381461c94992eb8eaf885259"
    assert sorted(store.map()) == sorted(ids)


# -- derived cases (docs/moby-semantics.md §5.6) -------------------------------------------------
def test_create_is_idempotent(empty_root: Path, open_store: OpenStore) -> None:
    make_layers(empty_root, [FOO_DIFF])
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc", [FOO_DIFF]))
    store.set_last_updated(image_id, datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    store.set_built_locally(image_id)
    before = state(store)
    assert store.create(moby_config("abc", [FOO_DIFF])) == image_id
    assert state(store) == before
    assert len(store) == 1
    assert meta_file(empty_root, image_id, "builtLocally").read_bytes() == b"\x01"


def test_create_checks_history(empty_root: Path, open_store: OpenStore) -> None:
    make_layers(empty_root, [FOO_DIFF])
    store = open_store(empty_root)
    bad = config("h", [FOO_DIFF], history=[{"created_by": "a"}, {"created_by": "b"}])
    with pytest.raises(InvalidImageConfig, match="too many non-empty layers in History section"):
        store.create(bad)
    assert not content_file(empty_root, digest_of(bad)).exists()
    good = config("h", [FOO_DIFF], history=[{"created_by": "a"},
                                            {"created_by": "b", "empty_layer": True}])
    assert store.create(good) == digest_of(good)


def test_create_refuses_non_bytes(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    with pytest.raises(ImageStoreError):
        store.create(moby_config("abc").decode())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.create(None)  # type: ignore[arg-type]
    assert len(store) == 0


def test_create_with_missing_layer(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    diffs = [diff("a"), diff("b")]
    raw = config("x", diffs)
    with pytest.raises(LayerNotFound):
        store.create(raw)
    image_id = digest_of(raw)
    assert content_file(empty_root, image_id).read_bytes() == raw
    assert image_id not in store
    with pytest.raises(ImageNotFound):
        store.get(image_id)
    problems = {p.path: p.kind for p in store.sync().problems}
    assert problems == {"imagedb/content/sha256/" + hex_(image_id): "missing-layer"}
    # A partial chain is still missing the top layer.
    make_layers(empty_root, diffs[:1])
    store.sync()
    assert image_id not in store
    make_layers(empty_root, diffs)
    report = store.sync()
    assert report.problems == []
    assert store.get(image_id).raw == raw


def test_create_sees_layer_added_after_open(empty_root: Path, open_store: OpenStore) -> None:
    # The contract (docs/moby-semantics.md §7): the layers must exist in layerdb; dockerd may
    # register them at any time.
    store = open_store(empty_root)
    a = diff("a")
    make_layers(empty_root, [a])
    image_id = store.create(config("late", [a]))
    assert store.get(image_id).rootfs.diff_ids == [a]


def test_heads_follow_parent_links(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    p, c = store.create(moby_config("p")), store.create(moby_config("c"))
    assert set(store.heads()) == {p, c}
    store.set_parent(c, p)
    assert set(store.heads()) == {c}
    assert store.heads()[c].parent == p
    store.delete(c)
    assert set(store.heads()) == {p}


def test_one_image_store_does_not_answer_empty_search(empty_root: Path,
                                                      open_store: OpenStore) -> None:
    store = open_store(empty_root)
    with pytest.raises(ImageNotFound):
        store.search("")
    store.create(moby_config("abc"))
    with pytest.raises(ImageNotFound):
        store.search("")


def test_get_accepts_full_ids_only(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc"))
    assert store.get(hex_(image_id)).id == image_id
    for bad in (image_id[:20], hex_(image_id)[:12], image_id.upper(), "", image_id + "0"):
        with pytest.raises(ImageNotFound):
            store.get(bad)
    assert isinstance(ImageNotFound("x"), LookupError)


# -- delete and layer release ----------------------------------------------------------------
def test_delete_releases_like_moby(empty_root: Path, open_store: OpenStore) -> None:
    a, b, c, d = (diff(x) for x in "abcd")
    l1, l2, l3 = make_layers(empty_root, [a, b, c], sizes=[10, 20, 30])
    _, _, l3b = make_layers(empty_root, [a, b, d], sizes=[10, 20, 40])
    store = open_store(empty_root)
    img_a = store.create(config("A", [a, b, c]))
    img_b = store.create(config("B", [a, b, d]))
    img_c = store.create(config("C", [a, b]))

    assert store.delete(img_a) == [LayerMetadata(l3, c, 60, 30)]
    assert not layer_dir(empty_root, l3).exists()
    assert layer_dir(empty_root, l2).is_dir()
    assert store.delete(img_c) == []  # l2 still has the child layer l3b
    assert layer_dir(empty_root, l2).is_dir()
    released = store.delete(img_b)
    assert released == [LayerMetadata(l3b, d, 70, 40), LayerMetadata(l2, b, 30, 20),
                        LayerMetadata(l1, a, 10, 10)]
    assert os.listdir(empty_root / "layerdb" / "sha256") == []
    # The index agrees with the disk after a full rebuild.
    assert store.sync(full=True).problems == []
    assert len(store) == 0


def test_delete_keeps_layer_of_another_image(empty_root: Path, open_store: OpenStore) -> None:
    a, b = diff("a"), diff("b")
    l1, l2 = make_layers(empty_root, [a, b], sizes=[5, 7])
    store = open_store(empty_root)
    x = store.create(config("x", [a, b]))
    y = store.create(config("y", [a, b]))
    z = store.create(config("z", [a]))
    assert store.delete(x) == []
    assert store.delete(z) == []  # l1 is l2's parent
    assert store.delete(y) == [LayerMetadata(l2, b, 12, 7), LayerMetadata(l1, a, 5, 5)]
    assert not layer_dir(empty_root, l1).exists()


def test_delete_stops_at_container_mount(empty_root: Path, open_store: OpenStore) -> None:
    a, b, c = diff("a"), diff("b"), diff("c")
    l1, l2, l3 = make_layers(empty_root, [a, b, c], sizes=[1, 2, 3])
    add_mount(empty_root, "f" * 64, l2)
    store = open_store(empty_root)
    top = store.create(config("top", [a, b, c]))
    mid = store.create(config("mid", [a, b]))
    assert store.delete(top) == [LayerMetadata(l3, c, 6, 3)]
    assert store.delete(mid) == []
    assert layer_dir(empty_root, l2).is_dir()
    assert layer_dir(empty_root, l1).is_dir()


def test_mount_added_after_open_is_honoured(empty_root: Path, open_store: OpenStore) -> None:
    a = diff("a")
    (l1,) = make_layers(empty_root, [a])
    store = open_store(empty_root)
    image_id = store.create(config("x", [a]))
    add_mount(empty_root, "e" * 64, l1)
    store.sync()
    assert store.delete(image_id) == []
    assert layer_dir(empty_root, l1).is_dir()


def test_delete_image_without_layers(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc"))
    store.set_last_updated(image_id)
    assert store.delete(image_id) == []
    assert not content_file(empty_root, image_id).exists()
    assert not meta_file(empty_root, image_id, "lastUpdated").parent.exists()


def test_delete_removes_childrens_parent_files(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    top, mid = store.create(moby_config("top")), store.create(moby_config("mid"))
    kids = [store.create(moby_config(f"kid{i}")) for i in range(3)]
    store.set_parent(mid, top)
    for kid in kids:
        store.set_parent(kid, mid)
    assert store.children(mid) == sorted(kids)
    store.delete(mid)
    for kid in kids:
        assert not meta_file(empty_root, kid, "parent").exists()
        assert store.get_parent(kid) is None
    assert store.children(top) == []
    assert set(store.heads()) == {top, *kids}
    assert not meta_file(empty_root, mid, "parent").parent.exists()
    # Reading the disk from scratch gives the same graph.
    before = state(store)
    store.sync(full=True)
    assert state(store) == before


# -- metadata writes -------------------------------------------------------------------------
def test_set_parent_writes_exact_bytes(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    child, parent = store.create(moby_config("c")), store.create(moby_config("p"))
    store.set_parent(child, parent)
    path = meta_file(empty_root, child, "parent")
    assert path.read_bytes() == b"sha256:" + hex_(parent).encode()
    assert len(path.read_bytes()) == 71
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store.set_parent(child, parent)  # re-setting the same parent is harmless
    assert store.children(parent) == [child]
    # Bare hex IDs are accepted and written in full.
    store.set_parent(hex_(child), hex_(parent))
    assert path.read_bytes() == parent.encode()


def test_set_parent_refuses_cycles(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    a, b, c = (store.create(moby_config(x)) for x in "abc")
    store.set_parent(b, a)
    store.set_parent(c, b)
    for child, parent in ((a, c), (a, b), (a, a), (b, c)):
        with pytest.raises(ImageStoreError) as info:
            store.set_parent(child, parent)
        assert not isinstance(info.value, ImageNotFound)
    assert not meta_file(empty_root, a, "parent").exists()
    assert meta_file(empty_root, b, "parent").read_bytes() == a.encode()
    assert store.get_parent(a) is None
    assert store.get_parent(b) == a
    assert list(store.heads()) == [c]


def test_set_parent_unknown_images(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    a = store.create(moby_config("a"))
    missing = digest_of(b"missing")
    with pytest.raises(ImageNotFound, match="unknown parent image ID"):
        store.set_parent(a, missing)
    with pytest.raises(ImageNotFound):
        store.set_parent(missing, a)
    with pytest.raises(ImageNotFound):
        store.set_parent(a, "not-an-id")
    with pytest.raises(ImageNotFound):
        store.get_parent(missing)
    assert not meta_file(empty_root, a, "parent").exists()
    assert not (empty_root / "imagedb" / "metadata" / "sha256" / hex_(missing)).exists()


def test_children_are_sorted(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    parent = store.create(moby_config("p"))
    kids = [store.create(moby_config(f"k{i}")) for i in range(8)]
    for kid in reversed(kids):
        store.set_parent(kid, parent)
    assert store.children(parent) == sorted(kids)
    assert store.children(kids[0]) == []
    assert store.children(digest_of(b"nothing")) == []


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2017, 3, 2, 10, 15, 7, 123456, timezone(timedelta(hours=1))),
         "2017-03-02T09:15:07.123456Z"),
        (datetime(2026, 11, 30, 0, 8, 20, tzinfo=timezone.utc), "2026-11-30T00:08:20Z"),
        (datetime(2026, 11, 30, 0, 8, 20, 210000, timezone(timedelta(hours=-7))),
         "2026-11-30T07:08:20.21Z"),
    ],
)
def test_set_last_updated_writes_rfc3339nano_utc(empty_root: Path, open_store: OpenStore,
                                                 when: datetime, text: str) -> None:
    store = open_store(empty_root)
    image_id = store.create(moby_config("abc"))
    store.set_last_updated(image_id, when)
    path = meta_file(empty_root, image_id, "lastUpdated")
    assert path.read_bytes() == text.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = store.get_last_updated(image_id)
    assert got == when
    assert got is not None and got.utcoffset() == timedelta(0)


def test_set_built_locally_writes_one_byte(empty_root: Path, open_store: OpenStore) -> None:
    store = open_store(empty_root)
    image_id, other = store.create(moby_config("abc")), store.create(moby_config("def"))
    assert store.is_built_locally(image_id) is False
    store.set_built_locally(image_id)
    path = meta_file(empty_root, image_id, "builtLocally")
    assert path.read_bytes() == b"\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.is_built_locally(image_id) is True
    assert store.is_built_locally(other) is False
    with pytest.raises(ImageNotFound):
        store.is_built_locally(digest_of(b"nothing"))
    with pytest.raises(ImageNotFound):
        store.set_built_locally(digest_of(b"nothing"))


# -- read-only stores ------------------------------------------------------------------------
def _populated_root(root: Path, store: imagestore.Store) -> list[str]:
    a, b = diff("a"), diff("b")
    make_layers(root, [a, b])
    store.sync()
    base = store.create(config("base", [a]))
    top = store.create(config("top", [a, b]))
    bare = store.create(config("bare"))
    store.set_parent(top, base)
    store.set_last_updated(top, datetime(2020, 1, 1, tzinfo=timezone.utc))
    store.set_built_locally(base)
    return [base, top, bare]


def test_readonly_never_writes_the_root(empty_root: Path, open_store: OpenStore,
                                        tmp_path: Path) -> None:
    writer = open_store(empty_root)
    base, top, bare = _populated_root(empty_root, writer)
    expected = state(writer)
    writer.close()
    (empty_root / "imagedb" / "content" / "sha256" / ("9" * 64)).write_bytes(b"not json")
    before = snapshot(empty_root)

    store = open_store(empty_root, index=tmp_path / "ro" / "index.sqlite", readonly=True)
    assert state(store) == expected  # the index is still built
    assert len(store) == 3
    new = config("new", [diff("a")])
    calls: list[Callable[[], object]] = [
        lambda: store.create(new),
        lambda: store.create(store.get(base).raw),
        lambda: store.delete(top),
        lambda: store.delete(bare),
        lambda: store.set_parent(bare, base),
        lambda: store.set_last_updated(base),
        lambda: store.set_built_locally(top),
        lambda: store.drop_references([top]),
    ]
    for call in calls:
        with pytest.raises(ReadOnlyStore) as info:
            call()
        assert isinstance(info.value, ImageStoreError)
    store.sync()
    store.sync(full=True)
    assert snapshot(empty_root) == before
    assert state(store) == expected


def test_readonly_real_store_is_left_alone(real_root: Path, open_store: OpenStore) -> None:
    before = snapshot(real_root)
    store = open_store(real_root, readonly=True)
    assert len(store) == 39
    tagged = store.resolve("web:1.0")
    heads = sorted(store.heads())
    parent = store.get_parent(tagged)
    calls: list[Callable[[], object]] = [
        lambda: store.delete(tagged),
        lambda: store.drop_references([tagged]),
        lambda: store.set_parent(heads[0], heads[1]),
        lambda: store.set_last_updated(tagged),
        lambda: store.set_built_locally(tagged),
        lambda: store.create(config("new")),
    ]
    for call in calls:
        with pytest.raises(ReadOnlyStore):
            call()
    assert len(store) == 39
    assert store.get_parent(tagged) == parent
    assert store.resolve("web:1.0") == tagged
    assert snapshot(real_root) == before


def test_readonly_does_not_create_imagedb(tmp_path: Path, open_store: OpenStore) -> None:
    root = tmp_path / "root"
    (root / "layerdb" / "sha256").mkdir(parents=True)
    before = snapshot(root)
    store = open_store(root, readonly=True)
    assert len(store) == 0
    assert store.map() == {}
    assert snapshot(root) == before


def test_reopen_after_deleting_index_rebuilds_same_state(
    empty_root: Path, open_store: OpenStore, index: Path
) -> None:
    store = open_store(empty_root)
    ids = _populated_root(empty_root, store)
    store.delete(ids[2])
    expected = state(store)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    assert not index.exists()
    again = open_store(empty_root)
    assert state(again) == expected
    assert again.get_last_updated(ids[1]) == datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert again.is_built_locally(ids[0])


def test_fetch_reads_one_snapshot_through_the_plain_reader(real_root: Path, index: Path) -> None:
    """Listings read through plain sqlite3 must answer exactly as the engine does, bound
    parameters and expanding IN lists included."""
    with imagestore.open(real_root, index) as store:
        t = schema.images
        ids = sorted(store.map())[:3]
        queries = [select(t.c.id, t.c.created).where(t.c.id.in_(ids)).order_by(t.c.id),
                   select(t.c.id).where(t.c.id == ids[0])]
        plain = SQLiteReader(index, store.index.engine.dialect)
        fast = plain.fetch(*queries)
        plain.close()
        with store.index.engine.connect() as conn:
            assert fast == [[tuple(r) for r in conn.execute(q)] for q in queries]
        assert [r[0] for r in fast[0]] == ids
        assert store.index.fetch(*queries) == fast


def test_untag_rewrites_references_and_refuses_a_corrupt_file(real_root: Path,
                                                               open_store: OpenStore) -> None:
    store = open_store(real_root)
    target = store.resolve("web:1.0")
    refs = references(store, target)
    assert "web:1.0" in refs
    assert store.drop_references([target]) == refs
    assert references(store, target) == []
    doc = json.loads((real_root / "repositories.json").read_bytes())
    assert target not in {i for entries in doc["Repositories"].values() for i in entries.values()}
    assert all(doc["Repositories"].values())  # a repository left empty is gone
    other = store.resolve(next(r for e in doc["Repositories"].values() for r in e))
    corrupt = b'{"Repositories": ["not", "an", "object"]}'
    (real_root / "repositories.json").write_bytes(corrupt)
    with pytest.raises(ImageStoreError, match="is corrupt; not rewriting it"):
        store.drop_references([other])
    assert (real_root / "repositories.json").read_bytes() == corrupt
