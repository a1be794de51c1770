"""`imagestore rm` is `docker rmi` without the daemon (moby's ImageDelete): on two copies of
one data-root, the engine and imagestore print the same Untagged/Deleted lines, refuse with the
same conflicts and leave the same files. A deleted layer's driver data goes as the engine's
driver removes it (vfs, overlay2), never beyond the layer's own files, and nothing at all is
deleted while something is mounted under the driver's folder or the driver is unknown."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli
from engine import Engine, unpack_root_a
from test_prune import apparent, disk

import imagestore
from imagestore.errors import ImageStoreError, UnsupportedDriver
from imagestore.moby import drivers
from imagestore.moby.drivers import Driver

# Each runs on the state the previous ones left, on both copies.
STEPS = [
    ["devbase:1.0"],  # another tag remains: untag only
    ["bb:1.35"],  # a stopped container uses it: the reference stays
    ["55f3ce50d536"],  # by ID, one tag left, children: cannot be forced
    ["--no-prune", "web:prod"],  # its untagged parents stay
    ["web:1.0"],  # untagged, but a child keeps the image
    ["513de43a1d87"],  # by ID: deleted, and the untagged parents left without children
    ["e167defb12c1"],  # by ID, stopped container: must be forced
    ["-f", "tool:1.0"],  # forced past a stopped container; the container keeps its layers
    ["-f", "e167defb12c1"],  # children cannot be forced
    ["nope:1"],
    ["-f", "nope:1"],  # not found is no error when forced
    ["api:1.0", "registry.example.com/team/api:1.0"],  # the second reference deletes it
    ["scratchy"],  # :latest
    ["sha256:b3cb2d7ee462"],  # an ID prefix: every reference goes with it
    ["api:nocache"],
    ["987adf6212f8", "committed:1"],
]


def _errors(text: str, prefix: str) -> list[str]:
    return [line.removeprefix(prefix) for line in text.splitlines()]


def _both(engine: Engine, capsys: pytest.CaptureFixture[str], root: Path, index: Path,
          args: list[str]) -> None:
    theirs = engine.docker("rmi", *args, check=False)
    ours = run_cli(capsys, root, "rm", *args, index=index)
    assert (ours.code, ours.out) == (theirs.returncode, theirs.stdout), args
    assert _errors(ours.err, "imagestore: ") == \
        _errors(theirs.stderr, "Error response from daemon: "), args


def test_rm_untags_deletes_and_refuses_as_docker_rmi(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path, index: Path) -> None:
    theirs = unpack_root_a(tmp_path / "engine")
    ours = unpack_root_a(tmp_path / "ours")
    engine = Engine(theirs).start()
    try:
        for args in STEPS:
            _both(engine, capsys, ours / "image" / "vfs", index, args)
            assert disk(ours) == disk(theirs), args
    finally:
        engine.stop()


def test_rm_with_a_running_container_as_docker_rmi(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path, index: Path) -> None:
    """The engine's container files, copied while it runs, are what imagestore judges by:
    never the image of a running container, even forced (the reference may go)."""
    theirs = unpack_root_a(tmp_path / "engine")
    ours = unpack_root_a(tmp_path / "ours")
    engine = Engine(theirs).start()
    try:
        started = engine.docker("run", "-d", "--name", "busy", "tool:1.0", "busybox", "sleep",
                                "600", check=False)
        if started.returncode != 0:
            pytest.skip(f"no container can run here: {started.stderr.strip()[:200]}")
        cid = started.stdout.strip()
        config = theirs / "containers" / cid / "config.v2.json"
        assert json.loads(config.read_text())["State"]["Running"] is True
        (ours / "containers" / cid).mkdir()
        shutil.copy(config, ours / "containers" / cid / "config.v2.json")
        shutil.copytree(theirs / "image/vfs/layerdb/mounts" / cid,
                        ours / "image/vfs/layerdb/mounts" / cid)
        for args in (["-f", "aab6b0931984"], ["aab6b0931984"], ["-f", "tool:1.0"],
                     ["-f", "aab6b0931984"]):
            _both(engine, capsys, ours / "image" / "vfs", index, args)
        engine.docker("rm", "-f", "busy")
    finally:
        engine.stop()


# -- release through the graph driver -------------------------------------------------------
def hex64(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def overlay_root(data_root: Path, index: Path) -> dict[str, str]:
    """An overlay2 data-root as the engine lays it out: a base layer (image base:1) and a top
    layer on it (image app:1); the driver IDs by role."""
    image_root, home = data_root / "image" / "overlay2", data_root / "overlay2"
    ids: dict[str, str] = {}
    chain = None
    diffs = {"base": "sha256:" + hex64("diff-base"), "top": "sha256:" + hex64("diff-top")}
    for role in ("base", "top"):
        ids[role] = driver_id = hex64("cache-" + role)
        link = hex64("link-" + role)[:26].upper()
        (home / driver_id / "diff" / role).mkdir(parents=True)
        (home / driver_id / "diff" / role / "file").write_bytes(role.encode() * 100)
        (home / driver_id / "link").write_text(link)
        (home / "l").mkdir(exist_ok=True)
        (home / "l" / link).symlink_to(f"../{driver_id}/diff")
        chain = diffs[role] if chain is None else "sha256:" + hashlib.sha256(
            f"{chain} {diffs[role]}".encode()).hexdigest()
        folder = image_root / "layerdb" / "sha256" / chain[7:]
        folder.mkdir(parents=True)
        (folder / "diff").write_text(diffs[role])
        (folder / "size").write_text("100")
        (folder / "cache-id").write_text(driver_id)
        if role == "top":
            (folder / "parent").write_text(diffs["base"])
        ids[role + "-chain"] = chain
    (image_root / "layerdb" / "mounts").mkdir()
    with imagestore.open(image_root, index) as store:
        tags = {}
        for name, diff_ids in (("base:1", [diffs["base"]]), ("app:1", list(diffs.values()))):
            doc = {"architecture": "amd64", "os": "linux", "created": "2026-11-30T00:00:00Z",
                   "rootfs": {"type": "layers", "diff_ids": diff_ids}}
            tags[name] = ids[name] = store.create(json.dumps(doc).encode())
    repos = {name.split(":")[0]: {name: image_id} for name, image_id in tags.items()}
    (image_root / "repositories.json").write_text(json.dumps({"Repositories": repos}))
    return ids


def test_rm_releases_overlay2_data_through_its_link(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, index: Path) -> None:
    ids = overlay_root(tmp_path / "docker", index)
    root, home = tmp_path / "docker" / "image" / "overlay2", tmp_path / "docker" / "overlay2"
    top_bytes = apparent(home / ids["top"])
    links = {role: (home / ids[role] / "link").read_text() for role in ("base", "top")}
    result = run_cli(capsys, root, "rm", "app:1", "--json", index=index)
    assert result.code == 0, result.err
    assert result.json() == {"deleted": [ids["app:1"]], "untagged": ["app:1"],
                             "layers_removed": [ids["top-chain"]], "driver_bytes": top_bytes}
    assert not (home / ids["top"]).exists() and not (home / "l" / links["top"]).is_symlink()
    assert (home / ids["base"] / "diff" / "base" / "file").exists()  # base:1 still uses it
    assert not list((root / "layerdb" / "sha256").glob("*-removing"))
    text = run_cli(capsys, root, "rm", "base:1", index=index)
    assert text.out.splitlines() == ["Untagged: base:1", f"Deleted: {ids['base:1']}",
                                     f"Deleted: {ids['base-chain']}"]
    assert sorted(os.listdir(home)) == ["l"] and os.listdir(home / "l") == []


@pytest.mark.parametrize("link", ["../../etc", "", "SOMEONE-ELSES"])
def test_rm_refuses_a_hostile_overlay2_link_before_anything(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path, link: str) -> None:
    data_root = tmp_path / "docker"
    ids = overlay_root(data_root, index)
    root = data_root / "image" / "overlay2"
    (data_root / "overlay2" / ids["top"] / "link").write_text(link)
    if link == "SOMEONE-ELSES":
        (data_root / "overlay2" / "l" / link).symlink_to(f"../{ids['base']}/diff")
    before = _tree(data_root)
    for args in (["app:1"], ["-f", ids["app:1"]]):
        result = run_cli(capsys, root, "rm", *args, index=index)
        assert result.code == 1 and result.out == ""
        assert len(result.err.strip().splitlines()) == 1 and "refusing" in result.err
        assert _tree(data_root) == before  # not even the tag went
    planned = run_cli(capsys, root, "prune", "-a", "--dry-run", "--json", index=index).json()
    assert ids["app:1"] not in planned["deleted"]


def _tree(path: Path) -> dict[str, str]:
    out = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(folder) / name
            out[str(p.relative_to(path))] = ("-> " + os.readlink(p) if p.is_symlink() else
                                             "dir" if p.is_dir() else p.read_bytes().hex())
    return out


def test_library_delete_releases_driver_data(tmp_path: Path, index: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    with imagestore.open(data_root / "image" / "vfs", index) as store:
        image_id = store.resolve("scratchy:latest")
        chain = store.get(image_id).chain_id
        assert chain is not None
        cache = (store.root.layerdb.layers / chain[7:] / "cache-id").read_text()
        expected = apparent(data_root / "vfs" / "dir" / cache)
        # Its parents hold the same top layer (config-only steps): the last one releases it.
        chain_of_images = [image_id]
        while (parent := store.get_parent(chain_of_images[-1])) is not None:
            chain_of_images.append(parent)
        for held in chain_of_images[:-1]:
            assert store.delete(held) == []
            assert (data_root / "vfs" / "dir" / cache).is_dir()
        done = store.delete_image(chain_of_images[-1])
        assert [layer.chain_id for layer in done.layers] == [chain]
        assert done.driver_bytes == expected > 0 and done.failures == ()
        assert not (data_root / "vfs" / "dir" / cache).exists()


def test_an_unknown_driver_is_refused_before_anything_is_deleted(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    (data_root / "image" / "vfs").rename(data_root / "image" / "zfs")
    root = data_root / "image" / "zfs"
    before = _tree(root)
    result = run_cli(capsys, root, "rm", "web:prod", index=index)
    assert result.code == 1 and "'zfs'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    with imagestore.open(root, index) as store, pytest.raises(UnsupportedDriver):
        store.delete(store.resolve("web:prod"))
    assert _tree(root) == before


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root-A data-root with a tmpfs mounted inside one of its driver folders."""
    data_root = unpack_root_a(tmp_path)
    point = next((data_root / "vfs" / "dir").iterdir()) / "mnt-test"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (point / "precious").write_text("through the mount")
        yield data_root, point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_nothing_is_deleted_while_the_driver_folder_has_a_mount(
        capsys: pytest.CaptureFixture[str], mounted: tuple[Path, Path], index: Path) -> None:
    data_root, point = mounted
    root = data_root / "image" / "vfs"
    before = disk(data_root)
    for args in (["rm", "web:prod"], ["prune", "-a"], ["rm", "-f", "tool:1.0"]):
        result = run_cli(capsys, root, *args, index=index)
        assert result.code == 1 and "mounted" in result.err, args
        assert len(result.err.strip().splitlines()) == 1
        assert disk(data_root) == before, args
    assert (point / "precious").read_text() == "through the mount"


class Killed(Exception):
    """The process dying at that point."""


def test_an_interrupted_delete_is_finished_by_the_next_write_not_by_a_read(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    with imagestore.open(root, index) as store:
        image_id = store.resolve("committed:1")  # the only image on its top layer
        chain = store.get(image_id).chain_id
        assert chain is not None
        cache = (store.root.layerdb.layers / chain[7:] / "cache-id").read_text()

        def crash(self: Driver, driver_id: str) -> int:
            raise Killed("killed between the rename and the release")

        with monkeypatch.context() as m:
            m.setattr(Driver, "release", crash)
            with pytest.raises(Killed):
                store.delete(image_id)
    [left] = (root / "layerdb" / "sha256").glob(f"{chain[7:]}-*-removing")
    before = disk(data_root)
    for args in (["ls", "-a"], ["fsck"], ["prune", "-a", "--dry-run"]):
        run_cli(capsys, root, *args, index=index)
        assert disk(data_root) == before, args
    assert run_cli(capsys, root, "rm", "web:prod", index=index).code == 0
    assert not left.exists() and not (data_root / "vfs" / "dir" / cache).exists()
    refs = drivers.read_references(imagestore.open(root, index).root.layerdb)
    assert refs.pending == {}


def test_a_layer_that_fails_to_go_is_reported_after_the_image_is_gone(
        tmp_path: Path, index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = unpack_root_a(tmp_path)
    with imagestore.open(data_root / "image" / "vfs", index) as store:
        image_id = store.resolve("committed:1")

        def fail(self: Driver, driver_id: str) -> int:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(Driver, "release", fail)
        with pytest.raises(ImageStoreError, match="was not removed"):
            store.delete(image_id)
        assert image_id not in store
