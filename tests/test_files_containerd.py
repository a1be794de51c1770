"""File lists of a containerd store, read from the layer blobs (``containerd.layerfiles``):
every layer of roots A and C against Python's ``tarfile`` on the decompressed blob, CRCs
against the pure-Python CRC-64, a zstd blob, hostile blobs, lists shared with a classic
store of the same index, and ``files``/``which``/``diff``/``waste`` on containerd images
against a merge of the layers' tar listings made here."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cli_helpers import run_cli
from conftest import config, make_layers
from ctd import unpack_a, unpack_c

import imagestore
from imagestore.containerd.layerfiles import read_blob_files
from imagestore.containerd.layout import Layout
from imagestore.moby.save_go import crc64_python

TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
         tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char",
         tarfile.BLKTYPE: "block", tarfile.DIRTYPE: "dir", tarfile.FIFOTYPE: "fifo"}
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"


# -- fixtures and an independent reading of the blobs ---------------------------------------------
@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ctd")
    return {"A": unpack_a(base / "a"), "C": unpack_c(base / "c")[0]}


def _blob(layout: Layout, digest: str) -> bytes:
    return layout.blob(digest).read_bytes()


def _plain(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def layers_of(layout: Layout) -> dict[str, tuple[str, str]]:
    """Every layer blob of every manifest in the content store: digest -> (media type,
    diff ID from the manifest's config), found by reading the blobs here."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted((layout.blobs / "sha256").iterdir()):
        try:
            doc = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(doc, dict) or "layers" not in doc or "config" not in doc:
            continue
        try:
            cfg = json.loads(_blob(layout, doc["config"]["digest"]))
        except OSError:
            continue
        diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
        for layer, diff_id in zip(doc["layers"], diff_ids, strict=False):
            if layer["mediaType"].endswith(("tar", "gzip", "zstd")) \
                    and layout.blob(layer["digest"]).is_file():
                out[layer["digest"]] = (layer["mediaType"], diff_id)
    return out


def tar_listing(data: bytes) -> dict[str, dict[str, Any]]:
    """What Python's tarfile lists of an uncompressed layer: path -> fields (the last of a
    path given twice wins), with the pure-Python CRC-64 of each file's bytes."""
    out: dict[str, dict[str, Any]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            path = os.path.normpath(info.name).lstrip("/") if info.name not in (".", "./") \
                else ""
            if not path or path == ".":
                continue
            kind = TYPES[info.type]
            crc = None
            if kind == "file" and info.size:
                handle = tar.extractfile(info)
                assert handle is not None
                crc = crc64_python(handle.read()).to_bytes(8, "big").hex()
            out.pop(path, None)
            out[path] = {"type": kind, "size": info.size if kind == "file" else 0,
                         "mode": info.mode & 0o7777, "uid": info.uid, "gid": info.gid,
                         "mtime": int(info.mtime),
                         "link": (os.path.normpath(info.linkname) if kind == "hardlink"
                                  else info.linkname if kind == "symlink" else None),
                         "crc64": crc}
    return out


def _fields(entry: Any) -> dict[str, Any]:
    return {"type": entry.type, "size": entry.size, "mode": entry.mode, "uid": entry.uid,
            "gid": entry.gid, "mtime": entry.mtime, "link": entry.link, "crc64": entry.crc64}


# -- the blob reader against tarfile --------------------------------------------------------------
@pytest.mark.parametrize("name", ["A", "C"])
def test_every_layer_equals_what_tarfile_lists(roots: dict[str, Path], name: str) -> None:
    layout = Layout(roots[name])
    layers = layers_of(layout)
    kinds = {media.rpartition(".")[2].rpartition("+")[2] for media, _ in layers.values()}
    assert len(layers) >= 5
    assert "gzip" in kinds and (name == "C" or "tar" in kinds)
    for digest, (media, diff_id) in layers.items():
        data = _plain(_blob(layout, digest))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
        got = read_blob_files(layout, digest, diff_id, media)
        assert got.problems == [], digest
        assert {e.path: _fields(e) for e in got.entries} == tar_listing(data), digest
        assert all(e.whiteout is None or e.path.rpartition("/")[2].startswith(".wh.")
                   for e in got.entries)


def test_a_zstd_blob_reads_as_its_gzip_twin(tmp_path: Path, roots: dict[str, Path]) -> None:
    source = Layout(roots["C"])
    digest, (_, diff_id) = max(((d, v) for d, v in layers_of(source).items()
                                if v[0].endswith("gzip")),
                               key=lambda item: len(_blob(source, item[0])))
    data = _plain(_blob(source, digest))
    # Two frames, as a writer that flushes a frame at a time gives.
    half = len(data) // 2
    packed = zstandard.ZstdCompressor(level=3).compress(data[:half]) + \
        zstandard.ZstdCompressor(level=19).compress(data[half:])
    layout = _layout(tmp_path)
    zdigest = _put(layout, packed)
    got = read_blob_files(layout, zdigest, diff_id, OCI_ZSTD)
    twin = read_blob_files(source, digest, diff_id, OCI_GZIP)
    assert got.problems == [] and twin.problems == []
    assert got.entries == twin.entries and got.entries
    assert {e.path: _fields(e) for e in got.entries} == tar_listing(data)


# -- hostile blobs --------------------------------------------------------------------------------
def _layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "root")
    (layout.blobs / "sha256").mkdir(parents=True, exist_ok=True)
    return layout


def _put(layout: Layout, data: bytes, digest: str | None = None) -> str:
    digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
    layout.blob(digest).write_bytes(data)
    return digest


def _tar(*members: tuple[str, bytes | None, bytes], link: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link if kind == tarfile.LNKTYPE else ""
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


GOOD = _tar(("etc", None, tarfile.DIRTYPE), ("etc/a", b"hello", tarfile.REGTYPE))


def test_climbing_absolute_and_odd_names_are_problems(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    data = _tar(("ok", b"1", tarfile.REGTYPE), ("../x", b"evil", tarfile.REGTYPE),
                ("/abs", b"evil", tarfile.REGTYPE), ("a/../../y", b"e", tarfile.REGTYPE),
                ("new\nline", b"e", tarfile.REGTYPE), ("link", None, tarfile.LNKTYPE),
                ("z", b"2", tarfile.REGTYPE), link="../../etc/passwd")
    got = read_blob_files(layout, _put(layout, gzip.compress(data)), _id(data), OCI_GZIP)
    assert sorted(e.path for e in got.entries) == ["ok", "z"]
    assert len(got.problems) == 5, got.problems
    assert any("climbs out" in p for p in got.problems)
    assert any("absolute" in p for p in got.problems)
    assert any("NUL or a newline" in p for p in got.problems)


def test_an_enormous_header_is_passed_over(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        big = tarfile.TarInfo("big")
        big.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(big, io.BytesIO(b""))
        after = tarfile.TarInfo("after")
        after.size = 3
        tar.addfile(after, io.BytesIO(b"abc"))
    data = out.getvalue()
    got = read_blob_files(layout, _put(layout, data), _id(data), OCI_TAR)
    assert [e.path for e in got.entries] == ["after"]
    assert len(got.problems) == 1 and "headers are longer" in got.problems[0]


@pytest.mark.parametrize("case", ["corrupt gzip", "truncated gzip", "truncated zstd",
                                  "garbage zstd", "not a tar", "truncated tar",
                                  "bad checksum"])
def test_broken_streams_are_problems(tmp_path: Path, case: str) -> None:
    layout = _layout(tmp_path)
    big = _tar(*[(f"f{i}", os.urandom(3000), tarfile.REGTYPE) for i in range(20)])
    packed = gzip.compress(big)
    blob = {
        "corrupt gzip": packed[:40] + bytes(b ^ 0x55 for b in packed[40:200]) + packed[200:],
        "truncated gzip": packed[: len(packed) // 2],
        "truncated zstd": zstandard.ZstdCompressor().compress(big)[:-4000],
        "garbage zstd": b"\x28\xb5\x2f\xfd" + os.urandom(5000),
        "not a tar": os.urandom(4096),
        "truncated tar": big[:-3000],
        "bad checksum": big[:148] + b"0000000\0" + big[156:],
    }[case]
    got = read_blob_files(layout, _put(layout, blob), _id(big), OCI_GZIP)
    assert got.problems, case
    assert len(got.entries) < 20


def test_digests_that_do_not_match_are_problems(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    packed = gzip.compress(GOOD)
    wrong = _put(layout, packed, "sha256:" + "0" * 64)
    got = read_blob_files(layout, wrong, _id(GOOD), OCI_GZIP)
    assert [e.path for e in got.entries] == ["etc", "etc/a"]  # the tar is the diff ID's
    assert got.problems == [f"blob content is {_id(packed)}, not its digest {wrong}"]
    other = read_blob_files(layout, _put(layout, packed), "sha256:" + "1" * 64, OCI_GZIP)
    assert other.entries == [] and "not the diff ID" in other.problems[0]


def test_odd_blobs_are_problems(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    good = _put(layout, GOOD)
    assert read_blob_files(layout, good, _id(GOOD), OCI_TAR).problems == []
    assert "missing" in read_blob_files(layout, "sha256:" + "2" * 64, None).problems[0]
    assert "not a valid digest" in read_blob_files(layout, "sha256:../../x", None).problems[0]
    assert "not a tar" in read_blob_files(layout, good, None, OCI_GZIP + "+encrypted"
                                          ).problems[0]
    link = "sha256:" + "3" * 64
    layout.blob(link).symlink_to(layout.blob(good))
    assert "cannot be opened" in read_blob_files(layout, link, None).problems[0]
    fifo = "sha256:" + "4" * 64
    os.mkfifo(layout.blob(fifo))
    assert "not a regular file" in read_blob_files(layout, fifo, None).problems[0]


# -- the index: read once per diff ID, shared with classic stores ---------------------------------
@pytest.fixture
def root_c(tmp_path: Path) -> Path:
    return unpack_c(tmp_path / "c")[0]


def _state(store: imagestore.Store, diff_id: str) -> tuple[int, list[str]] | None:
    with store.index.read() as q:
        return q.file_list_state(diff_id)


def _shared(root_c: Path, index: Path) -> list[str]:
    with imagestore.open(root_c, index) as ctd:
        image = ctd.images.list()[0]
        return list(image.attrs["RootFS"]["Layers"])


def test_a_list_read_from_a_classic_store_is_not_read_again(root_c: Path, empty_root: Path,
                                                            index: Path) -> None:
    diff_ids = _shared(root_c, index)
    make_layers(empty_root, diff_ids)  # no tar-split: the classic reading records a problem
    with imagestore.open(empty_root, index) as classic:
        classic.create(config("same layers", diff_ids=diff_ids))
        classic.read_files()
        before = _state(classic, diff_ids[0])
    assert before is not None and before[1] == ["tar-split is missing"]
    with imagestore.open(root_c, index) as ctd:
        report = ctd.read_files()
        assert diff_ids[0] not in {d for d, _ in report.problems}
        assert _state(ctd, diff_ids[0]) == before
        assert report.layers > 0 and report.problems == []
        assert ctd.read_files().layers == 0  # once


def test_a_list_read_from_a_containerd_store_is_not_read_again(root_c: Path, empty_root: Path,
                                                               index: Path) -> None:
    diff_ids = _shared(root_c, index)
    with imagestore.open(root_c, index) as ctd:
        ctd.read_files()
        read = _state(ctd, diff_ids[0])
    assert read is not None and read[0] > 0 and read[1] == []
    make_layers(empty_root, diff_ids)
    with imagestore.open(empty_root, index) as classic:
        classic.create(config("same layers", diff_ids=diff_ids))
        assert classic.read_files().layers == 0
        assert _state(classic, diff_ids[0]) == read


def test_a_layer_without_its_blob_is_a_problem_left_unread(root_c: Path, index: Path) -> None:
    layout = Layout(root_c)
    digest, (_, diff_id) = next(iter(layers_of(layout).items()))
    layout.blob(digest).unlink()
    with imagestore.open(root_c, index) as ctd:
        report = ctd.read_files()
        assert (diff_id, "no blob of the layer is in the content store") in report.problems
        assert _state(ctd, diff_id) is None


# -- files / which / diff / waste on containerd images --------------------------------------------
def merged(layers: list[dict[str, dict[str, Any]]]) -> dict[str, tuple[str, int]]:
    """The layers' listings applied bottom first (whiteouts, opaque folders, a non-folder
    over a folder), as path -> (type, size)."""
    fs: dict[str, dict[str, Any]] = {}

    def below(folder: str) -> Iterator[str]:
        return (p for p in list(fs) if not folder or p.startswith(folder + "/"))

    for listing in layers:
        for path in listing:
            folder, _, base = path.rpartition("/")
            if base == ".wh..wh..opq":
                for p in below(folder):
                    del fs[p]
            elif base.startswith(".wh."):
                gone = f"{folder}/{base[4:]}" if folder else base[4:]
                fs.pop(gone, None)
                for p in below(gone):
                    del fs[p]
        for path, entry in listing.items():
            if path.rpartition("/")[2].startswith(".wh."):
                continue
            if path in fs and fs[path]["type"] == "dir" and entry["type"] != "dir":
                for p in below(path):
                    del fs[p]
            fs[path] = entry
    out = {}
    for path, entry in fs.items():
        size = entry["size"]
        if entry["type"] == "hardlink" and entry["link"] in fs:
            size = fs[entry["link"]]["size"]
        out[path] = (entry["type"], size)
    return out


def _expected(layout: Layout, diff_ids: list[str]) -> dict[str, tuple[str, int]]:
    by_diff = {diff: digest for digest, (_, diff) in layers_of(layout).items()}
    return merged([tar_listing(_plain(_blob(layout, by_diff[d]))) for d in diff_ids])


@pytest.mark.parametrize(("name", "namespace"), [("A", "moby"), ("A", "k8s.io"),
                                                 ("A", "default"), ("C", None)])
def test_files_of_every_image_equal_the_merge_of_its_tars(
        roots: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        name: str, namespace: str | None) -> None:
    index = tmp_path / "index.sqlite"
    layout = Layout(roots[name])
    seen = 0
    with imagestore.open(roots[name], index, namespace=namespace) as store:
        images = [i for i in store.images.list(all=True) if i.attrs["RootFS"].get("Layers")]
    for image in images:
        diff_ids = image.attrs["RootFS"]["Layers"]
        want = _expected(layout, diff_ids)
        extra = ["--namespace", namespace] if namespace else []
        got = run_cli(capsys, roots[name], *extra, "files", "--json", image.id, index=index)
        assert got.code == 0, got
        assert {r["path"]: (r["type"], r["size"]) for r in got.json()} == want, image.id
        assert {r["layer"] for r in got.json()} <= set(diff_ids)
        seen += 1
    assert seen >= 2


def test_which_diff_and_waste_on_a_containerd_store(roots: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index.sqlite"
    root = roots["A"]
    which = run_cli(capsys, root, "which", "--json", "hello", index=index)
    assert which.code == 0 and which.json()
    assert all(r["path"].endswith("/hello") for r in which.json())
    one = {r["path"] for r in run_cli(capsys, root, "files", "--json", "app:1",
                                      index=index).json()}
    two = {r["path"] for r in run_cli(capsys, root, "files", "--json", "app:2",
                                      index=index).json()}
    diff = run_cli(capsys, root, "diff", "--json", "app:1", "app:2", index=index)
    assert diff.code == 0
    changes = diff.json()
    text = json.dumps(changes)
    for path in one ^ two:
        assert path in text
    waste = run_cli(capsys, root, "waste", "--json", "app:1", index=index)
    assert waste.code == 0
