"""``docker save`` archives written from the disk: the legacy layout byte for byte what
Docker 20.10 wrote, the OCI layout self-consistent, both loaded and run by a real engine."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine import Engine, unpack_root_a

from imagestore.moby.archive import (
    LEGACY,
    OCI,
    SaveError,
    SaveImage,
    image_from_root,
    save_to,
    save_to_path,
    tags_in_root,
)
from imagestore.moby.gotime import go_time, parse_time
from imagestore.moby.references import parse_repositories
from imagestore.moby.save_go import CURRENT, go_string, tar_header
from imagestore.moby.tarsplit import LayerError

SAVED = Path(__file__).parent / "data" / "docker-20.10-vfs" / "saved"
BB_LAYER = "sha256:47e5f13bea911aadfc97d117e72c8e38764c4b4b97178f87e49a7de6ad5cdfbd"
BB_CACHE = "32bfb2bd796698a95768dc73f09edb35c87935df73e658af569ba00a677392fc"
# Shared layers everywhere: web:1.0 and web:prod differ only in their configs (same top layer,
# different v1 IDs: a symlink), bb's top layer is the bottom of tool and committed.
REFS = ["web:1.0", "web:prod", "api:1.0", "bb:1.35", "tool:1.0", "committed:1"]
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_root_a(tmp_path_factory.mktemp("rootA"))


@pytest.fixture(scope="module")
def root(pristine: Path) -> Path:
    return pristine / "image" / "vfs"


@pytest.fixture(scope="module")
def ids(root: Path) -> dict[str, str]:
    refs, _ = parse_repositories((root / "repositories.json").read_bytes())
    return {r.ref: r.image_id for r in refs}


def images(root: Path, ids: dict[str, str], refs: list[str] = REFS) -> list[SaveImage]:
    out = []
    for ref in refs:
        tags = ["api:1.0", "registry.example.com/team/api:1.0"] if ref == "api:1.0" else [ref]
        out.append(image_from_root(root, ids[ref], tags))
    return out


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name] = (m, f.read() if f else b"")
    return out


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def real_archive(name: str) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    return members((SAVED / name).read_bytes())


def saved(images: list[SaveImage], root: Path, layout: str) -> bytes:
    out = io.BytesIO()
    n = save_to(images, out, root, layout=layout, now=NOW)
    assert n == len(out.getvalue())
    return out.getvalue()


# -- the legacy layout, against Docker 20.10 -----------------------------------------------


def test_legacy_archives_are_byte_identical_to_docker_20_10(root: Path) -> None:
    for archive in sorted(SAVED.glob("*.tar")):
        real = archive.read_bytes()
        item = json.loads(members(real)["manifest.json"][1])[0]
        image = image_from_root(root, "sha256:" + item["Config"][:-5], item["RepoTags"])
        assert saved([image], root, LEGACY) == real, archive.name


def test_legacy_archive_of_many_images(root: Path, ids: dict[str, str]) -> None:
    imgs = images(root, ids)
    got = members(saved(imgs, root, LEGACY))
    manifest = json.loads(got["manifest.json"][1])
    assert [m["RepoTags"] for m in manifest] == [
        ["web:1.0"], ["web:prod"], ["api:1.0", "registry.example.com/team/api:1.0"],
        ["bb:1.35"], ["tool:1.0"], ["committed:1"]]
    assert [m.get("Parent") for m in manifest] == [None] * 5 + [ids["bb:1.35"]]
    for name, item in (("web_1.0.tar", manifest[0]), ("web_prod.tar", manifest[1]),
                       ("registry.example.com_team_api_1.0.tar", manifest[2])):
        real = json.loads(real_archive(name)["manifest.json"][1])[0]
        assert (item["Config"], item["Layers"]) == (real["Config"], real["Layers"])  # v1 IDs
        for layer in real["Layers"]:
            assert got[layer.replace("layer.tar", "json")][1] == \
                real_archive(name)[layer.replace("layer.tar", "json")][1]
    regular: list[str] = []
    links: set[str] = set()
    for img, item in zip(imgs, manifest, strict=True):
        assert got[item["Config"]][1] == img.config
        created = got[item["Config"]][0].mtime
        for path, (diff, _) in zip(item["Layers"], img.layers, strict=True):
            info, data = got[path]
            if info.issym():
                links.add(path)
                assert info.linkname.startswith("../") and info.mtime == NOW
                info, data = got[os.path.normpath(os.path.join(os.path.dirname(path),
                                                               info.linkname))]
            elif path not in regular:
                regular.append(path)
                assert (info.mtime, info.mode) == (created, 0o100644)  # the first image's
            assert sha(data) == diff
            assert got[path.replace("layer.tar", "VERSION")][1] == b"1.0"
    distinct = {d for img in imgs for d, _ in img.layers}
    assert len(regular) == len(distinct)  # every layer's bytes once
    assert len(links) == 2  # web:prod's top (web:1.0's bytes); bb's top below tool, committed
    repos = json.loads(got["repositories"][1])
    assert repos["web"] == {"1.0": manifest[0]["Layers"][-1][:-10],
                            "prod": manifest[1]["Layers"][-1][:-10]}
    assert repos["registry.example.com/team/api"] == repos["api"]


def test_legacy_headers_are_go_s(root: Path, ids: dict[str, str]) -> None:
    got = members(saved(images(root, ids, ["web:prod", "web:1.0"]), root, LEGACY))
    names = list(got)
    assert names == sorted(names, key=lambda n: n.split("/"))
    for info, _ in got.values():
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "root", "root")
        kind = stat.S_IFDIR if info.isdir() else stat.S_IFLNK if info.issym() else stat.S_IFREG
        assert stat.S_IFMT(info.mode) == kind
    assert got["manifest.json"][0].mtime == got["repositories"][0].mtime == 0


# -- the OCI layout ----------------------------------------------------------------------


def test_oci_archive(root: Path, ids: dict[str, str]) -> None:
    imgs = images(root, ids)
    data = saved(imgs, root, OCI)
    got = members(data)
    assert got["oci-layout"][1] == b'{"imageLayoutVersion": "1.0.0"}'
    for name, (info, body) in got.items():
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
        assert info.mode == (0o755 if info.isdir() else 0o644)
        if name.startswith("blobs/sha256/") and info.isfile():
            assert sha(body) == "sha256:" + name.rsplit("/", 1)[1]  # content-addressed
    assert list(got)[:2] == ["blobs", "blobs/sha256"]
    assert list(got)[-4:] == ["index.json", "manifest.json", "oci-layout", "repositories"]
    assert got["blobs/sha256"][0].mtime == 0
    index = json.loads(got["index.json"][1])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    notes = [d["annotations"] for d in index["manifests"]]
    assert notes[2:4] == [
        {"io.containerd.image.name": "docker.io/library/api:1.0",
         "org.opencontainers.image.ref.name": "1.0"},
        {"io.containerd.image.name": "registry.example.com/team/api:1.0",
         "org.opencontainers.image.ref.name": "1.0"}]
    assert len(index["manifests"]) == 7
    legacy = json.loads(got["manifest.json"][1])
    descriptors = iter(index["manifests"])
    for img, item in zip(imgs, legacy, strict=True):
        for _ in item["RepoTags"]:
            desc = next(descriptors)
            blob = got["blobs/sha256/" + desc["digest"][7:]]
            assert (blob[0].mtime, desc["size"], sha(blob[1])) == (0, len(blob[1]), desc["digest"])
            m = json.loads(blob[1])
            assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
            assert m["config"] == {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": img.image_id, "size": len(img.config)}
            assert [(x["mediaType"], x["digest"]) for x in m["layers"]] == \
                [("application/vnd.oci.image.layer.v1.tar", d) for d, _ in img.layers]
            assert [x["size"] for x in m["layers"]] == \
                [len(got[f"blobs/sha256/{d[7:]}"][1]) for d, _ in img.layers]
        assert item["Config"] == "blobs/sha256/" + img.image_id[7:]
        assert item["Layers"] == ["blobs/sha256/" + d[7:] for d, _ in img.layers]
        config_info = got[item["Config"]][0]
        assert config_info.mtime == json_created(img.config)
    assert got["blobs"][0].mtime == json_created(imgs[-1].config)
    repos = json.loads(got["repositories"][1])
    assert repos["web"]["prod"] == imgs[1].layers[-1][0][7:]
    # the layers are the very bytes Docker saved
    for name in ("web_1.0.tar", "registry.example.com_team_api_1.0.tar"):
        real = real_archive(name)
        item = json.loads(real["manifest.json"][1])[0]
        config = json.loads(real[item["Config"]][1])
        for path, diff in zip(item["Layers"], config["rootfs"]["diff_ids"], strict=True):
            assert got["blobs/sha256/" + diff[7:]][1] == real[path][1]
    # each layer's v1 config, as the engine leaves them: unreferenced blobs chained by parent
    v1 = [json.loads(body) for name, (info, body) in got.items() if name.startswith("blobs/")
          and info.isfile() and body.startswith(b'{"id":')]
    assert len(v1) == 11 and all(len(c["id"]) == 64 for c in v1)
    assert {c["parent"] for c in v1 if "parent" in c} <= {c["id"] for c in v1}


def json_created(config: bytes) -> int:
    return int(parse_time(json.loads(config)["created"]).timestamp())


def test_go_encoding_rules() -> None:
    assert go_string('a<b>&"\\\n\x01\x08\u2028') == \
        '"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u0001\\b\\u2028"'
    assert go_string("\x08", LEGACY) == '"\\u0008"'
    assert go_time("2026-11-30T00:04:46.153595860Z") == "2026-11-30T00:04:46.15359586Z"
    assert go_time("2020-01-01T10:00:00.000+02:00") == "2020-01-01T10:00:00+02:00"
    assert go_time("2020-01-01T10:00:00-00:00") == "2020-01-01T10:00:00Z"
    assert CURRENT != LEGACY


def test_large_and_long_members_get_go_s_headers() -> None:
    """Over 8 GiB Go adds a PAX record; a name over 100 bytes goes into the USTAR prefix."""
    name = "blobs/sha256/" + "a" * 64
    raw = tar_header(name, 9 << 30, 5, legacy=False)
    assert len(raw) == 3 * 512
    with tarfile.open(fileobj=io.BytesIO(raw + b"\0" * 1024)) as tar:
        info = tar.next()
    assert info is not None and (info.name, info.size, info.mtime) == (name, 9 << 30, 5)
    long = "d" * 60 + "/" + "f" * 80
    with tarfile.open(fileobj=io.BytesIO(tar_header(long, 1, 7, legacy=True) + b"x"
                                         + b"\0" * 1535)) as tar:
        info = tar.next()
    assert info is not None and (info.name, info.mode) == (long, 0o100644)


# -- writing to a path ---------------------------------------------------------------------


@pytest.fixture
def data_root(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root-A"
    for part in ("image", "vfs/dir"):
        shutil.copytree(pristine / part, dst / part, symlinks=True)
    return dst


def test_save_to_path(root: Path, ids: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    imgs = images(root, ids, ["tool:1.0"])
    n = save_to_path(imgs, out / "tool.tar", root, layout=LEGACY, now=NOW)
    assert os.listdir(out) == ["tool.tar"]
    assert stat.S_IMODE((out / "tool.tar").stat().st_mode) == 0o600  # as docker save -o
    assert (out / "tool.tar").read_bytes() == saved(imgs, root, LEGACY)
    assert n == (out / "tool.tar").stat().st_size


def test_a_failed_save_leaves_nothing(data_root: Path, ids: dict[str, str],
                                      tmp_path: Path) -> None:
    root = data_root / "image" / "vfs"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.tar").write_bytes(b"old")
    busybox = data_root / "vfs" / "dir" / BB_CACHE / "bin" / "busybox"
    raw = bytearray(busybox.read_bytes())
    raw[12345] ^= 0xFF
    busybox.write_bytes(raw)
    for layout in (OCI, LEGACY):
        for target in ("new.tar", "keep.tar"):
            with pytest.raises(LayerError) as info:
                save_to_path(images(root, ids, ["web:1.0", "tool:1.0"]), out / target, root,
                             layout=layout)
            assert (info.value.chain_id, info.value.path) == (BB_LAYER, "./bin/busybox")
            assert sorted(os.listdir(out)) == ["keep.tar"]
            assert (out / "keep.tar").read_bytes() == b"old"
    (root / "layerdb" / "sha256" / BB_LAYER[7:] / "tar-split.json.gz").unlink()
    stream = io.BytesIO()
    with pytest.raises(LayerError, match="tar-split is missing"):
        save_to(images(root, ids, ["tool:1.0"]), stream, root)
    assert stream.getvalue() == b""  # every tar-split is read before the first byte
    with pytest.raises(SaveError, match="cannot write"):
        save_to_path(images(root, ids, ["web:1.0"]), tmp_path / "nowhere" / "x.tar", root)


def test_what_cannot_be_saved(root: Path, ids: dict[str, str]) -> None:
    img = image_from_root(root, ids["web:1.0"], ["web:1.0"])
    for bad, match in ((SaveImage(img.image_id, img.config, [], []), "empty export"),
                       (SaveImage(img.image_id, img.config + b" ", [], img.layers), "hash"),
                       (SaveImage(img.image_id, img.config, ["UPPER:1"], img.layers),
                        "invalid reference")):
        with pytest.raises(SaveError, match=match):
            save_to([bad], io.BytesIO(), root)
    with pytest.raises(SaveError, match="layout"):
        save_to([img], io.BytesIO(), root, layout="zip")
    assert sorted(tags_in_root(root, ids["api:1.0"])) == \
        ["api:1.0", "registry.example.com/team/api:1.0"]
    twice = members(saved([img, image_from_root(root, ids["web:1.0"], ["web:latest"])], root,
                          OCI))
    assert json.loads(twice["manifest.json"][1])[0]["RepoTags"] == ["web:1.0", "web:latest"]


# -- a real engine loads and runs them -------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "empty-data-root")
    yield e
    e.stop()


def test_docker_loads_and_runs_both_layouts(engine: Engine, root: Path, ids: dict[str, str],
                                            pristine: Path, tmp_path: Path) -> None:
    imgs = images(root, ids)
    archives = {}
    for layout in (OCI, LEGACY):
        archives[layout] = tmp_path / f"{layout}.tar"
        save_to_path(imgs, archives[layout], root, layout=layout)
    listing = (pristine / "vfs" / "dir" / "0fa6bf694ded060ccfb0e09c402349f2541662508b3dc3e883e45"
               "632b2ee01bf" / "data" / "listing.txt").read_text()
    engine.start()
    all_tags = [t for img in imgs for t in img.repo_tags]
    for layout, archive in archives.items():
        loaded = engine.docker("load", "-i", str(archive)).stdout
        assert loaded.count("Loaded image: ") == len(all_tags), (layout, loaded)
        for img in imgs:
            seen: dict[str, Any] = engine.inspect(img.repo_tags[0])
            assert seen["Id"] == img.image_id, layout
            assert sorted(seen["RepoTags"]) == sorted(img.repo_tags), layout
        run = engine.docker("run", "--rm", "--network", "none", "tool:1.0")
        assert run.stdout == listing, layout
        run = engine.docker("run", "--rm", "--network", "none", "committed:1")
        assert run.stdout.strip() == "committed", layout
        engine.docker("rmi", *all_tags)
        assert engine.images("-a") == []
