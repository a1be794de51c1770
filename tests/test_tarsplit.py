"""Layer tars rebuilt from tar-split and the graph driver's files: byte for byte what the
engine saved, refused loudly (naming layer and file) whenever they cannot be."""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from engine import unpack_root_a

from imagestore.moby import tarsplit_entries
from imagestore.moby.digest import chain_ids
from imagestore.moby.save_go import crc64
from imagestore.moby.tarsplit import (
    LayerError,
    LayerProblem,
    LayerSource,
    check_layer,
    check_layers,
    layer_length,
    layer_source,
    stream_layer,
    write_layer,
)

SAVED = Path(__file__).parent / "data" / "docker-20.10-vfs" / "saved"
BB = "sha256:47e5f13bea911aadfc97d117e72c8e38764c4b4b97178f87e49a7de6ad5cdfbd"  # bb:1.35
BB_CACHE = "32bfb2bd796698a95768dc73f09edb35c87935df73e658af569ba00a677392fc"
TOOL_TOP = "sha256:389462d4844526594828253d0ee1964b2a7dd9e8e617eae022a10cbe1bd5176c"
TOOL_CACHE = "0fa6bf694ded060ccfb0e09c402349f2541662508b3dc3e883e45632b2ee01bf"


def slow_crc64(data: bytes, crc: int = 0) -> int:
    """CRC-64 straight from its definition (Go's hash/crc64, ISO polynomial), bit by bit."""
    crc ^= (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xD800000000000000 if crc & 1 else crc >> 1
    return crc ^ ((1 << 64) - 1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Docker 20.10 data-root (vfs), unpacked once; tests that damage it copy it."""
    return unpack_root_a(tmp_path_factory.mktemp("rootA"))


@pytest.fixture
def data_root(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root-A"
    for part in ("image", "vfs/dir"):  # vfs/ also holds a device node
        shutil.copytree(pristine / part, dst / part, symlinks=True)
    return dst


def image_root(data_root: Path) -> Path:
    return data_root / "image" / "vfs"


def source(data_root: Path, chain: str = BB) -> LayerSource:
    return layer_source(image_root(data_root), chain)


def rebuilt(src: LayerSource) -> bytes:
    return b"".join(stream_layer(src))


def tar_split(src: LayerSource) -> list[dict[str, Any]]:
    with gzip.open(src.folder / "tar-split.json.gz") as f:
        return [json.loads(line) for line in f]


def write_tar_split(src: LayerSource, entries: list[dict[str, Any]]) -> None:
    with gzip.open(src.folder / "tar-split.json.gz", "wb") as f:
        for e in entries:
            f.write(json.dumps(e).encode() + b"\n")


def fails(src: LayerSource, path: str, *words: str) -> LayerError:
    with pytest.raises(LayerError) as info:
        rebuilt(src)
    err = info.value
    assert (err.chain_id, err.path) == (src.chain_id, path)
    text = str(err)
    assert "\n" not in text and src.chain_id in text
    for word in words:
        assert word in err.reason
    return err


# -- CRC-64 --------------------------------------------------------------------------------


def test_crc64_matches_the_definition() -> None:
    assert slow_crc64(b"123456789") == 0xB90956C775A41001  # the catalogued CRC-64/GO-ISO check
    assert crc64(b"hello") == slow_crc64(b"hello") == 0x3C3EEEE2D8100000
    assert crc64(b"") == 0
    rng = random.Random(7)
    for size in [*range(0, 140), 1000, 4093, 65536 + 13, 140_001]:
        data = rng.randbytes(size)
        start = rng.getrandbits(64)
        assert crc64(data) == slow_crc64(data), size
        assert crc64(data, start) == slow_crc64(data, start), size
    data = rng.randbytes(300_000)
    cuts = [0, 1, 7, 8, 95, 96, 97, 70_000, 70_001, 300_000]
    crc = 0
    for a, b in itertools.pairwise(cuts):
        crc = crc64(memoryview(data)[a:b], crc)
    assert crc == crc64(data) == slow_crc64(data)


def test_crc64_is_fast() -> None:
    """A byte-table loop (10-16 MB/s) would make saving a large layer take minutes."""
    data = os.urandom(4 << 20)
    best = min(_timed(crc64, data) for _ in range(3))
    assert len(data) / best > 40e6, f"{len(data) / best / 1e6:.0f} MB/s"


def _timed(fn: Any, data: bytes) -> float:
    start = time.perf_counter()
    fn(data)
    return time.perf_counter() - start


# -- tar-split lines: the fast path means what json.loads means --------------------------


def _both(line: bytes) -> tuple[object, object]:
    def run(fn: Any) -> object:
        try:
            return fn()
        except ValueError:
            return ValueError
    slow = run(lambda: tarsplit_entries._entry(json.loads(line)))
    return run(lambda: tarsplit_entries._parse(line, True)), slow


def test_fast_line_parsing_agrees_with_json() -> None:
    rng = random.Random(11)
    names = ["etc/passwd", "./bin/sh", "a b/c", "x<y>&z", 'q"uote', "back\\slash", "été",
             "tab\there", "", "../up", "/abs", "~!@#$%^*()_+{}|:?`-=[];',."]
    payloads: list[object] = [None, "", "AA==", "AAA=", "AAAA", "A===", "AB=A", "!!!!", "AAA",
                              base64.b64encode(rng.randbytes(8)).decode(),
                              base64.b64encode(rng.randbytes(700)).decode(), 5]
    lines = []
    for _ in range(3000):
        kind = rng.choice([1, 2, 2, 3])
        doc: dict[str, Any] = {"type": kind}
        if kind == 1:
            doc["name"] = rng.choice(names)
            if rng.random() < 0.7:
                doc["size"] = rng.choice([0, 1, 13, 1 << 40, (1 << 63) - 1, 1 << 63, -1])
        doc["payload"] = rng.choice(payloads)
        doc["position"] = rng.choice([0, 1, 77, -3])
        sep = rng.choice([(",", ":"), (", ", ": ")])
        text = json.dumps(doc, separators=sep, ensure_ascii=rng.random() < 0.5)
        lines.append(text.encode())
    lines += [b'{"type":2,"payload":"AA==","position":007}', b'{"type":2,"payload":"AA=="}',
              b'{"type":2,"payload":"AA==","position":1}\r', b'{"type":2,"payload":"AA\\u003d="}',
              b'{"type":1,"name":"a","size":3,"payload":"AAAAAAAAAAA=","position":1,"x":2}',
              b'{"type":1,"name":"a","name":"b","payload":null,"position":1}',
              b'{"type":1,"name":"\xff","payload":null,"position":1}']
    fast = 0
    for line in lines:
        got, want = _both(line)
        assert got == want, line
        if got is not ValueError:
            length = tarsplit_entries._parse(line, False)
            assert length[:3] == got[:3], line  # type: ignore[index]
            fast += 1
    assert fast > 1000


def test_go_s_own_lines_skip_the_json_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(doc: object) -> None:
        raise AssertionError(f"json path taken for {doc}")

    monkeypatch.setattr(tarsplit_entries, "_entry", refuse)
    parse = tarsplit_entries._parse
    header = base64.b64encode(b"h" * 512).decode()
    assert parse(f'{{"type":2,"payload":"{header}","position":0}}'.encode(), True) == \
        (2, b"", 512, b"h" * 512)
    assert parse(f'{{"type":2,"payload":"{header}","position":0}}'.encode(), False) == \
        (2, b"", 512, b"")
    assert parse(b'{"type":1,"name":"data/","payload":null,"position":1}', True) == \
        (1, b"data/", 0, b"")
    assert parse(b'{"type":1,"name":"data/payload/p/file.txt","size":13,'
                 b'"payload":"cSdkTFiKo2Q=","position":7}', True) == \
        (1, b"data/payload/p/file.txt", 13, base64.b64decode("cSdkTFiKo2Q="))


# -- rebuilding the real layers ------------------------------------------------------------


def test_every_layer_of_the_real_root_rebuilds_to_its_diff_id(pristine: Path) -> None:
    root = image_root(pristine)
    chains = sorted("sha256:" + p.name for p in (root / "layerdb" / "sha256").iterdir())
    assert len(chains) == 13
    for chain in chains:
        src = layer_source(root, chain)
        data = rebuilt(src)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == src.diff_id
        assert layer_length(src) == len(data)
        assert len(data) % 512 == 0
    assert check_layers([layer_source(root, c) for c in chains], workers=2) == []


def test_rebuilt_layers_equal_those_docker_saved(pristine: Path) -> None:
    root = image_root(pristine)
    for archive in sorted(SAVED.glob("*.tar")):
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
            diffs = config["rootfs"]["diff_ids"]
            layers = zip(manifest[0]["Layers"], diffs, chain_ids(diffs), strict=True)
            for path, diff, chain in layers:
                saved = tar.extractfile(path).read()  # type: ignore[union-attr]
                assert rebuilt(layer_source(root, chain, diff)) == saved


def test_write_layer_and_chunks(pristine: Path, tmp_path: Path) -> None:
    src = source(pristine)
    with (tmp_path / "layer.tar").open("wb") as out:
        n = write_layer(src, out)
    data = (tmp_path / "layer.tar").read_bytes()
    assert n == len(data) == layer_length(src)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == src.diff_id
    chunks = list(stream_layer(src))
    assert len(chunks) > 1 and max(map(len, chunks)) <= 1 << 21  # streamed, not whole


def test_overlay2_reads_the_diff_folder(pristine: Path, tmp_path: Path) -> None:
    """overlay2 keeps a layer's own files in ``overlay2/<cache-id>/diff``."""
    src = source(pristine, TOOL_TOP)
    data_root = tmp_path / "dr"
    shutil.copytree(src.folder, data_root / "image" / "overlay2" / "layerdb" / "sha256"
                    / src.folder.name)
    shutil.copytree(pristine / "vfs" / "dir" / TOOL_CACHE, data_root / "overlay2" / TOOL_CACHE
                    / "diff", symlinks=True)
    over = layer_source(data_root / "image" / "overlay2", TOOL_TOP)
    assert over.driver == "overlay2"
    assert rebuilt(over) == rebuilt(src)
    shutil.rmtree(data_root / "overlay2" / TOOL_CACHE / "diff")
    (data_root / "overlay2" / TOOL_CACHE / "diff").symlink_to(pristine / "vfs" / "dir"
                                                              / TOOL_CACHE)
    fails(over, str(data_root / "overlay2" / TOOL_CACHE / "diff"), "symlink")


def test_unknown_driver_is_refused(pristine: Path, tmp_path: Path) -> None:
    src = source(pristine)
    other = LayerSource(src.layerdb, tmp_path, "btrfs", src.chain_id, src.diff_id)
    fails(other, "", "not supported")


# -- damage ------------------------------------------------------------------------------


def test_a_changed_byte_names_layer_and_file(data_root: Path) -> None:
    busybox = data_root / "vfs" / "dir" / BB_CACHE / "bin" / "busybox"
    raw = bytearray(busybox.read_bytes())
    raw[1_000_000] ^= 0x01
    busybox.write_bytes(raw)
    err = fails(source(data_root), "./bin/busybox", "CRC")
    assert str(err).startswith(f"layer {BB}: ./bin/busybox: ")


def test_missing_longer_and_shorter_files(data_root: Path) -> None:
    files = data_root / "vfs" / "dir" / BB_CACHE / "etc"
    src = source(data_root)
    passwd = (files / "passwd").read_bytes()
    (files / "passwd").write_bytes(passwd + b"x")
    fails(src, "./etc/passwd", "longer")
    (files / "passwd").write_bytes(passwd[:-1])
    fails(src, "./etc/passwd", "shorter", "70 of 71")
    (files / "passwd").unlink()
    fails(src, "./etc/passwd", "missing")
    (files / "passwd").mkdir()
    fails(src, "./etc/passwd", "not a regular file")


def test_check_layer_reports_every_damaged_file(data_root: Path) -> None:
    tree = data_root / "vfs" / "dir" / BB_CACHE
    with (tree / "bin" / "busybox").open("r+b") as f:
        f.seek(4096)
        f.write(b"\0\1\2")
    (tree / "etc" / "group").unlink()
    (tree / "etc" / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n")
    (data_root / "vfs" / "dir" / TOOL_CACHE / "data" / "listing.txt").write_text("changed\n")
    problems = check_layer(source(data_root))
    assert [(p.chain_id, p.path) for p in problems] == [
        (BB, "./bin/busybox"), (BB, "./etc/group"), (BB, "./etc/passwd")]
    assert "CRC" in problems[0].reason and "missing" in problems[1].reason
    assert "shorter" in problems[2].reason
    root = image_root(data_root)
    sources = [layer_source(root, c) for c in (TOOL_TOP, BB, chain_ids([BB])[0])]
    every = check_layers(sources, workers=2)
    assert every == [LayerProblem(TOOL_TOP, "data/listing.txt", every[0].reason), *problems,
                     *problems]
    assert every == check_layers(sources, workers=1)


def test_names_that_climb_out_are_refused(data_root: Path, tmp_path: Path) -> None:
    src = source(data_root)
    entries = tar_split(src)
    group = next(e for e in entries if e.get("name") == "./etc/group")
    outside = data_root / "vfs" / "dir" / "secret"
    outside.write_bytes((data_root / "vfs" / "dir" / BB_CACHE / "etc" / "group").read_bytes())
    for name in ("../secret", "./etc/../../secret", "/etc/group", "a\0b"):
        group["name"] = name
        write_tar_split(src, entries)
        fails(src, name, "refused")
    del group["name"]
    group["name_raw"] = base64.b64encode(b"../\xffsecret").decode()
    write_tar_split(src, entries)
    err = fails(src, "../\udcffsecret", "climbs out")
    assert "\\udcff" in str(err)  # a non-UTF-8 name is shown escaped, on one line


def test_symlinks_in_the_driver_tree_are_never_followed(data_root: Path,
                                                        tmp_path: Path) -> None:
    tree = data_root / "vfs" / "dir" / BB_CACHE
    src = source(data_root)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(tree / "etc", elsewhere)  # same bytes: only the symlink is wrong
    shutil.rmtree(tree / "etc")
    (tree / "etc").symlink_to(elsewhere)
    fails(src, "./etc/group", "symlink", "folder etc")
    (tree / "etc").unlink()
    (tree / "etc").mkdir()
    (tree / "etc" / "group").symlink_to(elsewhere / "group")
    shutil.copy(elsewhere / "passwd", tree / "etc" / "passwd")
    fails(src, "./etc/group", "symlink")
    (tree / "etc" / "group").unlink()
    (tree / "etc" / "group").symlink_to("passwd")  # inside the layer: still not followed
    fails(src, "./etc/group", "symlink")
    shutil.rmtree(tree)
    tree.symlink_to(elsewhere.parent)
    fails(src, str(data_root / "vfs" / "dir" / BB_CACHE), "symlink")


def test_broken_tar_splits(data_root: Path) -> None:
    src = source(data_root)
    path = str(src.folder / "tar-split.json.gz")
    raw = (src.folder / "tar-split.json.gz").read_bytes()
    (src.folder / "tar-split.json.gz").write_bytes(raw[: len(raw) // 2])
    fails(src, path, "truncated")
    with pytest.raises(LayerError, match="truncated"):
        layer_length(src)
    (src.folder / "tar-split.json.gz").write_bytes(b"not gzip at all")
    fails(src, path, "gzip")
    (src.folder / "tar-split.json.gz").write_bytes(gzip.compress(b'{"type":2,"payload":"AA=="}'
                                                                 b"\n{oops\n"))
    fails(src, path, "entry 2 is invalid")
    (src.folder / "tar-split.json.gz").write_bytes(gzip.compress(
        b'{"type":1,"name":"x","size":3,"payload":"AAAA"}\n'))
    fails(src, path, "8-byte CRC")
    (src.folder / "tar-split.json.gz").unlink()
    fails(src, path, "missing")
    assert check_layer(src) == [LayerProblem(BB, path, "tar-split is missing")]
    (src.folder / "tar-split.json.gz").symlink_to("/etc/hostname")
    fails(src, path, "symlink")


def test_a_changed_header_fails_on_the_diff_id(data_root: Path) -> None:
    src = source(data_root)
    entries = tar_split(src)
    seg = base64.b64decode(entries[0]["payload"])
    entries[0]["payload"] = base64.b64encode(seg[:200] + b"X" + seg[201:]).decode()
    write_tar_split(src, entries)
    err = fails(src, "", "not the diff ID")
    assert src.diff_id in err.reason


def test_duplicate_names_and_missing_layers(data_root: Path) -> None:
    src = source(data_root)
    entries = tar_split(src)
    entries.append(dict(next(e for e in entries if e.get("name") == "./etc/group"),
                        name="etc//group"))
    write_tar_split(src, entries)
    fails(src, "", "not the diff ID")  # the same file twice: not the tar the engine saved
    root = image_root(data_root)
    with pytest.raises(LayerError, match="not in layerdb"):
        layer_source(root, "sha256:" + "0" * 64)
    (src.folder / "cache-id").write_text("../../etc")
    fails(src, str(src.folder / "cache-id"), "not a folder name")


def test_layer_error_pickles_and_reads_as_one_line() -> None:
    err = LayerError(BB, "a\nb", "bad\tthing")
    back = pickle.loads(pickle.dumps(err))
    assert (back.chain_id, back.path, back.reason) == (BB, "a\nb", "bad\tthing")
    assert str(back) == f"layer {BB}: a\\nb: bad\\tthing"


# -- memory ------------------------------------------------------------------------------


_STREAM = """
import sys
from pathlib import Path
from imagestore.moby.tarsplit import layer_source, write_layer
src = layer_source(Path(sys.argv[1]), sys.argv[2])
with open("/dev/null", "wb") as out:
    n = write_layer(src, out)
# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into the child's ru_maxrss
# across exec, and a long test run's parent is large.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, int(hwm.split()[1]))
"""


def test_a_large_layer_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 200 MiB file, sparse but for random blocks, through a tar-split written here."""
    size = 200 << 20
    tree = tmp_path / "vfs" / "dir" / "big"
    tree.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with (tree / "big.bin").open("wb") as f:
        f.truncate(size)
        for offset in range(0, size, 16 << 20):
            f.seek(offset)
            f.write(block)
    info = tarfile.TarInfo("big.bin")
    info.size, info.mtime, info.mode = size, 1_700_000_000, 0o644
    header = info.tobuf(tarfile.USTAR_FORMAT)
    tail = b"\0" * (-size % 512) + b"\0" * 1024
    sha, crc = hashlib.sha256(header), 0
    with (tree / "big.bin").open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            crc = crc64(chunk, crc)
    sha.update(tail)
    diff = "sha256:" + sha.hexdigest()
    layer = tmp_path / "image" / "vfs" / "layerdb" / "sha256" / diff[7:]
    layer.mkdir(parents=True)
    (layer / "cache-id").write_text("big")
    (layer / "diff").write_text(diff)
    with gzip.open(layer / "tar-split.json.gz", "wb") as gz:
        for entry in ({"type": 2, "payload": base64.b64encode(header).decode()},
                      {"type": 1, "name": "big.bin", "size": size,
                       "payload": base64.b64encode(crc.to_bytes(8, "big")).decode()},
                      {"type": 2, "payload": base64.b64encode(tail).decode()}):
            gz.write(json.dumps(entry).encode() + b"\n")
    out = subprocess.run([sys.executable, "-c", _STREAM, str(tmp_path / "image" / "vfs"), diff],
                         check=True, capture_output=True, text=True, timeout=300).stdout
    length, peak_kib = map(int, out.split())
    assert length == len(header) + size + len(tail)
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
