"""``imagestore.containerd.save``: containerd's images (a real Docker 29 + containerd 2.3
root, fixture C, and a containerd 1.6 root, fixture A) saved as archives that a real
``docker load`` takes, laid out as containerd's exporter lays them out, every blob checked on
the way; a missing or changed blob fails naming its digest and leaves no file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from containerd_daemon import ROOT_A, ROOT_C, unpack
from engine import Engine

from imagestore.containerd import content, images, meta
from imagestore.containerd.images import Image, Manifest
from imagestore.containerd.layout import Layout
from imagestore.containerd.save import (
    BlobUnusable,
    ChangedBlob,
    MissingBlob,
    SaveError,
    save,
    save_to_path,
)
from imagestore.errors import DigestMismatch, ImageStoreError

DATA = Path(__file__).parent / "data"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
AMD64 = content.Platform("linux", "amd64")


@pytest.fixture(scope="module")
def root_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixture C's containerd root; tests that damage it work on a copy."""
    return unpack(ROOT_C, tmp_path_factory.mktemp("rootC"), "ctd-root")


@pytest.fixture(scope="module")
def root_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(ROOT_A, tmp_path_factory.mktemp("rootA"), "containerd")


class Store:
    """One namespace of a root, resolved for the amd64 host the fixtures were made on."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.layout = Layout(root)
        ns = meta.read(self.layout.meta).namespaces[namespace]
        self.images = images.resolve(self.layout, ns, {}, AMD64)

    def image(self, name_or_id: str) -> Image:
        found = [i for i in self.images if name_or_id in i.names or i.id == name_or_id]
        assert len(found) == 1, name_or_id
        return found[0]

    def blob(self, digest: str) -> Path:
        return self.layout.blob(digest)


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            assert m.name not in out, f"{m.name} twice"
            out[m.name] = (m, f.read() if f else b"")
    return out


def doc(got: dict[str, tuple[tarfile.TarInfo, bytes]], name: str) -> Any:
    return json.loads(got[name][1])


def saved(store: Store, *images_: tuple[Image, list[str]], platform: str | None = None
          ) -> bytes:
    out = io.BytesIO()
    length = save(store.layout, list(images_), out, platform=platform)
    assert length == len(out.getvalue()) and length % 512 == 0
    return out.getvalue()


def blob_names(got: dict[str, tuple[tarfile.TarInfo, bytes]]) -> set[str]:
    return {"sha256:" + n.rsplit("/", 1)[1] for n, (m, _) in got.items()
            if m.isfile() and n.startswith("blobs/")}


def manifest_blobs(m: Manifest) -> set[str]:
    assert m.config is not None
    return {m.digest, m.config.digest, *(layer.digest for layer in m.layers)}


def diff_ids(m: Manifest) -> list[str]:
    return [str(layer.diff_id) for layer in m.layers]


def familiar(names: list[str]) -> list[str]:
    return [n.removeprefix("docker.io/library/") for n in names]


def check_archive(got: dict[str, tuple[tarfile.TarInfo, bytes]]) -> None:
    """What holds for every archive: containerd's member order, modes and stamps, and every
    blob hashing to its name."""
    names = list(got)
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"]
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    assert got["oci-layout"][1] == b'{"imageLayoutVersion":"1.0.0"}'
    for name, (info, body) in got.items():
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        if info.isdir():
            assert info.mode == 0o755, name
        elif name.startswith("blobs/sha256/"):
            assert info.mode == 0o444, name
            assert hashlib.sha256(body).hexdigest() == name.rsplit("/", 1)[1], name
        else:
            assert info.mode == (0o444 if name == "oci-layout" else 0o644), name
    index = doc(got, "index.json")
    assert (index["schemaVersion"], index["mediaType"]) == (2, OCI_INDEX)
    for entry in index["manifests"]:  # index.json names blobs the archive holds
        assert f"blobs/sha256/{entry['digest'][7:]}" in got
        assert entry["size"] == len(got[f"blobs/sha256/{entry['digest'][7:]}"][1])
    for item in doc(got, "manifest.json"):
        config = doc(got, item["Config"])
        assert len(config["rootfs"]["diff_ids"]) == len(item["Layers"])
        assert all(path in got for path in item["Layers"])


# -- what goes into the archive --------------------------------------------------------------


def test_a_single_manifest_image_with_all_its_names(root_a: Path) -> None:
    store = Store(root_a, "moby")
    app = store.image("docker.io/library/app:1")
    assert len(app.names) == 3 and app.best is not None and app.best.config is not None
    got = members(saved(store, (app, app.names)))
    check_archive(got)
    assert blob_names(got) == manifest_blobs(app.best)
    index = doc(got, "index.json")["manifests"]
    assert [e["annotations"] for e in index] == [
        {"io.containerd.image.name": n, "org.opencontainers.image.ref.name": n.rsplit(":", 1)[1]}
        for n in app.names]
    assert {(e["digest"], e["size"], e["mediaType"]) for e in index} == \
        {(app.id, app.target.size, app.target.media_type)}
    assert doc(got, "manifest.json") == [{
        "Config": "blobs/sha256/" + app.best.config.digest[7:],
        "RepoTags": ["app:1", "app:latest", "registry.example.com/team/app:1"],
        "Layers": ["blobs/sha256/" + layer.digest[7:] for layer in app.best.layers]}]
    # Go's encoding/json, compact, as containerd's exporter writes them.
    assert got["manifest.json"][1].startswith(b'[{"Config":"blobs/sha256/')
    assert got["index.json"][1].startswith(
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"mediaType":')


def test_compressed_layers_go_in_as_they_are_stored(root_c: Path) -> None:
    store = Store(root_c, "moby")
    multi = store.image("docker.io/library/multi:a")
    assert multi.best is not None and multi.best.layers
    assert all(layer.media_type.endswith("gzip") for layer in multi.best.layers)
    got = members(saved(store, (multi, multi.names)))
    check_archive(got)
    for layer in multi.best.layers:
        body = got[f"blobs/sha256/{layer.digest[7:]}"][1]
        assert body == store.blob(layer.digest).read_bytes()
        assert body[:2] == b"\x1f\x8b"  # still gzip
    item = doc(got, "manifest.json")[0]
    assert item["Layers"] == [f"blobs/sha256/{layer.digest[7:]}" for layer in multi.best.layers]
    assert item["RepoTags"] == ["multi:a", "multi:b"]


def test_an_index_keeps_every_present_platform_and_names_the_best(root_c: Path) -> None:
    store = Store(root_c, "moby")
    multi = store.image("docker.io/library/oci-multi:latest")
    assert multi.target.media_type == OCI_INDEX and multi.best is not None
    assert str(multi.best.platform) == "linux/amd64" and multi.best.config is not None
    got = members(saved(store, (multi, multi.names)))
    check_archive(got)
    assert blob_names(got) == {multi.id}.union(*(manifest_blobs(m) for m in multi.manifests))
    assert got[f"blobs/sha256/{multi.id[7:]}"][1] == store.blob(multi.id).read_bytes()
    [entry] = doc(got, "index.json")["manifests"]
    assert (entry["digest"], entry["mediaType"]) == (multi.id, OCI_INDEX)
    assert doc(got, "manifest.json") == [{
        "Config": "blobs/sha256/" + multi.best.config.digest[7:],
        "RepoTags": ["oci-multi:latest"],
        "Layers": ["blobs/sha256/" + layer.digest[7:] for layer in multi.best.layers]}]


def test_a_platform_saves_that_manifest_alone(root_c: Path) -> None:
    store = Store(root_c, "moby")
    multi = store.image("docker.io/library/oci-multi:latest")
    arm = next(m for m in multi.manifests if str(m.platform) == "linux/arm64")
    assert arm.config is not None
    got = members(saved(store, (multi, multi.names), platform="linux/arm64"))
    check_archive(got)
    assert blob_names(got) == manifest_blobs(arm)
    [entry] = doc(got, "index.json")["manifests"]
    assert entry == {"mediaType": arm.media_type, "digest": arm.digest, "size": arm.size,
                     "annotations": {"io.containerd.image.name":
                                     "docker.io/library/oci-multi:latest",
                                     "org.opencontainers.image.ref.name": "latest"},
                     "platform": {"architecture": "arm64", "os": "linux"}}
    assert doc(got, "manifest.json")[0]["Config"] == "blobs/sha256/" + arm.config.digest[7:]
    with pytest.raises(SaveError, match="no manifest for platform linux/s390x"):
        saved(store, (multi, []), platform="linux/s390x")
    single = store.image("docker.io/library/multi:a")
    with pytest.raises(SaveError, match="no manifest for platform linux/arm64"):
        saved(store, (single, []), platform="linux/arm64")


def test_missing_platforms_and_attestations(root_c: Path, root_a: Path) -> None:
    """Only blobs that are present go in (containerd's WithSkipMissing): a platform loaded
    alone leaves its siblings out; an attestation manifest that is there goes in."""
    store = Store(root_c, "moby")
    partial = store.image("docker.io/library/oci-partial:latest")
    missing = [m for m in partial.manifests if not m.available]
    assert len(missing) == 1 and partial.best is not None
    got = members(saved(store, (partial, partial.names)))
    check_archive(got)
    assert blob_names(got) == {partial.id} | manifest_blobs(partial.best)
    with pytest.raises(MissingBlob) as err:
        saved(store, (partial, []), platform="linux/arm64")
    assert err.value.digest == missing[0].digest

    store = Store(root_a, "moby")
    arch = store.image("localhost:5000/multi/arch:1.0")
    kinds = sorted(m.kind for m in arch.manifests)
    assert kinds == ["attestation", "image", "image"]
    got = members(saved(store, (arch, arch.names)))
    check_archive(got)
    assert blob_names(got) == {arch.id}.union(*(manifest_blobs(m) for m in arch.manifests))


def test_a_nested_index_and_several_images_share_blobs(root_a: Path) -> None:
    store = Store(root_a, "default")
    bundle = store.image("example.org/bundle:all")
    arch = store.image("localhost:5000/multi/arch:1.0")
    assert len(bundle.indexes) == 2
    got = members(saved(store, (bundle, bundle.names), (arch, arch.names)))
    check_archive(got)
    assert {i.digest for i in bundle.indexes} <= blob_names(got)
    # Both name the same amd64 manifest: one manifest.json item with both tags.
    assert doc(got, "manifest.json")[0]["RepoTags"] == ["example.org/bundle:all",
                                                         "localhost:5000/multi/arch:1.0"]
    assert len(doc(got, "index.json")["manifests"]) == 2


def test_only_tags_are_recorded_and_no_name_is_fine(root_a: Path, root_c: Path) -> None:
    """CRI's ``repo@digest`` and ``sha256:<config>`` records are not tags: docker load takes
    tags only. An image saved without a name loads untagged."""
    store = Store(root_a, "k8s.io")
    pause = store.image("registry.k8s.io/pause:3.9")
    assert len(pause.names) == 3
    got = members(saved(store, (pause, pause.names)))
    check_archive(got)
    assert doc(got, "manifest.json")[0]["RepoTags"] == ["registry.k8s.io/pause:3.9"]
    assert [e["annotations"]["io.containerd.image.name"]
            for e in doc(got, "index.json")["manifests"]] == ["registry.k8s.io/pause:3.9"]

    store = Store(root_c, "moby")
    dangling = next(i for i in store.images if i.id.startswith("sha256:15f155974a49"))
    assert dangling.names == []
    raw = saved(store, (dangling, []))
    got = members(raw)
    assert b'"RepoTags":null' in got["manifest.json"][1]
    [entry] = doc(got, "index.json")["manifests"]
    assert "annotations" not in entry
    # Familiar names, the same image twice, a bare name: one entry, tags joined, :latest.
    multi = store.image("docker.io/library/multi:a")
    got = members(saved(store, (multi, ["multi:a"]),
                        (multi, ["multi", "docker.io/library/multi:a"])))
    assert doc(got, "manifest.json")[0]["RepoTags"] == ["multi:a", "multi:latest"]
    with pytest.raises(SaveError, match="invalid reference"):
        saved(store, (multi, ["Not A Name"]))
    with pytest.raises(SaveError, match="no image to save"):
        saved(store)


def test_the_same_images_give_the_same_bytes(root_c: Path) -> None:
    store = Store(root_c, "moby")
    picks = [(i, i.names) for i in store.images if i.names]
    first = saved(store, *picks)
    assert saved(store, *picks) == first
    got = members(first)
    check_archive(got)
    assert len(doc(got, "manifest.json")) == len(picks)


def tree(top: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(top)): (p.lstat().st_mode, p.lstat().st_size,
                                      p.lstat().st_mtime_ns)
            for p in sorted(top.rglob("*"))}


def test_saving_to_a_path_writes_the_same_archive_and_touches_nothing(
        root_c: Path, tmp_path: Path) -> None:
    store = Store(root_c, "moby")
    multi = store.image("docker.io/library/oci-multi:latest")
    before = tree(root_c)
    target = tmp_path / "out" / "multi.tar"
    target.parent.mkdir()
    length = save_to_path(store.layout, [(multi, multi.names)], target)
    assert target.read_bytes() == saved(store, (multi, multi.names))
    assert length == target.stat().st_size
    assert os.listdir(target.parent) == ["multi.tar"]
    assert tree(root_c) == before


# -- damaged content stores ------------------------------------------------------------------


@pytest.fixture
def copy_c(root_c: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root_c, tmp_path / "ctd-root", symlinks=True))


def damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
        return
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("what", ["layer", "config"])
@pytest.mark.parametrize("how", ["missing", "changed"])
def test_a_damaged_layer_fails_naming_it_and_leaves_no_file(copy_c: Path, tmp_path: Path,
                                                            how: str, what: str) -> None:
    store = Store(copy_c, "moby")
    multi = store.image("docker.io/library/multi:a")
    assert multi.best is not None and multi.best.config is not None
    layer = multi.best.layers[-1].digest if what == "layer" else multi.best.config.digest
    damage(store.blob(layer), how)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.tar").write_bytes(b"an older archive")
    expected = MissingBlob if how == "missing" else ChangedBlob
    for target in (out / "multi.tar", out / "kept.tar"):
        with pytest.raises(expected) as err:
            save_to_path(store.layout, [(multi, multi.names)], target)
        assert err.value.digest == layer
        assert layer in str(err.value) and "multi:a" in str(err.value)
        assert isinstance(err.value, ImageStoreError) and isinstance(err.value, BlobUnusable)
        assert isinstance(err.value, DigestMismatch) == (how == "changed")
    assert sorted(os.listdir(out)) == ["kept.tar"]  # no archive, no temp file
    assert (out / "kept.tar").read_bytes() == b"an older archive"
    # To a stream: a missing blob is found before the first byte.
    stream = io.BytesIO()
    with pytest.raises(expected):
        save(store.layout, [(multi, multi.names)], stream)
    assert (stream.getvalue() == b"") == (how == "missing")


@pytest.mark.parametrize("what", ["index", "manifest"])
@pytest.mark.parametrize("how", ["missing", "changed"])
def test_a_damaged_index_or_manifest_fails_before_the_first_byte(copy_c: Path, how: str,
                                                                 what: str) -> None:
    store = Store(copy_c, "moby")
    multi = store.image("docker.io/library/oci-multi:latest")
    assert multi.best is not None
    digest = multi.id if what == "index" else multi.best.digest
    damage(store.blob(digest), how)
    stream = io.BytesIO()
    with pytest.raises(MissingBlob if how == "missing" else ChangedBlob) as err:
        save(store.layout, [(multi, multi.names)], stream)
    assert err.value.digest == digest and stream.getvalue() == b""


def test_a_damaged_blob_of_another_platform_is_left_out(copy_c: Path) -> None:
    """A platform whose layer is gone goes in as its manifest alone (WithSkipMissing); the
    best platform is still whole."""
    store = Store(copy_c, "moby")
    multi = store.image("docker.io/library/oci-multi:latest")
    arm = next(m for m in multi.manifests if str(m.platform) == "linux/arm64")
    assert arm.config is not None
    store.blob(arm.layers[0].digest).unlink()
    got = members(saved(Store(copy_c, "moby"), (multi, multi.names)))
    check_archive(got)
    assert arm.digest in blob_names(got)
    assert arm.config.digest not in blob_names(got)


# -- a real engine loads them ----------------------------------------------------------------


@pytest.fixture
def empty_engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "empty-data-root")
    yield e
    e.stop()


def test_docker_loads_what_was_saved(root_a: Path, root_c: Path, tmp_path: Path,
                                     empty_engine: Engine) -> None:
    """Docker 20.10 (what ``tests/engine.py`` runs) reads ``manifest.json``: each saved image
    loads with its config as ID, the saved image's diff IDs as its layers (gzip layers
    decompressed by the engine and checked) and the names given as its tags."""
    a, c = Store(root_a, "moby"), Store(root_c, "moby")
    app = a.image("docker.io/library/app:1")
    gz = c.image("docker.io/library/multi:a")
    multi = c.image("docker.io/library/oci-multi:latest")
    arch = a.image("localhost:5000/multi/arch:1.0")
    arm = next(m for m in multi.manifests if str(m.platform) == "linux/arm64")
    dangling = next(i for i in c.images if not i.names)
    cases: list[tuple[Store, Image, list[str], str | None, Manifest | None]] = [
        (a, app, app.names, None, app.best),  # single manifest, uncompressed, three names
        (c, gz, gz.names, None, gz.best),  # gzip layers, two names
        (c, multi, multi.names, None, multi.best),  # an OCI index: the host's platform
        (a, arch, arch.names, None, arch.best),  # an index with an attestation
        (c, multi, ["example.com/arm/oci-multi:arm64"], "linux/arm64", arm),
        (c, dangling, [], None, dangling.best),
    ]
    archives = []
    for n, (store, image, names, platform, _) in enumerate(cases):
        archives.append(tmp_path / f"{n}.tar")
        save_to_path(store.layout, [(image, names)], archives[-1], platform=platform)
    engine = empty_engine.start()
    for archive, (_, _, names, _, manifest) in zip(archives, cases, strict=True):
        assert manifest is not None and manifest.config is not None
        engine.docker("load", "-i", str(archive))
        seen = engine.inspect(manifest.config.digest)
        assert seen["Id"] == manifest.config.digest, archive
        assert seen["RootFS"]["Layers"] == diff_ids(manifest), archive
        assert sorted(seen["RepoTags"]) == sorted(familiar(names)), archive
        assert seen["Architecture"] == (manifest.platform.architecture
                                        if manifest.platform else "amd64"), archive
    assert "invalid" not in engine.log_text().lower()
