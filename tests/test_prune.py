"""`imagestore prune` is `docker image prune` without the daemon: on two copies of one
data-root, the engine (its API, or its CLI for the text) and imagestore, given the same flags,
pick, skip and delete the same images, reclaim the same space and leave the same files; then
the engine runs on what imagestore left. Beyond docker: `--dry-run`, `--unused-for`."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from engine import ROOT_A, Engine, unpack_root_a

import imagestore


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def api_prune(engine: Engine, filters: dict[str, list[str]]) -> dict[str, Any]:
    """``POST /images/prune``: the engine's own answer, exactly (``SpaceReclaimed`` too)."""
    conn = _UnixHTTP(str(engine.sock))
    try:
        conn.request("POST", "/images/prune?filters=" + urllib.parse.quote(json.dumps(filters)))
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        report: dict[str, Any] = json.loads(body)
        return report
    finally:
        conn.close()


def disk(data_root: Path) -> dict[str, str]:
    """The image root and the driver's folders as comparable values (files by digest)."""
    out = {}
    for base in ("image/vfs", "vfs/dir"):
        for folder, dirs, files in os.walk(data_root / base):
            for name in dirs + files:
                p = Path(folder) / name
                rel = str(p.relative_to(data_root))
                if p.is_symlink():
                    out[rel] = "-> " + os.readlink(p)
                elif p.is_dir():
                    out[rel] = "dir"
                elif p.is_file():
                    out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[rel] = f"special {p.lstat().st_mode:o}"
    return out


def apparent(path: Path) -> int:
    return sum(p.lstat().st_size for folder, _, files in os.walk(path)
               for p in (Path(folder) / f for f in files) if p.is_file() and not p.is_symlink())


def prune_flags(filters: dict[str, list[str]]) -> list[str]:
    """The imagestore (and docker CLI) flags for an API filter set."""
    flags = ["-a"] if filters.get("dangling") == ["false"] else []
    return flags + [a for key, values in filters.items() if key != "dangling"
                    for v in values for a in ("--filter", f"{key}={v}")]


def newest_created(data_root: Path) -> datetime:
    """The newest ``created`` among the root's image configs."""
    content = data_root / "image" / "vfs" / "imagedb" / "content" / "sha256"
    return max(datetime.fromisoformat(json.loads(p.read_bytes())["created"][:19] + "+00:00")
               for p in content.iterdir())


def steps(newest: datetime) -> list[tuple[dict[str, list[str]], bool]]:
    """Each step runs on the state the previous ones left, on both copies; the engine
    answers through its API (exact JSON), or through its CLI (the text docker users read).

    Times come from the fixture, never from today's date: ``until`` as a duration reaches
    an hour past the newest image (the engine and imagestore each subtract it from their own
    clock, seconds apart), so every image is old enough, whenever the test runs."""
    margin = datetime.now(timezone.utc) - newest - timedelta(hours=1)
    return [
        ({"dangling": ["true"], "label!": ["org.example.app"]}, False),
        # web:1.0 is untagged, then its delete is refused (it has a child): the untag stays.
        ({"dangling": ["false"], "label": ["org.example.app=web"],
          "until": ["2026-11-30T00:04:40Z"]}, False),
        ({"dangling": ["false"], "label": ["org.example.app"],
          "label!": ["org.example.app=web"]}, True),
        ({"dangling": ["false"], "until": [f"{int(margin.total_seconds())}s"]}, False),
        ({"dangling": ["true"]}, True),
    ]


def unpack(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(dest)], check=True)
    return dest / "root-A"


@pytest.mark.parametrize("archive", [ROOT_A, ROOT_A.with_name("root-A-buildkit.tar.xz")],
                         ids=["legacy-builder", "buildkit"])
def test_prune_picks_skips_and_deletes_what_the_engine_does(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path,
        archive: Path) -> None:
    theirs = unpack(archive, tmp_path / "engine")
    ours = unpack(archive, tmp_path / "ours")
    root = ours / "image" / "vfs"
    engine = Engine(theirs).start()
    try:
        for filters, by_cli in steps(newest_created(theirs)):
            flags = prune_flags(filters)
            if by_cli:
                printed = engine.docker("image", "prune", "-f", *flags).stdout.splitlines()
                mine = run_cli(capsys, root, "prune", *flags, index=index)
                assert mine.code == 0, mine.err
                # Same lines (the engine's order is its map's), same total, same layout.
                assert sorted(mine.out.splitlines()) == sorted(printed), filters
                assert mine.out.splitlines()[-1] == printed[-1], filters
                assert printed[-1].startswith("Total reclaimed space: ")
            else:
                report = api_prune(engine, filters)
                mine = run_cli(capsys, root, "prune", *flags, "--json", index=index)
                assert mine.code == 0, mine.err
                got, items = mine.json(), report["ImagesDeleted"] or []
                assert set(got["untagged"]) == {i["Untagged"] for i in items
                                                if i.get("Untagged")}, filters
                assert set(got["deleted"]) | set(got["layers_removed"]) == \
                    {i["Deleted"] for i in items if i.get("Deleted")}, filters
                assert got["space_reclaimed"] == report["SpaceReclaimed"], filters
                assert items, filters  # every API step deletes something
            assert disk(ours) == disk(theirs), filters
        # While the engine owns its root, imagestore refuses to prune it.
        before = disk(theirs)
        refused = run_cli(capsys, theirs / "image" / "vfs", "prune", "-a",
                          index=tmp_path / "other.sqlite")
        assert refused.code == 1 and "dockerd" in refused.err
        assert len(refused.err.strip().splitlines()) == 1
        assert disk(theirs) == before
        expected = sorted(map(json.dumps, engine.images("-a")))
    finally:
        engine.stop()
    # The engine is at home in what imagestore left.
    engine = Engine(ours).start()
    try:
        assert sorted(map(json.dumps, engine.images("-a"))) == expected
        assert engine.docker("run", "--rm", "tool:1.0", "sh", "-c", "echo ok").stdout == "ok\n"
        again = engine.docker("image", "prune", "-a", "-f").stdout
        assert again.strip().splitlines()[-1] == "Total reclaimed space: 0B"
    finally:
        engine.stop()


def test_dry_run_plans_exactly_what_a_run_does_and_changes_nothing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    before = disk(data_root)
    folders = {p.name: apparent(p) for p in (data_root / "vfs" / "dir").iterdir()}
    planned = run_cli(capsys, root, "prune", "-a", "--dry-run", "--json", index=index)
    assert planned.code == 0, planned.err
    assert disk(data_root) == before
    text = run_cli(capsys, root, "prune", "-a", "--dry-run", index=index)
    assert "Total reclaimable space" in text.out and "keep  " in text.out
    assert disk(data_root) == before
    done = run_cli(capsys, root, "prune", "-a", "--json", index=index)
    assert done.code == 0, done.err
    plan, result = planned.json(), done.json()
    assert plan.pop("dry_run") is True
    assert plan == result
    assert {e["action"] for e in plan["plan"]} == {"delete", "keep"}
    assert all(e["reason"] for e in plan["plan"])
    gone = set(folders) - {p.name for p in (data_root / "vfs" / "dir").iterdir()}
    assert gone and result["driver_bytes"] == sum(folders[name] for name in gone)
    assert set(result) == {"deleted", "untagged", "layers_removed", "space_reclaimed",
                           "driver_bytes", "plan"}


def _age(store: imagestore.Store, when: datetime) -> None:
    """Every image arrived (and was tagged) at ``when``."""
    stamp = when.timestamp()
    for image_id in store.map():
        os.utime(store.root.path / "imagedb/content/sha256" / image_id[7:], (stamp, stamp))
        if store.get_last_updated(image_id) is not None:
            store.set_last_updated(image_id, when)


def test_unused_for_keeps_images_used_tagged_or_arrived_recently(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    now = datetime.now(timezone.utc)
    with imagestore.open(root, index) as store:
        _age(store, now - timedelta(days=30))
        web_alt, committed = store.resolve("web-alt:1.0"), store.resolve("committed:1")

    def plan(*flags: str) -> dict[str, dict[str, Any]]:
        result = run_cli(capsys, root, "prune", "-a", "--dry-run", "--json", *flags,
                         index=index)
        assert result.code == 0, result.err
        return {e["id"]: e for e in result.json()["plan"]}

    everything = plan()
    assert {i: e["action"] for i, e in plan("--unused-for", "7d").items()} == \
        {i: e["action"] for i, e in everything.items()}
    assert any(e["action"] == "delete" for e in everything.values())
    assert all(e["action"] == "keep" for e in plan("--unused-for", "31d").values())
    os.utime(root / "imagedb/content/sha256" / web_alt[7:])  # arrived just now
    with imagestore.open(root, index) as store:
        store.set_last_updated(committed)  # tagged just now
        above, step = set(), store.get_parent(web_alt)
        while step is not None:
            above.add(step)
            step = store.get_parent(step)
    recent = plan("--unused-for", "7d")
    assert recent[web_alt]["action"] == "keep" and "arrived" in recent[web_alt]["reason"]
    assert recent[committed]["action"] == "keep" and "tagged" in recent[committed]["reason"]
    assert recent[committed]["last_used"] is not None
    # What they keep is theirs and web-alt's parents (a child keeps them); nothing else.
    assert {i for i in everything if everything[i]["action"] != recent[i]["action"]} == \
        {web_alt, committed} | above
    assert run_cli(capsys, root, "prune", "--unused-for", "soon", index=index).code == 2


def test_an_unknown_driver_is_refused_before_anything(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, index: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    (data_root / "image" / "vfs").rename(data_root / "image" / "btrfs")
    shutil.move(data_root / "vfs", data_root / "btrfs")
    root = data_root / "image" / "btrfs"
    before = (root / "repositories.json").read_bytes(), sorted(os.listdir(root / "layerdb/sha256"))
    for flags in (["-a"], ["-a", "--dry-run"]):
        result = run_cli(capsys, root, "prune", *flags, index=index)
        assert result.code == 1
        assert len(result.err.strip().splitlines()) == 1 and "'btrfs'" in result.err
    assert ((root / "repositories.json").read_bytes(),
            sorted(os.listdir(root / "layerdb/sha256"))) == before


@pytest.mark.parametrize("bad", ["dangle=true", "until", "label"])
def test_filters_docker_does_not_accept_are_refused(capsys: pytest.CaptureFixture[str],
                                                    real_root: Path, bad: str) -> None:
    result = run_cli(capsys, real_root, "prune", "--filter", bad)
    assert result.code == 1 and "invalid filter" in result.err
    two = run_cli(capsys, real_root, "prune", "--filter", "until=1h", "--filter", "until=2h")
    assert two.code == 1 and "more than one until" in two.err
