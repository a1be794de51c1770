"""`fsck` and the graph driver's folders: what nothing uses (with its size), what is gone,
deletes left half done; BuildKit's folders are never orphans, and when BuildKit's records
cannot be read no unreferenced folder is called one. `--repair` removes orphans and finishes
deletes, nothing else. `fsck --layers` rebuilds every layer's tar and names each file that
does not match. Without `--repair`, fsck changes nothing."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from engine import ROOT_A, Engine, unpack_root_a
from test_prune import apparent
from test_rm import Killed, overlay_root

import imagestore
from imagestore.moby.drivers import Driver

ROOT_A_BUILDKIT = ROOT_A.with_name("root-A-buildkit.tar.xz")


@pytest.fixture
def buildkit_root(tmp_path: Path) -> Path:
    subprocess.run(["tar", "-xJf", str(ROOT_A_BUILDKIT), "-C", str(tmp_path)], check=True)
    return tmp_path / "root-A"


def everything(data_root: Path) -> dict[str, str]:
    """Every entry of the data-root but the engine's logs, as comparable values."""
    out = {}
    for folder, dirs, files in os.walk(data_root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(data_root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
            else:
                out[rel] = "dir" if p.is_dir() else "special"
    return out


def findings(capsys: pytest.CaptureFixture[str], root: Path, *flags: str) -> tuple[
        int, list[dict[str, Any]]]:
    result = run_cli(capsys, root, "fsck", "--json", *flags)
    return result.code, result.json()["findings"]


def stray(data_root: Path) -> Path:
    folder = data_root / "vfs" / "dir" / ("f" * 64)
    (folder / "etc").mkdir(parents=True)
    (folder / "etc" / "data").write_bytes(b"x" * 1234)
    (folder / "etc" / "hosts").symlink_to("/etc/hosts")
    return folder


def test_buildkit_folders_are_not_orphans(capsys: pytest.CaptureFixture[str],
                                          buildkit_root: Path) -> None:
    root = buildkit_root / "image" / "vfs"
    layers = {(root / "layerdb/sha256" / n / "cache-id").read_text()
              for n in os.listdir(root / "layerdb/sha256")}
    assert len(set(os.listdir(buildkit_root / "vfs/dir")) - layers - {
        m + s for m in os.listdir(buildkit_root / "containers") for s in ("", "-init")}) >= 3
    assert findings(capsys, root) == (0, [])


def test_a_stray_folder_is_an_orphan_and_repair_removes_only_it(
        capsys: pytest.CaptureFixture[str], buildkit_root: Path) -> None:
    root = buildkit_root / "image" / "vfs"
    folder = stray(buildkit_root)
    code, found = findings(capsys, root)
    assert code == 1
    assert [(f["check"], f["path"]) for f in found] == [("orphan-driver-data", str(folder))]
    assert "1234 bytes" in found[0]["message"]
    others = {n: apparent(buildkit_root / "vfs/dir" / n)
              for n in os.listdir(buildkit_root / "vfs/dir") if n != folder.name}
    repaired = run_cli(capsys, root, "fsck", "--repair", "--json")
    assert repaired.code == 0, repaired.out
    assert [f["path"] for f in repaired.json()["repaired"]] == [str(folder)]
    assert not folder.exists() and Path("/etc/hosts").exists()
    assert {n: apparent(buildkit_root / "vfs/dir" / n)
            for n in os.listdir(buildkit_root / "vfs/dir")} == others
    assert findings(capsys, root) == (0, [])
    # The engine still builds from BuildKit's cache on the repaired root.
    engine = Engine(buildkit_root).start()
    try:
        assert engine.docker("run", "--rm", "tool:1.0", "sh", "-c", "echo ok").stdout == "ok\n"
        assert "ERROR" not in engine.docker("system", "df").stdout
    finally:
        engine.stop()


def test_unreadable_snapshots_db_keeps_every_unreferenced_folder_and_says_why(
        capsys: pytest.CaptureFixture[str], buildkit_root: Path) -> None:
    root = buildkit_root / "image" / "vfs"
    folder = stray(buildkit_root)
    db = buildkit_root / "buildkit" / "snapshots.db"
    db.write_bytes(db.read_bytes()[:5000])
    code, found = findings(capsys, root)
    assert code == 1
    assert {f["check"] for f in found} == {"unclaimed-driver-data"}
    assert str(folder) in {f["path"] for f in found} and len(found) >= 4
    assert all("snapshots.db" in f["message"] and "BuildKit" in f["action"] for f in found)
    before = everything(buildkit_root)
    repaired = run_cli(capsys, root, "fsck", "--repair", "--json")
    assert repaired.code == 1 and repaired.json()["repaired"] == []
    assert everything(buildkit_root) == before


def test_an_unfinished_delete_is_one_finding_and_repair_releases_its_data(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, index: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    with imagestore.open(root, index) as store:
        image_id = store.resolve("committed:1")
        chain = store.get(image_id).chain_id
        assert chain is not None
        cache = (root / "layerdb/sha256" / chain[7:] / "cache-id").read_text()

        def crash(self: Driver, driver_id: str) -> int:
            raise Killed("killed between the rename and the release")

        store.drop_references([image_id])
        with monkeypatch.context() as m:
            m.setattr(Driver, "release", crash)
            with pytest.raises(Killed):
                store.delete(image_id)
    [left] = (root / "layerdb/sha256").glob("*-removing")
    before = everything(data_root)
    code, found = findings(capsys, root)
    assert code == 1
    assert [(f["check"], f["path"]) for f in found] == \
        [("unfinished-removal", f"layerdb/sha256/{left.name}")]
    assert cache in found[0]["message"]
    assert everything(data_root) == before
    repaired = run_cli(capsys, root, "fsck", "--repair")
    assert repaired.code == 0, repaired.out
    assert not left.exists() and not (data_root / "vfs/dir" / cache).exists()
    assert findings(capsys, root) == (0, [])


def test_a_layer_whose_folder_is_gone_is_named_and_left_alone(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    chain = sorted(os.listdir(root / "layerdb/sha256"))[0]
    cache = (root / "layerdb/sha256" / chain / "cache-id").read_text()
    subprocess.run(["rm", "-rf", str(data_root / "vfs/dir" / cache)], check=True)
    code, found = findings(capsys, root)
    assert code == 1
    assert [(f["check"], chain in f["message"]) for f in found] == \
        [("missing-driver-data", True)]
    assert run_cli(capsys, root, "fsck", "--repair").code == 1
    assert findings(capsys, root)[1] == found


def test_overlay2_dangling_links_are_found_and_removed(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path, index: Path) -> None:
    data_root = tmp_path / "docker"
    overlay_root(data_root, index)
    root = data_root / "image" / "overlay2"
    links = data_root / "overlay2" / "l"
    (links / "GONE").symlink_to("../" + "0" * 64 + "/diff")
    (links / "ESCAPE").symlink_to("/etc")
    result = run_cli(capsys, root, "fsck", "--json", index=index)
    assert result.code == 1
    assert sorted((f["check"], Path(f["path"]).name) for f in result.json()["findings"]) == \
        [("dangling-driver-link", "ESCAPE"), ("dangling-driver-link", "GONE")]
    assert run_cli(capsys, root, "fsck", "--repair", index=index).code == 0
    assert not (links / "GONE").is_symlink() and not (links / "ESCAPE").is_symlink()
    assert Path("/etc").is_dir() and len(os.listdir(links)) == 2


def _members(layer: Path) -> list[str]:
    """The names of the files with bytes that a layer's tar-split lists."""
    with gzip.open(layer / "tar-split.json.gz", "rt") as f:
        entries = [json.loads(line) for line in f]
    return [e["name"] for e in entries if e["type"] == 1 and e.get("size")]


def test_fsck_layers_names_each_missing_or_changed_file(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    data_root = unpack_root_a(tmp_path)
    root = data_root / "image" / "vfs"
    assert findings(capsys, root, "--layers") == (0, [])
    damaged = {}
    for chain in sorted(os.listdir(root / "layerdb/sha256")):
        members = _members(root / "layerdb/sha256" / chain)
        if members:
            damaged[chain] = members[0]
        if len(damaged) == 2:
            break
    (changed, changed_member), (gone, gone_member) = damaged.items()
    folder = data_root / "vfs/dir"
    with (folder / (root / "layerdb/sha256" / changed / "cache-id").read_text()
          / changed_member).open("ab") as f:
        f.write(b"!")
    (folder / (root / "layerdb/sha256" / gone / "cache-id").read_text() / gone_member).unlink()
    before = everything(data_root)
    code, found = findings(capsys, root, "--layers")
    assert code == 1
    named = {(f["check"], f["path"]) for f in found}
    # A vfs folder holds its parents' files too: a child layer may name the same file.
    assert ("layer-data", f"layerdb/sha256/{changed}#{changed_member}") in named
    assert ("layer-data", f"layerdb/sha256/{gone}#{gone_member}") in named
    # The path names layer and file, root-relative; the message says what is wrong, once.
    assert all(f["check"] == "layer-data" and "sha256:" not in f["message"]
               and str(data_root) not in f["message"] + f["path"] for f in found)
    assert findings(capsys, root) == (0, [])  # without --layers, the files are not read
    assert everything(data_root) == before


def test_fsck_layers_outside_a_data_root_warns(capsys: pytest.CaptureFixture[str],
                                               real_root: Path) -> None:
    result = run_cli(capsys, real_root, "fsck", "--layers")
    assert result.code == 0 and "cannot be checked" in result.err


def test_an_image_root_copied_without_its_driver_data_is_not_all_missing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`image/vfs` taken alone (as the bundled store is): no `vfs/` beside `image/` at all
    says nothing about any one layer; fsck says so once instead of naming every layer."""
    data_root = unpack_root_a(tmp_path)
    subprocess.run(["rm", "-rf", str(data_root / "vfs")], check=True)
    root = data_root / "image" / "vfs"
    result = run_cli(capsys, root, "fsck", "--layers")
    assert result.code == 0
    assert result.err.count("no graph-driver data at") == 1
    assert "missing-driver-data" not in result.out and "layer-data" not in result.out
