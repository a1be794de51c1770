"""Hostile input: a store from a crashed host, a forensic image or careless hands never crashes
imagestore, never leads it out of its root, and never reaches SQL as a pattern."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import make_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snapshot import references
from sqlalchemy import text

import imagestore
from imagestore.moby.digest import digest_of

CONTENT = "imagedb/content/sha256/"
LAYERS = "layerdb/sha256/"


def _put(root: Path, raw: bytes) -> str:
    image_id = digest_of(raw)
    (root / CONTENT / image_id[7:]).write_bytes(raw)
    return image_id


def _problems(report: imagestore.SyncReport) -> dict[str, str]:
    return {p.path: p.kind for p in report.problems}


HOSTILE_CONFIGS = {
    "not an object": b'["rootfs"]',
    "a string": b'"rootfs"',
    "NaN": b'{"rootfs": {"type": "layers"}, "Size": NaN}',
    "wrong type": b'{"rootfs": {"type": "layers"}, "comment": 5}',
    "wrong nested type": b'{"rootfs": {"type": "layers", "diff_ids": "x"}}',
    "wrong config type": b'{"rootfs": {"type": "layers"}, "config": {"Env": "A=1"}}',
    "deep nesting": b'{"rootfs": {"type": "layers"}, "x": ' + b"[" * 200000 + b"]" * 200000
                    + b"}",
    "trailing garbage": b'{"rootfs": {"type": "layers"}} x',
    "bad created": b'{"rootfs": {"type": "layers"}, "created": "yesterday"}',
}


def test_hostile_configs_are_skipped_and_recorded(empty_root: Path, index: Path) -> None:
    ids = {what: _put(empty_root, raw) for what, raw in HOSTILE_CONFIGS.items()}
    good = _put(empty_root, b'{"comment": "good \xff\xfe", "rootfs": {"type": "layers"}}')
    huge = _put(empty_root, b'{"rootfs": {"type": "layers"}, "comment": "'
                + b"x" * (40 * 1024 * 1024) + b'"}')
    with imagestore.open(empty_root, index) as store:
        problems = _problems(store.sync())
        assert list(store.map()) == [good]  # invalid UTF-8 is replaced, as Go does
        assert store.get(good).comment == "good \ufffd\ufffd"
    for what, image_id in ids.items():
        assert problems.get(CONTENT + image_id[7:]) == "invalid-config", what
    assert problems[CONTENT + huge[7:]] == "unreadable"


def test_hostile_layerdb_and_references(real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        web = store.get(store.resolve("web:1.0"))
        before = len(store)
    top = real_root / LAYERS / web.chain_id[7:]  # type: ignore[index]
    (top / "size").write_text("12abc")
    other = next(p for p in (real_root / LAYERS).iterdir() if p != top and
                 not (p / "parent").exists())
    (other / "diff").write_bytes(b"\x00" * 100)
    (real_root / "repositories.json").write_text('{"Repositories": {"web": ')
    # Files edited in place inside a layer folder are seen by a full sync (and by a new
    # index); the incremental one trusts the folder, as dockerd never edits layers in place.
    with imagestore.open(real_root, index.with_name("new.sqlite"), readonly=True) as fresh:
        from_scratch = _problems(fresh.sync())
    with imagestore.open(real_root, index) as store:
        problems = _problems(store.sync(full=True))
        assert problems == from_scratch
        assert problems[LAYERS + top.name] == "bad-layer"
        assert problems[LAYERS + other.name] == "bad-layer"
        assert problems["repositories.json"] == "bad-references"
        assert problems[CONTENT + web.id[7:]] == "missing-layer"
        assert web.id not in store.map()
        assert 0 < len(store) < before  # the rest of the store still works
        assert references(store, next(iter(store.map()))) == []


def test_file_names_that_are_not_utf8(real_root: Path, index: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A name no database or terminal takes is skipped and recorded, escaped; the rest loads."""
    os.makedirs(os.fsencode(real_root / "layerdb/mounts") + b"/c\xff", exist_ok=True)
    os.makedirs(os.fsencode(real_root / "imagedb/metadata/sha256") + b"/m\xfe", exist_ok=True)
    with open(os.fsencode(real_root / CONTENT) + b"/a\xff\xfe", "wb") as f:
        f.write(b'{"rootfs": {"type": "layers"}}')
    with imagestore.open(real_root, index) as store:
        report = store.sync()
        assert _problems(report) == {CONTENT + "a\\xff\\xfe": "bad-name",
                                     "layerdb/mounts/c\\xff": "bad-name"}
        assert (len(store), report.skipped) == (39, 1)
        again = store.sync()
        assert (again.unchanged, _problems(again)) == (39, _problems(report))
    result = run_cli(capsys, real_root, "fsck", index=index)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "a\\xff\\xfe" in result.out + result.err
    assert run_cli(capsys, real_root, "ls", index=index).code == 0
    os.unlink(os.fsencode(real_root / CONTENT) + b"/a\xff\xfe")
    with imagestore.open(real_root, index) as store:
        assert list(_problems(store.sync())) == ["layerdb/mounts/c\\xff"]


def test_symlinks_never_lead_out_of_the_root(empty_root: Path, index: Path,
                                             tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("sha256:" + "a" * 64)
    diff = "sha256:" + "d" * 64
    make_layers(outside, [diff])
    # A layer folder, a metadata folder and a metadata file that point outside.
    (empty_root / LAYERS / diff[7:]).symlink_to(outside / "layerdb" / "sha256" / diff[7:])
    image = _put(empty_root, json.dumps({"rootfs": {"type": "layers",
                                                    "diff_ids": [diff]}}).encode())
    plain = _put(empty_root, b'{"rootfs": {"type": "layers"}}')
    meta = empty_root / "imagedb/metadata/sha256"
    (meta / plain[7:]).mkdir(parents=True)
    (meta / plain[7:] / "parent").symlink_to(secret)
    with imagestore.open(empty_root, index) as store:
        problems = _problems(store.sync())
        assert image not in store.map()  # its layer is a symlink: not a layer
        assert problems[CONTENT + image[7:]] == "missing-layer"
        assert store.get_parent(plain) is None
        assert problems["imagedb/metadata/sha256/" + plain[7:]] == "bad-metadata"
        store.delete(plain)
    assert secret.read_text() == "sha256:" + "a" * 64
    assert (outside / "layerdb" / "sha256" / diff[7:] / "diff").exists()


REFS = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "sha256:", "sha256", "%", "_", "..", "/", "../../etc/passwd", "\x00",
                     "a%", "a_", "web:1.0\x00", "A" * 64, "sha256:" + "G" * 64,
                     "x" * 10000]),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(REFS)
def test_any_ref_resolves_or_fails_cleanly(real_root: Path, ref: str) -> None:
    with imagestore.open(real_root, real_root.parent / "fuzz.sqlite", readonly=True,
                         sync=False) as store:
        before = sorted(os.listdir(real_root))
        try:
            image_id = store.resolve(ref)
        except (imagestore.ImageNotFound, imagestore.AmbiguousImageID):
            pass
        else:
            assert image_id in store.map()
        for call in (store.search, store.get, store.get_parent, store.children):
            with contextlib.suppress(imagestore.ImageNotFound, imagestore.AmbiguousImageID):
                call(ref)
        assert sorted(os.listdir(real_root)) == before


def test_a_folder_that_cannot_be_listed_stops_the_sync_and_keeps_the_index(
        real_root: Path, index: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking an unreadable folder for an empty one would drop every image from the index."""
    imagestore.open(real_root, index).close()
    content = str(real_root / CONTENT)
    old = time.time_ns() - 3600 * 10**9
    os.utime(content, ns=(old, old))  # the folder moved (and settled): it must be listed
    real_listdir, real_scandir = os.listdir, os.scandir

    def denied(path: Any = ".") -> list[str]:
        if str(path).rstrip("/") == content.rstrip("/"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    def denied_scan(path: Any = ".") -> Any:
        if str(path).rstrip("/") == content.rstrip("/"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", denied)
    monkeypatch.setattr(os, "scandir", denied_scan)
    result = run_cli(capsys, real_root, "ls", index=index)
    assert result.code == 1
    assert result.err.strip() == f"imagestore: cannot list {content}: Permission denied"
    monkeypatch.undo()
    with imagestore.open(real_root, index, sync=False) as store:
        assert len(store) == 39


def test_a_very_deep_layer_chain_loads(empty_root: Path, index: Path) -> None:
    """Chain sizes are resolved without recursion and with a linear cycle check, so a chain
    far deeper than moby's limit of 125 still loads (a hostile or synthetic store)."""
    depth = 1000
    diff_ids = [digest_of(f"layer {i}".encode()) for i in range(depth)]
    chains = make_layers(empty_root, diff_ids, sizes=[1] * depth)
    top = _put(empty_root, json.dumps({"rootfs": {"type": "layers",
                                                  "diff_ids": diff_ids}}).encode())
    with imagestore.open(empty_root, index) as store:
        assert store.map()[top].chain_id == chains[-1]
        with store.index.engine.connect() as conn:
            row = conn.execute(text("SELECT size, depth FROM layers WHERE chain_id = :c"),
                               {"c": chains[-1]}).one()
        assert tuple(row) == (depth, depth)


def test_an_unreadable_root_is_named_with_the_reason(capsys: pytest.CaptureFixture[str],
                                                     real_root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user without read permission: the error names the folder given, not a path the
    tool made up, and says why."""
    real_listdir = os.listdir

    def denied(path: Any = ".") -> list[str]:
        if os.fspath(path) == str(real_root):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", denied)
    result = run_cli(capsys, real_root, "ls")
    assert result.code == 1
    assert result.err == f"imagestore: cannot read root {real_root}: Permission denied\n"
