"""Layer file lists parsed from tar-split's raw headers (``imagestore.moby.layerfiles``),
judged by Python's own tarfile reading the very tar the tar-split was cut from, and hostile
tar-splits that must end as problems of the layer, never as exceptions."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from imagestore.moby.layerfiles import MAX_HEADERS, TAR_SPLIT, read_layer_files
from imagestore.moby.save_go import crc64

TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.LNKTYPE: "hardlink",
         tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
         tarfile.DIRTYPE: "dir", tarfile.FIFOTYPE: "fifo"}


def make_tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def tar_split(raw: bytes) -> list[dict[str, Any]]:
    """tar-split's entries for a tar, as its packer writes them: raw segments, then one file
    entry per member with the CRC-64 of its bytes."""
    entries: list[dict[str, Any]] = []
    pos = 0

    def segment(data: bytes) -> None:
        if data:
            entries.append({"type": 2, "payload": base64.b64encode(data).decode(),
                            "position": len(entries)})

    with tarfile.open(fileobj=io.BytesIO(raw), mode="r") as tar:
        for m in tar.getmembers():
            segment(raw[pos:m.offset_data])
            size = m.size if m.isreg() else 0
            body = raw[m.offset_data:m.offset_data + size]
            entries.append({"type": 1, "name": m.name + ("/" if m.isdir() else ""),
                            "size": size,
                            "payload": base64.b64encode(crc64(body).to_bytes(8, "big"))
                            .decode() if size else None, "position": len(entries)})
            pos = m.offset_data + size
    segment(raw[pos:])
    return entries


def write_split(folder: Path, entries: list[dict[str, Any]] | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = entries if isinstance(entries, bytes) else \
        b"".join(json.dumps(e).encode() + b"\n" for e in entries)
    (folder / TAR_SPLIT).write_bytes(gzip.compress(body))
    return folder


def info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **kw: Any) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.size, t.mode, t.mtime = kind, size, kw.pop("mode", 0o644), kw.pop("mtime", 1e9)
    for key, value in kw.items():
        setattr(t, key, value)
    return t


def sample() -> list[tuple[tarfile.TarInfo, bytes]]:
    long_dir = "deep/" + "d" * 120
    return [
        (info("etc", tarfile.DIRTYPE, mode=0o755), b""),
        (info("etc/passwd", size=5, uid=7, gid=8), b"root\n"),
        (info("bin", tarfile.DIRTYPE, mode=0o755), b""),
        (info("bin/sh", tarfile.SYMTYPE, linkname="busybox"), b""),
        (info("bin/busybox", size=3, mode=0o755), b"elf"),
        (info("bin/ash", tarfile.LNKTYPE, linkname="bin/busybox"), b""),
        (info("dev", tarfile.DIRTYPE), b""),
        (info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        (info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
        (info("run/pipe", tarfile.FIFOTYPE), b""),
        (info(long_dir, tarfile.DIRTYPE), b""),
        (info(long_dir + "/" + "f" * 150 + ".txt", size=2, uid=70000), b"hi"),
        (info("lnk", tarfile.SYMTYPE, linkname="t" * 200), b""),
        (info("var/.wh.cache", size=0), b""),
        (info("opt/.wh..wh..opq", size=0), b""),
        (info("tmp/.wh..wh.plnk", tarfile.DIRTYPE), b""),
        (info("h\u00e9llo", size=1, mtime=1700000000), b"x"),
    ]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_field_is_what_tarfile_reads(tmp_path: Path, fmt: int) -> None:
    members = [(i, d) for i, d in sample() if fmt != tarfile.USTAR_FORMAT
               or (len(i.name) <= 100 and len(i.linkname) <= 100 and i.uid < 0o7777777)]
    if fmt == tarfile.USTAR_FORMAT:  # a name split over ustar's prefix field
        members.append((info("p" * 90 + "/" + "q" * 90, size=1), b"z"))
    raw = make_tar(members, fmt)
    got = read_layer_files(write_split(tmp_path / "layer", tar_split(raw)))
    assert got.problems == []
    by_path = {e.path: e for e in got.entries}
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for m in tar.getmembers():
            path = m.name.rstrip("/")
            e = by_path.pop(path)
            assert (e.type, e.size, e.mode, e.uid, e.gid, e.mtime) == (
                TYPES[m.type], m.size if m.isreg() else 0, m.mode, m.uid, m.gid, int(m.mtime))
            assert e.link == (m.linkname if m.issym() or m.islnk() else None)
            if m.isreg() and m.size:
                body = raw[m.offset_data:m.offset_data + m.size]
                assert e.crc64 == crc64(body).to_bytes(8, "big").hex()
    assert by_path == {}
    marks = {e.path: (e.whiteout, e.target) for e in got.entries if e.whiteout}
    assert marks == {"var/.wh.cache": ("remove", "var/cache"),
                     "opt/.wh..wh..opq": ("opaque", "opt"), "tmp/.wh..wh.plnk": ("meta", None)}


def test_the_real_store_parses_without_problems(real_root: Path) -> None:
    layers = sorted((real_root / "layerdb/sha256").iterdir())
    found = [read_layer_files(folder) for folder in layers]
    assert all(f.problems == [] for f in found)
    assert sum(len(f.entries) for f in found) > 0


def _pax_name(name: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    t = info("placeholder", size=1)
    t.pax_headers = {"path": name.decode("utf-8", "surrogateescape")}
    return [(info("ok", size=1), b"a"), (t, b"b")]


@pytest.mark.parametrize("name, why", [
    ("../escape", "climbs out"), ("a/../../escape", "climbs out"), ("/etc/shadow", "absolute"),
    ("bad\nname", "newline"),
])
def test_hostile_names_are_problems_never_paths(tmp_path: Path, name: str, why: str) -> None:
    raw = make_tar([(info("ok", size=1), b"a"), (info(name, size=1), b"b")], tarfile.PAX_FORMAT)
    got = read_layer_files(write_split(tmp_path / "l", tar_split(raw)))
    assert [e.path for e in got.entries] == ["ok"]
    assert len(got.problems) == 1 and why in got.problems[0]


def test_a_nul_in_a_pax_name_is_a_problem(tmp_path: Path) -> None:
    # A PAX record naming the second entry with a NUL inside (tarfile refuses to write one).
    bad = info("x", size=1)
    bad.pax_headers = {"path": "evil\x01name"}
    raw = make_tar([(info("ok", size=1), b"a"), (bad, b"b")], tarfile.PAX_FORMAT)
    raw = raw.replace(b"evil\x01name", b"evil\x00name")
    entries = tar_split(raw)
    got = read_layer_files(write_split(tmp_path / "l", entries))
    assert [e.path for e in got.entries] == ["ok"]
    assert "NUL" in got.problems[0]


def test_an_enormous_header_is_a_problem(tmp_path: Path) -> None:
    t = info("big", size=1)
    t.pax_headers = {"comment": "x" * (MAX_HEADERS + 10)}
    raw = make_tar([(t, b"b"), (info("after", size=1), b"c")], tarfile.PAX_FORMAT)
    got = read_layer_files(write_split(tmp_path / "l", tar_split(raw)))
    assert [e.path for e in got.entries] == ["after"]
    assert "longer than" in got.problems[0] or "extension header" in got.problems[0]


@pytest.mark.parametrize("body, why", [
    (b"not json\n", "invalid"), (b'{"type": "1"}\n', "invalid"), (b"[1]\n", "invalid"),
    (b'{"type": 1, "name": "x", "size": -1}\n', "invalid"),
    (b'{"type": 2, "payload": "!!!"}\n', "base64"),
])
def test_a_tar_split_that_does_not_parse_is_a_problem(tmp_path: Path, body: bytes,
                                                      why: str) -> None:
    got = read_layer_files(write_split(tmp_path / "l", body))
    assert got.entries == [] and len(got.problems) == 1 and why in got.problems[0]


def test_an_unreadable_tar_split_is_a_problem(tmp_path: Path) -> None:
    assert "missing" in read_layer_files(tmp_path).problems[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / TAR_SPLIT).write_bytes(b"not gzip at all")
    assert "gzip" in read_layer_files(tmp_path / "a").problems[0]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / TAR_SPLIT).write_bytes(gzip.compress(b'{"type": 2}\n' * 50)[:-12])
    assert "gzip" in read_layer_files(tmp_path / "b").problems[0]
    (tmp_path / "c").mkdir()
    os.symlink(tmp_path / "a" / TAR_SPLIT, tmp_path / "c" / TAR_SPLIT)
    assert "symlink" in read_layer_files(tmp_path / "c").problems[0]


def test_a_header_that_does_not_match_its_entry_is_a_problem(tmp_path: Path) -> None:
    raw = make_tar([(info("a", size=3), b"abc"), (info("b", size=1), b"d")], tarfile.GNU_FORMAT)
    entries = tar_split(raw)
    entries[1]["size"] = 2  # the tar-split says 2 bytes, the header 3
    got = read_layer_files(write_split(tmp_path / "l", entries))
    assert "header size" in got.problems[0]
