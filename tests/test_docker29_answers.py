"""``service.docker29`` against what a real Docker Engine 29.7.2 answered (API 1.55) on
fixture C: every ``/images/json`` variant, and inspect (with and without ``manifests=1``),
inspect by name and short ID, and history of all 17 images; then the filters the truth does
not exercise, checked against the engine's rules applied to the truth's own rows."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from containerd_daemon import ROOT_C
from ctd import truth_c

from imagestore.containerd import images as ctd_images
from imagestore.containerd import layout, meta, snapshotter
from imagestore.containerd.content import Platform
from imagestore.errors import ImageNotFound, ImageStoreError
from imagestore.moby.gotime import unix_ns
from imagestore.service import docker29

ARCHIVE = ROOT_C
TRUTH: dict[str, Any] = truth_c()
HOST = Platform("linux", "amd64")  # the engine that answered ran on x86_64
IDS = sorted(TRUTH["by_id"])
VARIANTS = sorted(TRUTH["images_json"])


@dataclass
class Store:
    images: list[ctd_images.Image]
    containers: list[docker29.ContainerRef]
    namespace: meta.Namespace

    def by_id(self, image_id: str) -> ctd_images.Image:
        return next(i for i in self.images if i.id == image_id)

    def rows(self, **kwargs: Any) -> list[dict[str, Any]]:
        return docker29.list_rows(self.images, self.containers, host=HOST, **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    dest = tmp_path_factory.mktemp("fixture-c")
    subprocess.run(["tar", "-xJf", str(ARCHIVE), "-C", str(dest)], check=True, timeout=120)
    lay = layout.Layout(dest / "ctd-root")
    ns = meta.read(lay.meta, {"moby"}).namespaces["moby"]
    snaps = {name: snapshotter.read(lay.snapshotter_db(name))[0]
             for name in lay.snapshotters()}
    images = ctd_images.resolve(lay, ns, snaps, HOST)
    yield Store(images, docker29.docker_containers(dest / "docker-root"), ns)


def _query(url: str) -> dict[str, Any]:
    q = parse_qs(urlparse(url).query)
    return {"all": q.get("all") == ["1"], "manifests": q.get("manifests") == ["1"],
            "shared_size": q.get("shared-size") == ["1"],
            "filters": json.loads(q["filters"][0]) if "filters" in q else None}


def _same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Exactly the engine's rows in its order, except that rows of one ``Created`` second
    may come in any order (the engine sorts a map's values with an unstable sort)."""
    assert [r["Created"] for r in got] == [r["Created"] for r in want]

    def groups(rows: list[dict[str, Any]]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for row in rows:
            out.setdefault(row["Created"], []).append(json.dumps(row, sort_keys=True))
        return {k: sorted(v) for k, v in out.items()}

    by_id = {r["Id"]: r for r in want}
    for row in got:  # a readable diff first
        assert row == by_id.get(row["Id"]), row["Id"]
    assert groups(got) == groups(want)


def test_fixture_holds_what_the_truth_lists(store: Store) -> None:
    assert sorted(i.id for i in store.images) == IDS
    assert [c.id for c in store.containers] == [c["Id"] for c in TRUTH["containers_json_all"]]


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_json(store: Store, variant: str) -> None:
    case = TRUTH["images_json"][variant]
    _same_rows(store.rows(**_query(case["query"])), case["body"])


def test_images_read_back_without_index_entries(store: Store) -> None:
    """Images rebuilt from the index keep no index entries: their manifests stand in, and
    fixture C's answers stay the same."""
    bare = [dataclasses.replace(i, index_entries={}) for i in store.images]
    case = TRUTH["images_json"]["all_manifests"]
    _same_rows(docker29.list_rows(bare, store.containers, all=True, manifests=True,
                                  host=HOST), case["body"])
    for image in bare:
        assert docker29.inspect(image, bare, store.containers, manifests=True, host=HOST) \
            == TRUTH["by_id"][image.id]["inspect_manifests"]["body"]


def test_images_json_filters_as_query_text(store: Store) -> None:
    case = TRUTH["images_json"]["all_dangling_true"]
    text = parse_qs(urlparse(case["query"]).query)["filters"][0]
    _same_rows(store.rows(all=True, filters=text), case["body"])
    # the engine's map form and docker-py's bool give the same
    _same_rows(store.rows(all=True, filters={"dangling": {"true": True}}), case["body"])
    _same_rows(store.rows(all=True, filters={"dangling": True}), case["body"])


@pytest.mark.parametrize("image_id", IDS)
def test_inspect(store: Store, image_id: str) -> None:
    image = store.by_id(image_id)
    truth = TRUTH["by_id"][image_id]
    assert docker29.inspect(image, store.images, store.containers, host=HOST) \
        == truth["inspect"]["body"]
    assert docker29.inspect(image, store.images, store.containers, manifests=True,
                            host=HOST) == truth["inspect_manifests"]["body"]


@pytest.mark.parametrize("image_id", IDS)
def test_history(store: Store, image_id: str) -> None:
    assert docker29.history(store.by_id(image_id), store.images, host=HOST) \
        == TRUTH["by_id"][image_id]["history"]["body"]


@pytest.mark.parametrize("ref", sorted(TRUTH["by_name"]) + sorted(TRUTH["by_short_id"]))
def test_inspect_by_reference(store: Store, ref: str) -> None:
    image, record = docker29.resolve(ref, store.images)
    got = docker29.inspect(image, store.images, store.containers, name=record.name, host=HOST)
    if ref in TRUTH["by_name"]:
        assert got == TRUTH["by_name"][ref]["body"]
    else:
        assert got["Id"] == TRUTH["by_short_id"][ref]["Id"]


def test_unknown_references(store: Store) -> None:
    with pytest.raises(ImageNotFound, match=r"^No such image: nope:latest$"):
        docker29.resolve("nope", store.images)
    with pytest.raises(ImageNotFound, match=r"^No such image: imp-a@sha256:2d26"):
        docker29.resolve("imp-a@sha256:2d2604bf92ea320b00955199b50f7e893eedc882031acf100d6f391"
                         "ff80f6360", store.images)
    with pytest.raises(ImageStoreError, match="must be lowercase"):
        docker29.resolve("Bad:Name", store.images)


def test_containers_count_by_manifest(store: Store) -> None:
    """The engine counts containers by the platform manifest they run: without the data
    root's containers nothing is in use; a container known only by its image ID counts
    against the manifest the engine would pick."""
    user = "sha256:2d2604bf92ea320b00955199b50f7e893eedc882031acf100d6f391ff80f6360"
    rows = {r["Id"]: r for r in docker29.list_rows(store.images, (), all=True, host=HOST)}
    assert rows[user]["Containers"] == 0
    by_image_id = [docker29.ContainerRef("c" * 64, user)]
    rows = {r["Id"]: r for r in docker29.list_rows(store.images, by_image_id, all=True,
                                                   manifests=True, host=HOST)}
    assert rows[user]["Containers"] == 1
    assert rows[user]["Manifests"][0]["ImageData"]["Containers"] == ["c" * 64]
    assert sum(r["Containers"] for r in rows.values()) == 1


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["Id"] for r in rows)


def test_reference_filter_keeps_matching_names_only(store: Store) -> None:
    """``reference`` filters records: the row comes from the names that match, its
    ``RepoDigests`` from the last of them."""
    imp_a = "sha256:8aa4b98c14871c0681efc9f186188b0d330176fd9cc3d6fe86aab0305b44e909"
    rows = store.rows(filters={"reference": ["imp-a"]})
    assert [(r["Id"], r["RepoTags"], r["RepoDigests"]) for r in rows] == [
        (imp_a, ["imp-a:v1"], [f"imp-a@{imp_a}"])]
    rows = store.rows(filters={"reference": ["*/ns/*"]})
    assert [(r["Id"], r["RepoTags"]) for r in rows] == [(imp_a, ["example.com/ns/imp-a:v1"])]
    rows = store.rows(filters={"reference": ["docker.io/library/multi"]})
    assert [r["RepoTags"] for r in rows] == [["multi:a", "multi:b"]]
    assert store.rows(filters={"reference": ["[bad"]}) == []
    # moby-dangling@… records are names too
    assert len(store.rows(all=True, filters={"reference": ["moby-dangling"]})) == 10


def test_label_filters(store: Store) -> None:
    everything = TRUTH["images_json"]["all"]["body"]
    named = TRUTH["images_json"]["default"]["body"]
    assert _ids(store.rows(all=True, filters={"label": ["multi=yes"]})) == \
        _ids([r for r in everything if r["Labels"].get("multi") == "yes"])
    assert _ids(store.rows(filters={"label": ["stage"]})) == \
        _ids([r for r in named if "stage" in r["Labels"]])
    unstaged = _ids([r for r in named if r["Labels"].get("stage") != "b"])
    assert _ids(store.rows(filters={"label!": ["stage=b"]})) == unstaged
    assert _ids(store.rows(filters={"label": ["stage!=b"]})) == unstaged
    assert store.rows(filters={"label": ["stage=b", "multi=no"]}) == []


def test_before_and_since(store: Store) -> None:
    everything = TRUTH["images_json"]["all"]["body"]
    newest = max(everything, key=lambda r: r["Created"])
    assert _ids(store.rows(all=True, filters={"before": ["committed:v1"]})) == \
        _ids([r for r in everything if r["Created"] < newest["Created"]])
    assert _ids(store.rows(all=True, filters={"since": ["oci-multi"]})) == \
        _ids([r for r in everything if r["Created"] > 1700000000])
    assert store.rows(all=True, filters={"before": ["oci-multi:latest"]}) == []
    assert _ids(store.rows(all=True, filters={"since": [newest["Id"][7:19]]})) == []


def test_until_counts_record_creation(store: Store) -> None:
    moment = "2026-12-08T00:12:05Z"
    want = sorted({r.target.digest for r in store.namespace.images.values()
                   if (unix_ns(r.created) or 0) < unix_ns(moment)})  # type: ignore[operator]
    assert 0 < len(want) < len(IDS)
    assert _ids(store.rows(all=True, filters={"until": [moment]})) == want
    now = datetime(2026, 12, 8, 1, 12, 5, tzinfo=timezone.utc)
    assert _ids(store.rows(all=True, filters={"until": ["1h"]}, now=now)) == want
    later = now + timedelta(days=1)
    assert len(store.rows(all=True, filters={"until": ["1h"]}, now=later)) == len(IDS)


@pytest.mark.parametrize(("filters", "message"), [
    ({"foo": ["x"]}, "invalid filter 'foo'"),
    ({"dangling": ["maybe"]}, "invalid filter 'dangling=[maybe]'"),
    ({"dangling": ["true", "false"]}, "invalid filter 'dangling=[false true]'"),
    ({"before": ["nope:1"]}, "No such image: nope:1"),
    ({"since": ["Nope"]}, "invalid reference format: repository name (library/Nope) must be "
                          "lowercase"),
    ({"label": ["k=" + "v" * 4096]}, "label key and value length (4097 bytes) greater than "
                                     "maximum size (4096 bytes), key: k: invalid argument"),
    ('{"dangling": true', "invalid filter"),
])
def test_invalid_filters(store: Store, filters: Any, message: str) -> None:
    with pytest.raises(ImageStoreError) as caught:
        store.rows(filters=filters)
    assert str(caught.value) == message


def test_until_refuses_what_is_no_time(store: Store) -> None:
    with pytest.raises(ImageStoreError, match=r"^invalid value for 'until' filter: "):
        store.rows(filters={"until": ["yesterday"]})


# -- a hand-made multi-platform image: what fixture C does not hold ------------------------
_INDEX = "application/vnd.oci.image.index.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def _platform_manifest(n: int, config: dict[str, Any], layer_type: str, *,
                       unpacked: int | None = None) -> ctd_images.Manifest:
    raw = json.dumps(config).encode()
    diff_ids = config["rootfs"]["diff_ids"]
    chains = ctd_images.chain_ids(diff_ids)
    layers = [ctd_images.Layer(_digest(n * 10 + i), layer_type, 1000 + i, True, d, chains[i],
                               unpacked) for i, d in enumerate(diff_ids)]
    return ctd_images.Manifest(_digest(n), _MANIFEST, 500 + n, None, {}, "image", True,
                               meta.Descriptor(_digest(n * 100), _CONFIG, len(raw)), raw, True,
                               layers)


def _multi() -> tuple[ctd_images.Image, list[dict[str, Any]]]:
    """An index of arm64, then amd64/v2 given without a platform (its config says it), then
    a buildkit attestation for the amd64 manifest, then an arm/v7 entry whose blob is
    missing."""
    rootfs = {"type": "layers", "diff_ids": [_digest(900)]}
    arm64 = _platform_manifest(1, {"architecture": "arm64", "os": "linux", "variant": "v8",
                                   "rootfs": rootfs,
                                   "created": "2024-01-01T00:00:00Z"},
                               "application/vnd.oci.image.layer.v1.tar+gzip")
    amd64 = _platform_manifest(2, {"architecture": "amd64", "os": "linux", "variant": "v2",
                                   "created": "2024-02-02T00:00:00.5+01:00",
                                   "config": {"Labels": {"k": "v"}},
                                   "rootfs": {"type": "layers", "diff_ids": [_digest(901)]}},
                               "application/vnd.docker.image.rootfs.diff.tar.gzip",
                               unpacked=4096)
    attestation = _platform_manifest(3, {"architecture": "unknown", "os": "unknown",
                                         "rootfs": {"type": "layers", "diff_ids": []}},
                                     "application/vnd.in-toto+json")
    missing = ctd_images.Manifest(_digest(4), _MANIFEST, 504, None, {}, "image", False)
    entries: list[dict[str, Any]] = [
        {"mediaType": _MANIFEST, "digest": arm64.digest, "size": arm64.size,
         "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": _MANIFEST, "digest": amd64.digest, "size": amd64.size},
        {"mediaType": _MANIFEST, "digest": attestation.digest, "size": attestation.size,
         "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.digest": amd64.digest,
                         "vnd.docker.reference.type": "attestation-manifest"}},
        {"mediaType": _MANIFEST, "digest": missing.digest, "size": missing.size,
         "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}}]
    target = meta.Descriptor(_digest(7), _INDEX, 800)
    record = meta.ImageRecord("docker.io/library/multi:1", target, "2024-03-03T00:00:00Z",
                              "2024-03-03T00:00:01.25Z", {})
    image = ctd_images.Image(target.digest, target, [record],
                             [arm64, amd64, attestation, missing], [target], None,
                             index_entries={target.digest: entries})
    return image, entries


def test_multi_platform_image_by_the_engines_rules() -> None:
    image, entries = _multi()
    host = Platform("linux", "amd64", "v3")  # runs amd64/v2, preferred over arm64
    [row] = docker29.list_rows([image], (), manifests=True, shared_size=True, host=host)
    kinds = [(m["Kind"], m["Available"]) for m in row["Manifests"]]
    assert kinds == [("image", True), ("image", True), ("attestation", True),
                     ("image", False)]
    arm64, amd64, attestation, missing = row["Manifests"]
    assert amd64["Descriptor"] == entries[1]  # no platform given: none written back
    assert amd64["ImageData"]["Platform"] == {"architecture": "amd64", "os": "linux",
                                              "variant": "v2"}
    assert amd64["ImageData"]["Size"]["Unpacked"] == 4096
    assert arm64["ImageData"]["Size"]["Unpacked"] == 0  # not unpacked here
    assert arm64["ImageData"]["Platform"] == entries[0]["platform"]  # the index's word
    assert attestation["AttestationData"] == {"For": _digest(2)}
    assert "ImageData" not in attestation
    assert missing["Size"] == {"Content": 0, "Total": 0}
    assert missing["ImageData"]["Platform"] == entries[3]["platform"]
    contents = [m["Size"]["Content"] for m in row["Manifests"]]
    assert row["Size"] == sum(contents) + 4096
    assert row["Created"] == 1706828400  # the amd64 config: the host's best
    assert row["Labels"] == {"k": "v"}
    assert row["SharedSize"] == 0  # nothing else listed
    assert row["RepoDigests"] == [f"multi@{image.id}"]
    got = docker29.inspect(image, [image], (), host=host)
    assert (got["Architecture"], got["Variant"], got["Created"]) == \
        ("amd64", "v2", "2024-02-02T00:00:00.5+01:00")
    assert got["Metadata"] == {"LastTagTime": "2024-03-03T00:00:01.25Z"}
    # the index, the preferred entry (platform-less ones sort last), its config and layers
    amd = image.manifests[1]
    assert amd.config is not None
    arm = image.manifests[0]
    assert arm.config is not None
    assert got["Size"] == 800 + arm.size + arm.config.size + arm.layers[0].size
    on_arm = docker29.inspect(image, [image], (), host=Platform("linux", "arm64"))
    assert on_arm["Architecture"] == "arm64"
    assert docker29.list_rows([image], (), host=Platform("linux", "arm", "v7"))[0][
        "Created"] == 0  # its best is the missing arm/v7 manifest: no config to read
