"""containerd's image store as a store: opened, indexed and answered through the library and
the command line as Docker 29 answers (truth-C.json, what a real Docker 29.7.2 said about
root C), side by side with classic stores, and never written."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import config, make_layers
from ctd import expected_a, truth_c, unpack_a, unpack_c

import imagestore
from imagestore.service.ctdhost import ContainerdHost
from imagestore.service.listing import engine_rows

TRUTH = truth_c()
ALL_IDS = sorted(TRUTH["by_id"])


@pytest.fixture
def root_c(tmp_path: Path) -> tuple[Path, Path]:
    return unpack_c(tmp_path / "c")


@pytest.fixture
def root_a(tmp_path: Path) -> Path:
    return unpack_a(tmp_path / "a")


def containerd(store: imagestore.Store) -> ContainerdHost:
    """What ``imagestore.open`` gave for a containerd root (typed as the classic ``Host``)."""
    assert isinstance(store, ContainerdHost)
    return store


@pytest.fixture
def store_c(root_c: tuple[Path, Path], index: Path) -> Iterator[ContainerdHost]:
    with imagestore.open(root_c[0], index, docker_root=root_c[1]) as store:
        yield containerd(store)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its bytes' digest and mode (what "untouched" means)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            st = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            out[str(path.relative_to(root))] = f"{hashlib.sha256(data).hexdigest()} {st.st_mode}"
    return out


def _same_second_groups(rows: list[dict[str, Any]]) -> list[tuple[int, list[str]]]:
    """Rows of one ``Created`` second may come in any order (the engine's own restart did)."""
    groups: dict[int, list[str]] = {}
    for r in rows:
        groups.setdefault(r["Created"], []).append(json.dumps(r, sort_keys=True))
    return sorted((k, sorted(v)) for k, v in groups.items())


# -- as Docker 29 answers, through the index ---------------------------------------------------
@pytest.mark.parametrize("variant", sorted(TRUTH["images_json"]))
def test_list_rows_equal_the_engines(store_c: ContainerdHost, variant: str) -> None:
    truth = TRUTH["images_json"][variant]
    query = truth["query"]
    filters = {}
    if "filters=" in query:
        from urllib.parse import parse_qs, urlsplit

        filters = json.loads(parse_qs(urlsplit(query).query)["filters"][0])
    rows = store_c.images.rows(all="all=1" in query, filters=filters,
                               manifests="manifests=1" in query,
                               shared_size="shared-size=1" in query)
    assert _same_second_groups(rows) == _same_second_groups(truth["body"])


@pytest.mark.parametrize("image_id", ALL_IDS)
def test_get_attrs_and_history_equal_the_engines(store_c: ContainerdHost, image_id: str) -> None:
    truth = TRUTH["by_id"][image_id]
    model = store_c.images.get(image_id)
    assert model.attrs == truth["inspect"]["body"]
    assert model.history() == truth["history"]["body"]
    assert store_c.images.get(image_id, manifests=True).attrs == \
        truth["inspect_manifests"]["body"]


def test_names_and_short_ids_resolve_as_the_engine_does(store_c: ContainerdHost) -> None:
    for name, answer in TRUTH["by_name"].items():
        assert store_c.images.get(name).id == answer["body"]["Id"], name
    for short, answer in TRUTH["by_short_id"].items():
        assert store_c.images.get(short).id == answer["Id"], short


def test_list_models_and_dangling_filter(store_c: ContainerdHost) -> None:
    ids = [m.id for m in store_c.images.list(all=True)]
    assert sorted(ids) == sorted(r["Id"] for r in TRUTH["images_json"]["all"]["body"])
    dangling = {m.id for m in store_c.images.list(filters={"dangling": True})}
    assert dangling == {r["Id"] for r in TRUTH["images_json"]["dangling_true"]["body"]}
    for m in store_c.images.list():
        assert m.attrs == TRUTH["by_id"][m.id]["inspect"]["body"]


def test_parents_children_and_heads_follow_the_parent_label(store_c: ContainerdHost) -> None:
    rows = TRUTH["images_json"]["all"]["body"]
    parents = {r["Id"]: r["ParentId"] for r in rows}
    for image_id, parent in parents.items():
        assert (store_c.get_parent(image_id) or "") == parent
        assert sorted(store_c.children(image_id)) == sorted(
            c for c, p in parents.items() if p == image_id)
    assert sorted(store_c.heads()) == sorted(i for i in parents if i not in parents.values())


def test_ls_prints_what_docker_images_prints(root_c: tuple[Path, Path], index: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--docker-root", str(root_c[1])]
    for flags, variant in (([], "default"), (["-a"], "all"),
                           (["--filter", "dangling=true"], "dangling_true")):
        got = run_cli(capsys, root_c[0], *args, "ls", "--json", *flags, index=index)
        assert got.code == 0, got.err
        want = engine_rows(TRUTH["images_json"][variant]["body"])
        key = lambda r: (r["id"], r["repository"] or "", r["tag"] or "")  # noqa: E731
        assert sorted(got.json(), key=key) == sorted(
            ({k: r[k] for k in ("id", "repository", "tag", "created", "size", "parent")}
             for r in want), key=key)
    digests = run_cli(capsys, root_c[0], *args, "ls", "--digests", index=index)
    assert digests.code == 0 and "DIGEST" in digests.out.splitlines()[0]
    assert "sha256:149cd7c9847f" in digests.out  # oci-multi's own digest, as docker shows it


# -- opening, namespaces, and what is refused ---------------------------------------------------
def test_namespaces_are_listed_and_an_unknown_one_is_one_line(
        root_a: Path, index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = expected_a()["namespaces"]
    got = run_cli(capsys, root_a, "namespaces", "--json")
    assert got.code == 0
    rows = {r["namespace"]: r for r in got.json()}
    assert set(rows) == set(expected)
    for name, ns in expected.items():
        assert rows[name]["blobs"] == len(ns["content"])
    wrong = run_cli(capsys, root_a, "--namespace", "nope", "ls", index=index)
    assert wrong.code == 1 and len(wrong.err.strip().splitlines()) == 1
    assert "default, k8s.io, moby" in wrong.err
    assert not index.exists()  # a new index is filled before it is seen: nothing made
    imagestore.open(root_a, index, namespace="k8s.io").close()
    with pytest.raises(imagestore.NoSuchNamespace) as raised:
        imagestore.open(root_a, index, namespace="nope")
    assert raised.value.present == ["default", "k8s.io", "moby"]
    with imagestore.open(root_a, index, namespace="k8s.io") as store:
        # the store the failed open claimed in an existing index is not left behind
        assert [r["namespace"] for r in store.index.stores()] == ["k8s.io"]


def test_a_data_root_in_containerd_mode_says_where_to_look(
        root_c: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    got = run_cli(capsys, root_c[1], "ls")
    assert got.code == 1 and "containerd" in got.err and "--root" in got.err
    assert len(got.err.strip().splitlines()) == 1


def test_a_managed_containerd_is_found_under_its_data_root(root_c: tuple[Path, Path],
                                                          tmp_path: Path, index: Path) -> None:
    data_root = tmp_path / "managed"
    (data_root / "containerd").mkdir(parents=True)
    root_c[0].rename(data_root / "containerd" / "daemon")
    (root_c[1] / "containers").rename(data_root / "containers")
    with imagestore.open(data_root, index) as store:
        assert len(store) == len(ALL_IDS)
        assert store.images.get("sha256:2d2604bf92ea").attrs["Id"].startswith("sha256:2d26")
        rows = {r["Id"]: r["Containers"] for r in containerd(store).images.rows(all=True)}
        assert rows == {r["Id"]: r["Containers"]
                        for r in TRUTH["images_json"]["all"]["body"]}


@pytest.mark.parametrize("argv", [["rm", "bld:one"], ["rm", "-f", "bld:one"], ["prune", "-a"],
                                  ["prune", "--dry-run"], ["tag", "bld:one", "x:1"],
                                  ["set-parent", "bld:one", "multi:a"], ["fsck", "--repair"]])
def test_writes_are_refused_and_nothing_is_touched(root_c: tuple[Path, Path], index: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   argv: list[str]) -> None:
    before = tree(root_c[0].parent)
    got = run_cli(capsys, root_c[0], "--docker-root", str(root_c[1]), *argv, index=index)
    assert got.code == 1, got.out
    assert got.err.count("\n") == 1 and "containerd store" in got.err and "reads only" in got.err
    assert tree(root_c[0].parent) == before


def test_create_and_library_writes_are_refused(store_c: ContainerdHost, root_c: tuple[Path, Path],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               index: Path) -> None:
    before = tree(root_c[0].parent)
    with pytest.raises(imagestore.ReadOnlyKind, match="rm refused"):
        store_c.images.remove("bld:one")
    with pytest.raises(imagestore.ReadOnlyKind, match="prune refused"):
        store_c.images.prune()
    with pytest.raises(imagestore.ReadOnlyKind):
        store_c.images.get("bld:one").tag("x", "1")
    with pytest.raises(imagestore.ReadOnlyKind):
        store_c.create(b"{}")
    with pytest.raises(imagestore.ReadOnlyKind):
        store_c.delete_image(ALL_IDS[0])
    with pytest.raises(imagestore.ReadOnlyKind):
        store_c.untag("bld:one")
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(config("x", diff_ids=[]))
    got = run_cli(capsys, root_c[0], "create", str(cfg), index=index)
    assert got.code == 1 and "create refused" in got.err
    assert tree(root_c[0].parent) == before


# -- freshness ---------------------------------------------------------------------------------
def test_a_warm_open_reads_nothing_and_a_change_is_seen(root_c: tuple[Path, Path],
                                                        index: Path) -> None:
    ctd_root, docker_root = root_c
    imagestore.open(ctd_root, index, docker_root=docker_root).close()
    with imagestore.open(ctd_root, index, docker_root=docker_root) as store:
        assert store.last_sync is None  # fresh: nothing was read again
    # A blob added behind the index's back (as a pull would) changes the blob folder.
    blob = b"not referenced by anything"
    (ctd_root / "io.containerd.content.v1.content/blobs/sha256" /
     hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    with imagestore.open(ctd_root, index, docker_root=docker_root) as store:
        assert store.last_sync is not None
        assert (store.last_sync.added, store.last_sync.removed) == (0, 0)


# -- a fleet: both kinds in one index ----------------------------------------------------------
def test_classic_and_containerd_stores_share_one_index(
        root_a: Path, root_c: tuple[Path, Path], empty_root: Path, index: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with imagestore.open(root_a, index, namespace="k8s.io") as k8s:
        image = k8s.images.get("registry.k8s.io/pause:3.9")
        diff_ids = image.attrs["RootFS"]["Layers"]
    # A classic host holding the same layer: one layer, two kinds of store.
    make_layers(empty_root, diff_ids)
    with imagestore.open(empty_root, index) as classic:
        classic.create(config("same layer", diff_ids=diff_ids))
    imagestore.open(root_c[0], index, docker_root=root_c[1]).close()
    got = run_cli(capsys, None, "stores", "--json", index=index)
    assert got.code == 0
    kinds = sorted((r["kind"], r["namespace"] or "") for r in got.json())
    assert kinds == [("containerd", "k8s.io"), ("containerd", "moby"), ("moby", "")]
    rows = run_cli(capsys, None, "sql", "--json",
                   "SELECT diff_id, stores, kinds FROM shared_layers", index=index).json()
    shared = {r["diff_id"]: r for r in rows}
    assert diff_ids[0] in shared
    assert sorted(shared[diff_ids[0]]["kinds"].split(",")) == ["containerd", "moby"]
    holders = run_cli(capsys, None, "sql", "--json",
                      "SELECT store, kind FROM layer_stores WHERE diff_id = ?",
                      "-p", diff_ids[0], index=index).json()
    assert sorted(r["kind"] for r in holders) == ["containerd", "moby"]


# -- platform, save and fsck through the store ---------------------------------------------------
def test_platform_picks_another_manifest_of_an_index(root_c: tuple[Path, Path],
                                                     index: Path) -> None:
    from imagestore.containerd import content, meta
    from imagestore.containerd.layout import Layout

    layout = Layout(root_c[0])
    target = TRUTH["by_name"]["oci-multi:latest"]["body"]["Id"]
    doc = json.loads(content.read_blob(layout, target))
    arm = next(m for m in doc["manifests"] if m["platform"]["architecture"] == "arm64")
    manifest = json.loads(content.read_blob(layout, arm["digest"]))
    arm_config = json.loads(content.read_blob(layout, manifest["config"]["digest"]))
    assert meta.read(layout.meta).namespaces["moby"].images  # a real namespace
    with imagestore.open(root_c[0], index, platform="linux/arm64") as store:
        attrs = store.images.get("oci-multi:latest").attrs
        assert attrs["Id"] == target  # the image is still its index
        assert attrs["Architecture"] == "arm64"
        assert attrs["RootFS"]["Layers"] == arm_config["rootfs"]["diff_ids"]
    with imagestore.open(root_c[0], index) as store:  # the host's platform again
        assert store.images.get("oci-multi:latest").attrs == \
            TRUTH["by_name"]["oci-multi:latest"]["body"]
    with pytest.raises(imagestore.ImageStoreError, match="os/arch"):
        imagestore.open(root_c[0], index, platform="arm64")


def test_fsck_is_clean_then_names_a_missing_blob(root_c: tuple[Path, Path], index: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--docker-root", str(root_c[1])]
    clean = run_cli(capsys, root_c[0], *args, "fsck", "--json", index=index)
    assert clean.code == 0, clean.out
    assert clean.json()["findings"] == []
    before = tree(root_c[0].parent)
    layer = TRUTH["by_name"]["saved:v1"]["body"]["RootFS"]["Layers"][0]
    from imagestore.containerd.layout import Layout

    with imagestore.open(root_c[0], index) as store:
        images, _ = containerd(store).inventory()
    saved = next(i for i in images if "docker.io/library/saved:v1" in i.names)
    assert saved.best is not None
    blob = next(x.digest for x in saved.best.layers if x.diff_id == layer)
    path = Layout(root_c[0]).blob(blob)
    path.unlink()
    found = run_cli(capsys, root_c[0], *args, "fsck", "--json", index=index)
    assert found.code == 1
    kinds = {(f["check"], f["path"]) for f in found.json()["findings"]}
    assert ("missing-blob", blob) in kinds
    del before[str(path.relative_to(root_c[0].parent))]
    assert tree(root_c[0].parent) == before  # fsck wrote nothing


def test_save_from_a_containerd_store_is_docker_loadable(root_c: tuple[Path, Path],
                                                         index: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    import tarfile

    out = tmp_path / "saved.tar"
    got = run_cli(capsys, root_c[0], "save", "-o", str(out), "multi:a", "oci-multi",
                  index=index)
    assert got.code == 0, got.err
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for member in tar.getmembers():
            if member.name.startswith("blobs/sha256/") and member.isfile():
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == member.name.rsplit("/", 1)[1]
    assert sorted(t for m in manifest for t in m["RepoTags"]) == ["multi:a", "oci-multi:latest"]
    legacy = run_cli(capsys, root_c[0], "save", "--format", "legacy", "-o",
                     str(tmp_path / "x.tar"), "multi:a", index=index)
    assert legacy.code == 1 and "oci" in legacy.err and not (tmp_path / "x.tar").exists()
    from engine import Engine

    engine = Engine(tmp_path / "engine-root").start()
    try:
        engine.docker("load", "-i", str(out))
        for name in ("multi:a", "oci-multi:latest"):
            loaded = json.loads(engine.docker("image", "inspect", name).stdout)[0]
            assert loaded["RootFS"]["Layers"] == \
                TRUTH["by_name"][name]["body"]["RootFS"]["Layers"]
    finally:
        engine.stop()


def test_k8s_names_are_the_cris(root_a: Path, index: Path) -> None:
    """In ``k8s.io`` an image's records (tag, ``repo@digest``, ``sha256:<config>``) are one
    image, named as ``crictl images`` names it; the config ID names it too. Judged against
    what the live containerd answered for root A (expected-A.json)."""
    from imagestore.moby.references import parse_normalized_named

    by_target: dict[str, list[dict[str, Any]]] = {}
    for record in expected_a()["namespaces"]["k8s.io"]["images"]:
        by_target.setdefault(record["target"]["digest"], []).append(record)
    with imagestore.open(root_a, index, namespace="k8s.io") as store:
        rows = {r["Id"]: r for r in containerd(store).images.rows(all=True)}
        assert set(rows) == set(by_target)
        for target, records in by_target.items():
            familiar = [parse_normalized_named(r["name"]).familiar_string()
                        for r in records if not r["name"].startswith("sha256:")]
            assert sorted(rows[target]["RepoTags"]) == sorted(n for n in familiar if "@" not in n)
            assert sorted(rows[target]["RepoDigests"]) == sorted(n for n in familiar if "@" in n)
            derived = next(r["derived"] for r in records if r.get("derived"))
            by_config = store.images.get(derived["config_digest"])
            assert by_config.id == target
            assert by_config.attrs["RootFS"]["Layers"] == derived["diff_ids"]
            assert by_config.attrs["RepoTags"] == rows[target]["RepoTags"]
