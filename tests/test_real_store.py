"""The real Docker 20.10 store against what the engine itself reported (tests/data/.../truth)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURE_ROOT, truth_json
from snapshot import references, size

import imagestore
from imagestore import LayerMetadata

OpenStore = Callable[..., imagestore.Store]
INSPECT: list[dict[str, Any]] = truth_json("image-inspect.json")
TRUTH: dict[str, dict[str, Any]] = {i["Id"]: i for i in INSPECT}
IDS = sorted(TRUTH)


def truth_parent(image_id: str) -> str | None:
    return TRUTH[image_id]["Parent"] or None


def chain_of(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else
                   "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def top_chain(image_id: str) -> str | None:
    chains = chain_of(TRUTH[image_id]["RootFS"].get("Layers") or [])
    return chains[-1] if chains else None


def go_time(text: str) -> datetime:
    """Go's RFC3339Nano in UTC ("Z") to a datetime, truncated to microseconds."""
    assert text.endswith("Z")
    main, _, frac = text[:-1].partition(".")
    micro = int((frac or "0").ljust(6, "0")[:6])
    return datetime.fromisoformat(main).replace(microsecond=micro, tzinfo=timezone.utc)


@dataclass
class DiskLayer:
    chain_id: str
    diff_id: str
    diff_size: int
    parent: str | None


def disk_layers(root: Path) -> dict[str, DiskLayer]:
    out = {}
    for folder in (root / "layerdb" / "sha256").iterdir():
        parent = folder / "parent"
        out["sha256:" + folder.name] = DiskLayer(
            "sha256:" + folder.name, (folder / "diff").read_text().strip(),
            int((folder / "size").read_text()),
            parent.read_text().strip() if parent.exists() else None)
    return out


def mount_parents(root: Path) -> list[str]:
    return [p.read_text().strip() for p in (root / "layerdb" / "mounts").glob("*/parent")]


class ReleaseModel:
    """moby's reference counting over the truth and the layerdb files.

    See docs/moby-semantics.md §6.
    """

    def __init__(self, root: Path) -> None:
        self.layers = disk_layers(root)
        self.mounts = mount_parents(root)
        self.images = {i: top_chain(i) for i in IDS}

    def chain_size(self, chain: str) -> int:
        total, cur = 0, self.layers.get(chain)
        while cur is not None:
            total += cur.diff_size
            cur = self.layers.get(cur.parent) if cur.parent else None
        return total

    def refs(self, chain: str) -> int:
        return (sum(1 for c in self.images.values() if c == chain)
                + sum(1 for layer in self.layers.values() if layer.parent == chain)
                + self.mounts.count(chain))

    def delete(self, image_id: str) -> list[LayerMetadata]:
        chain = self.images.pop(image_id)
        released = []
        while chain is not None and chain in self.layers and self.refs(chain) == 0:
            layer = self.layers[chain]
            released.append(LayerMetadata(chain, layer.diff_id, self.chain_size(chain),
                                          layer.diff_size))
            del self.layers[chain]
            chain = layer.parent
        return released


# -- the fixture is what the engine reported -------------------------------------------------
def test_fixture_is_consistent() -> None:
    assert (FIXTURE_ROOT / "imagedb").is_dir()
    assert len(IDS) == 39
    ids_file = (FIXTURE_ROOT.parent.parent / "truth" / "all-image-ids.txt").read_text().split()
    assert sorted(ids_file) == IDS
    layers = disk_layers(FIXTURE_ROOT)
    for image_id in IDS:
        for chain in chain_of(TRUTH[image_id]["RootFS"]["Layers"]):
            assert chain in layers


def test_map_holds_every_image(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    assert sorted(store.map()) == IDS
    assert len(store) == len(IDS)
    assert store.sync().problems == []


def test_every_image_matches_inspect(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    images = store.map()
    for image_id, truth in TRUTH.items():
        image = store.get(image_id)
        assert image.id == image_id
        assert images[image_id].raw == image.raw
        assert hashlib.sha256(image.raw).hexdigest() == image_id.split(":")[1]
        assert image.parent == truth_parent(image_id)
        assert images[image_id].parent == truth_parent(image_id)
        assert store.get_parent(image_id) == truth_parent(image_id)
        assert image.created == go_time(truth["Created"])
        assert image.os == truth["Os"]
        assert image.architecture == truth["Architecture"]
        # docker inspect shows the last history comment when the config has none.
        comment = image.comment or (image.history[-1].get("comment", "") if image.history
                                    else "")
        assert comment == truth["Comment"]
        assert image.author == truth["Author"]
        assert image.docker_version == truth["DockerVersion"]
        assert image.rootfs.type == truth["RootFS"]["Type"]
        assert image.rootfs.diff_ids == truth["RootFS"]["Layers"]
        assert image.chain_id == top_chain(image_id)
        assert size(store, image_id) == truth["Size"]


def test_last_tag_time(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    seen = 0
    for image_id, truth in TRUTH.items():
        tagged = truth["Metadata"]["LastTagTime"]
        got = store.get_last_updated(image_id)
        if tagged == "0001-01-01T00:00:00Z":
            assert got is None
        else:
            assert got == go_time(tagged)
            seen += 1
    assert seen > 0


def test_heads_and_children(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    named_as_parent = {p for i in IDS if (p := truth_parent(i)) is not None}
    expected_heads = sorted(i for i in IDS if i not in named_as_parent)
    assert sorted(store.heads()) == expected_heads
    assert 1 < len(expected_heads) < len(IDS)
    for image_id in IDS:
        expected = sorted(i for i in IDS if truth_parent(i) == image_id)
        assert store.children(image_id) == expected


def test_dangling_truth_is_an_untagged_head(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    dangling = (FIXTURE_ROOT.parent.parent / "truth" / "images-dangling.txt").read_text().split()
    heads = store.heads()
    for image_id in dangling:
        assert image_id in heads
        assert TRUTH[image_id]["RepoTags"] == []


def test_search_by_short_id(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    shorts = [i.split(":")[1][:12] for i in IDS]
    assert len(set(shorts)) == len(shorts)
    for image_id, short in zip(IDS, shorts, strict=True):
        assert store.search(short) == image_id
        assert store.search("sha256:" + short) == image_id
        assert store.search(image_id) == image_id


def test_tags_resolve_like_docker(real_root: Path, open_store: OpenStore) -> None:
    store = open_store(real_root)
    for image_id, truth in TRUTH.items():
        for tag in truth["RepoTags"]:
            assert store.resolve(tag) == image_id
        assert references(store, image_id) == sorted(truth["RepoTags"])


# -- deleting releases exactly what docker would ---------------------------------------------
@pytest.mark.parametrize("image_id", IDS, ids=[i[7:19] for i in IDS])
def test_delete_one_image_releases_unreferenced_layers(real_root: Path, open_store: OpenStore,
                                                       image_id: str) -> None:
    model = ReleaseModel(real_root)
    expected = model.delete(image_id)
    store = open_store(real_root)
    children = store.children(image_id)
    released = store.delete(image_id)
    assert released == expected
    assert sorted(disk_layers(real_root)) == sorted(model.layers)
    assert not list((real_root / "layerdb" / "sha256").glob("*-removing"))
    for child in children:
        assert store.get_parent(child) is None
        assert not (real_root / "imagedb/metadata/sha256" / child.split(":")[1] / "parent").exists()
    assert image_id not in store.map()
    assert len(store) == len(IDS) - 1
    assert store.sync(full=True).problems == []
    assert len(store) == len(IDS) - 1


def test_deleting_a_head_with_a_shared_top_layer_keeps_it(real_root: Path,
                                                           open_store: OpenStore) -> None:
    named_as_parent = {p for i in IDS if (p := truth_parent(i)) is not None}
    heads = [i for i in IDS if i not in named_as_parent]
    shared = [h for h in heads
              if any(top_chain(o) == top_chain(h) for o in IDS if o != h)]
    assert shared, "the fixture has a head whose top layer another image also uses"
    store = open_store(real_root)
    for head in shared:
        layer = real_root / "layerdb" / "sha256" / str(top_chain(head)).split(":")[1]
        assert store.delete(head) == []
        assert layer.is_dir()


def test_deleting_every_image_leaves_only_mounted_layers(real_root: Path,
                                                         open_store: OpenStore) -> None:
    """``docker rmi`` of every head, then of the parents it frees, top down."""
    model = ReleaseModel(real_root)
    store = open_store(real_root)
    total_released = 0
    while len(store):
        for head in sorted(store.heads()):
            expected = model.delete(head)
            assert store.delete(head) == expected, head
            total_released += len(expected)
            assert sorted(disk_layers(real_root)) == sorted(model.layers)
    assert total_released > 0
    kept = set(disk_layers(real_root))
    # What is left is exactly the container mounts' chains.
    mounted: set[str] = set()
    for chain in mount_parents(real_root):
        cur: str | None = chain
        while cur is not None:
            mounted.add(cur)
            cur = model.layers[cur].parent
    assert kept == mounted
    assert mounted
    assert store.sync(full=True).problems == []
