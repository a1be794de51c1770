"""The Docker Engine API's image JSON computed offline (``service.inspect``,
``service.selection``), judged by the Docker SDK for Python against a real dockerd: the
engine on one copy of a data-root, imagestore on another. The copies also hold images made
here to reach what the real store does not: Go's case-insensitive and repeated keys, null
and empty values, a config that is null, a creation time with an offset or none, tag times,
a parent chain that ends in a missing image, digest references."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest
from engine import ROOT_A, Engine

import imagestore
from imagestore.errors import ImageStoreError
from imagestore.moby.drivers import Driver, find_driver
from imagestore.service.inspect import driver_metadata, image_attrs, image_history
from imagestore.service.selection import path_match, select_images

ARCHIVE = ROOT_A.with_name("root-A-buildkit.tar.xz")  # root-A plus a BuildKit image
WEB_1 = "sha256:f1e10523c794d0b9354e057bf80096ce6540e5b41c4f137bd3b0c4a95392399e"
DIGEST = "sha256:" + "d1" * 32


# -- the made images --------------------------------------------------------------------------
# Bytes as written: JSON with repeated keys cannot come from a dict.
ODD = (b'{"architecture":"arm64","variant":"v8","os":"linux","os.version":"10.0.1",'
       b'"created":"2024-03-01T12:00:00.123456789+02:00","author":"first","Author":"second",'
       b'"comment":"","container":"c0ffee",'
       b'"config":{"Env":["A=1",null],"cmd":"echo hi","Labels":{"x":"1","e":null},'
       b'"Healthcheck":{"test":["CMD","true"],"Interval":1000000000,"StartInterval":5},'
       b'"StopTimeout":0,"Shell":[],"ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},'
       b'"ArgsEscaped":true,"MacAddress":"","OnBuild":[],"Entrypoint":null},'
       b'"container_config":{"Hostname":"h","Cmd":null,"Tty":true,"Image":"x","Volumes":{}},'
       b'"rootfs":{"type":"layers","diff_ids":[]},'
       b'"history":[{"created":"2024-03-01T10:00:00Z","created_by":"a","empty_layer":true,'
       b'"comment":"one"},{"CREATED":"2024-03-01T10:00:01Z","Created_By":"b",'
       b'"empty_layer":true,"Comment":"two"}]}')
MERGED = (b'{"os":"linux","rootfs":{"type":"layers"},"created":"2024-03-01T12:00:00Z",'
          b'"config":{"Healthcheck":{"Test":["CMD","a"]},"healthcheck":{"Retries":3},'
          b'"Env":["X=1","Y=2"],"env":[null],"ExposedPorts":{"1/tcp":{}},'
          b'"exposedports":{"2/udp":null},"User":"u","user":null,"Labels":{"x":"2"}},'
          b'"config":{"WorkingDir":"/w"},"history":[{"created_by":"only","empty_layer":true}]}')
NULL_CONFIG = b'{"config":null,"rootfs":{"type":"layers","diff_ids":null},"history":[]}'


def _history(*steps: str) -> bytes:
    return b",".join(b'{"created":"2024-04-0%dT00:00:00Z","created_by":"%s","empty_layer":true}'
                     % (i + 1, s.encode()) for i, s in enumerate(steps))


PARENT = b'{"os":"linux","created":"2024-04-01T00:00:00Z","rootfs":{"type":"layers"},' \
    b'"history":[' + _history("p") + b']}'
CHILD = b'{"os":"linux","created":"2024-04-02T00:00:00Z","rootfs":{"type":"layers"},' \
    b'"comment":"kept","history":[' + _history("p", "c1", "c2") + b']}'
ORPHAN = b'{"os":"linux","created":"2024-04-03T00:00:00Z","rootfs":{"type":"layers"},' \
    b'"history":[' + _history("o1", "o2") + b']}'


def _add(vfs: Path, raw: bytes, parent: str | None = None, tagged: str | None = None) -> str:
    hex_id = hashlib.sha256(raw).hexdigest()
    (vfs / "imagedb" / "content" / "sha256" / hex_id).write_bytes(raw)
    meta = vfs / "imagedb" / "metadata" / "sha256" / hex_id
    meta.mkdir(parents=True, exist_ok=True)
    if parent is not None:
        (meta / "parent").write_text(parent)
    if tagged is not None:
        (meta / "lastUpdated").write_text(tagged)
    return "sha256:" + hex_id


def _make_images(data_root: Path) -> None:
    vfs = data_root / "image" / "vfs"
    _add(vfs, ODD, tagged="2024-05-05T10:00:00.5+02:00")
    merged = _add(vfs, MERGED)
    empty = _add(vfs, NULL_CONFIG)
    parent = _add(vfs, PARENT)
    child = _add(vfs, CHILD, parent=parent, tagged="2024-05-06T00:00:00Z")
    _add(vfs, ORPHAN, parent="sha256:" + "de" * 32)
    path = vfs / "repositories.json"
    doc = json.loads(path.read_text())
    for ref, image_id in (("web@" + DIGEST, WEB_1), ("digested@" + DIGEST, empty),
                          ("crafted:child", child), ("crafted:parent", parent),
                          ("crafted:alt", parent), ("merged:latest", merged)):
        repository = ref.partition("@")[0].partition(":")[0]
        doc["Repositories"].setdefault(repository, {})[ref] = image_id
    path.write_text(json.dumps(doc))


# -- one engine for the module ---------------------------------------------------------------
@dataclass
class Judge:
    client: Any  # docker.DockerClient
    store: imagestore.Store
    driver: Driver | None
    ids: list[str]
    created: dict[str, int]  # the engine's Created (Unix seconds) of every image


def _unpack(dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xJf", str(ARCHIVE), "-C", str(dest)], check=True)
    _make_images(dest / "root-A")
    return dest / "root-A"


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judge]:
    base = tmp_path_factory.mktemp("engine-api")
    theirs, ours = _unpack(base / "engine"), _unpack(base / "ours")
    engine = Engine(theirs)
    try:
        engine.start()
        client = docker.DockerClient(base_url=f"unix://{engine.sock}", timeout=120)
        store = imagestore.open(ours / "image" / "vfs", index=base / "i.sqlite")
        try:
            summaries = client.api.images(all=True)
            assert store.last_sync is not None and not store.last_sync.problems
            yield Judge(client, store, find_driver(store.root.path),
                        sorted(s["Id"] for s in summaries),
                        {s["Id"]: s["Created"] for s in summaries})
        finally:
            store.close()
            client.close()
    finally:
        engine.stop()


def _differences(theirs: Any, mine: Any) -> list[str]:
    if isinstance(theirs, dict) and isinstance(mine, dict) and theirs != mine:
        return [f"{key}: engine {theirs.get(key, '<absent>')!r} != {mine.get(key, '<absent>')!r}"
                for key in dict.fromkeys([*theirs, *mine]) if theirs.get(key) != mine.get(key)]
    return [] if theirs == mine else [f"engine {theirs!r} != {mine!r}"]


# -- inspect and history ----------------------------------------------------------------------
def test_the_made_images_are_the_engines(judge: Judge) -> None:
    assert len(judge.ids) == 46  # 40 of root-A-buildkit, 6 made here
    assert judge.client.images.get("crafted:child").attrs["RepoTags"] == ["crafted:child"]


def test_inspect_is_the_engines_for_every_image(judge: Judge) -> None:
    wrong = {i: d for i in judge.ids if (d := _differences(
        judge.client.images.get(i).attrs, image_attrs(judge.store, i, judge.driver)))}
    assert wrong == {}


def test_history_is_the_engines_for_every_image(judge: Judge) -> None:
    wrong = {i: (theirs, mine) for i in judge.ids
             if (theirs := judge.client.api.history(i)) != (mine := image_history(judge.store, i))}
    assert wrong == {}
    # The walk down the parents: two images, then <missing> (PARENT has no parent).
    ids = [h["Id"] for h in image_history(judge.store, judge.store.resolve("crafted:child"))]
    assert ids[2] == "<missing>" and ids[1] == judge.store.resolve("crafted:parent")


def test_without_a_driver_the_name_is_the_image_roots(judge: Judge) -> None:
    """A root outside a data-root: vfs by its folder's name, whose metadata is null anyway."""
    for image_id in judge.ids[:5]:
        assert image_attrs(judge.store, image_id, None) == judge.client.images.get(image_id).attrs


def test_overlay2_metadata_names_this_hosts_folders(judge: Judge, tmp_path: Path) -> None:
    """overlay2's GetMetadata for the top layer's cache-id, on a made overlay2 home: the
    other fields stay the engine's."""
    image_id = WEB_1
    top = judge.store.get(image_id).chain_id
    assert top is not None
    cache = (judge.store.root.path / "layerdb" / "sha256" / top[7:] / "cache-id").read_text()
    home = tmp_path / "overlay2"
    (home / "l").mkdir(parents=True)
    for name, link in ((cache, "TOP"), ("mid", "MID"), ("base", "BASE")):
        (home / name / "diff").mkdir(parents=True)
        os.symlink(f"../{name}/diff", home / "l" / link)
    (home / cache / "lower").write_text("l/MID:l/BASE")
    mine = image_attrs(judge.store, image_id, Driver("overlay2", home))
    theirs = judge.client.images.get(image_id).attrs
    assert mine["GraphDriver"] == {"Name": "overlay2", "Data": {
        "LowerDir": f"{home}/mid/diff:{home}/base/diff", "MergedDir": f"{home}/{cache}/merged",
        "UpperDir": f"{home}/{cache}/diff", "WorkDir": f"{home}/{cache}/work"}}
    assert {**mine, "GraphDriver": theirs["GraphDriver"]} == theirs
    assert driver_metadata(Driver("overlay2", home), "base") == {
        "MergedDir": f"{home}/base/merged", "UpperDir": f"{home}/base/diff",
        "WorkDir": f"{home}/base/work"}
    gone = f"stat {home}/gone: no such file or directory"
    with pytest.raises(ImageStoreError, match=re.escape(gone)):
        driver_metadata(Driver("overlay2", home), "gone")
    (home / "mid" / "lower").write_text("l/NOPE")
    with pytest.raises(ImageStoreError, match=re.escape(f"readlink {home}/l/NOPE: no such file")):
        driver_metadata(Driver("overlay2", home), "mid")


# -- docker images ----------------------------------------------------------------------------
LISTS: list[dict[str, Any] | None] = [
    None, {},
    {"dangling": True}, {"dangling": False}, {"dangling": "true"}, {"dangling": ["true", "false"]},
    {"dangling": []},
    {"label": "org.example.app"}, {"label": "org.example.app=web"}, {"label": "x"},
    {"label": ["org.example.app", "org.example.stage=prod"]}, {"label": "e="},
    {"label": "nope"}, {"label": []},
    {"before": "web:1.0"}, {"before": "crafted:child"}, {"before": WEB_1},
    {"before": WEB_1[7:19]}, {"since": "bb:1.35"}, {"since": "crafted:parent"},
    {"since": "digested@" + DIGEST}, {"before": "web:prod", "since": "web:1.0"},
    {"before": "web:1.0@" + DIGEST},
    {"reference": "web"}, {"reference": "web*"}, {"reference": "web:*"},
    {"reference": ["web", "api:*"]}, {"reference": "*"}, {"reference": "*/*"},
    {"reference": "*/team/*"}, {"reference": "registry.example.com/*/api:1.0"},
    {"reference": "[a-c]*"}, {"reference": "w?b*"}, {"reference": "[^w]*"},
    {"reference": "web@sha256:*"}, {"reference": "digested*"}, {"reference": "crafted:[a-p]*"},
    {"reference": "\\web"}, {"reference": "docker.io/library/web"}, {"reference": []},
    {"dangling": True, "reference": "digested*"}, {"dangling": True, "reference": "web*"},
    {"dangling": False, "label": "org.example.app"},
    {"reference": "web*", "before": "web:prod"}, {"reference": "*", "label": "org.example.app"},
]


def _by_second(ids: list[str], created: dict[str, int]) -> list[tuple[int, frozenset[str]]]:
    """The listing as runs of one creation second: the engine orders seconds, not images
    within one."""
    runs: list[tuple[int, set[str]]] = []
    for image_id in ids:
        if runs and runs[-1][0] == created[image_id]:
            runs[-1][1].add(image_id)
        else:
            runs.append((created[image_id], {image_id}))
    return [(second, frozenset(members)) for second, members in runs]


@pytest.mark.parametrize("filters", LISTS, ids=[repr(f) for f in LISTS])
@pytest.mark.parametrize("all_images", [False, True], ids=["heads", "all"])
def test_list_is_the_engines(judge: Judge, all_images: bool,
                             filters: dict[str, Any] | None) -> None:
    theirs = [i.id for i in judge.client.images.list(all=all_images, filters=filters)]
    mine = select_images(judge.store, all=all_images, filters=filters)
    assert _by_second(mine, judge.created) == _by_second(theirs, judge.created)


REFUSED: list[dict[str, Any]] = [
    {"until": "24h"}, {"foo": "x"}, {"dangling": "1"}, {"dangling": "True"},
    {"before": "nosuch"}, {"since": "sha256:" + "0" * 64}, {"since": "0" * 64},
    {"before": "FOO"}, {"before": ""},
    {"reference": "["}, {"reference": "web\\"}, {"reference": "[]a]"}, {"reference": "*[z-"},
]


@pytest.mark.parametrize("filters", REFUSED, ids=[repr(f) for f in REFUSED])
def test_what_the_engine_refuses_is_refused_alike(judge: Judge, filters: dict[str, Any]) -> None:
    with pytest.raises(docker.errors.APIError) as theirs:
        judge.client.api.images(filters=filters)
    with pytest.raises(ImageStoreError) as mine:
        select_images(judge.store, filters=filters)
    assert str(mine.value) == theirs.value.explanation


def test_an_ambiguous_prefix_is_no_such_image(judge: Judge) -> None:
    prefix = next(c for c in "0123456789abcdef"
                  if sum(i[7] == c for i in judge.ids) > 1)
    with pytest.raises(docker.errors.ImageNotFound) as theirs:
        judge.client.api.images(filters={"before": prefix})
    with pytest.raises(ImageStoreError) as mine:
        select_images(judge.store, filters={"before": prefix})
    assert str(mine.value) == theirs.value.explanation == f"No such image: {prefix}:latest"


# -- Go's path.Match, on its own --------------------------------------------------------------
# Go's src/path/match_test.go, the whole table.
GO_MATCH_TESTS: list[tuple[str, str, bool | None]] = [  # None: ErrBadPattern
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True),
    ("a*", "abc", True), ("a*", "ab/c", False), ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False), ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True), ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False), ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False), ("ab[c]", "abc", True), ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True), ("a\\*b", "a*b", True), ("a\\*b", "ab", False),
    ("a?b", "a\u263ab", True), ("a[^a]b", "a\u263ab", True), ("a???b", "a\u263ab", False),
    ("a[^a][^a][^a]b", "a\u263ab", False), ("[a-\u03b6]*", "\u03b1", True),
    ("*[a-\u03b6]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True),
    ("[x\\-]", "-", True), ("[x\\-]", "z", False), ("[\\-x]", "x", True),
    ("[\\-x]", "-", True), ("[\\-x]", "a", False), ("[]a]", "]", None), ("[-]", "-", None),
    ("[x-]", "x", None), ("[x-]", "-", None), ("[x-]", "z", None), ("[-x]", "x", None),
    ("[-x]", "-", None), ("[-x]", "a", None), ("\\", "a", None), ("[a-b-c]", "a", None),
    ("[", "a", None), ("[^", "a", None), ("[^bc", "a", None), ("a[", "a", None),
    ("a[", "ab", None), ("a[", "x", None), ("a/b[", "x", None), ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "name", "matched"), GO_MATCH_TESTS)
def test_path_match_is_gos(pattern: str, name: str, matched: bool | None) -> None:
    if matched is None:
        with pytest.raises(ValueError, match=r"^syntax error in pattern$"):
            path_match(pattern, name)
    else:
        assert path_match(pattern, name) is matched
