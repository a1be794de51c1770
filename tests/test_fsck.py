"""`imagestore fsck`: finds what is wrong with a root, repairs only what is safe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

import imagestore
from imagestore.moby.digest import digest_of


def test_clean_store_exits_0(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    result = run_cli(capsys, real_root, "fsck", "--json")
    assert result.code == 0, result.out
    assert result.json() == {"findings": [], "repaired": []}


def _damage(root: Path) -> dict[str, Path]:
    content = root / "imagedb/content/sha256"
    web_prod = json.loads((root / "repositories.json").read_text())["Repositories"]["web"]
    victim = content / web_prod["web:prod"][7:]  # a head: no child loses its parent
    victim.write_bytes(victim.read_bytes() + b" ")  # digest no longer matches
    temp = content / ".tmp-deadbeef123"
    temp.write_bytes(b"{")
    orphan = root / "imagedb/metadata/sha256" / ("e" * 64)
    orphan.mkdir()
    (orphan / "parent").write_text("sha256:" + "f" * 64)
    removing = root / "layerdb/sha256" / ("a" * 64 + "-0123-removing")
    removing.mkdir()
    return {"victim": victim, "temp": temp, "orphan": orphan, "removing": removing}


def test_fsck_lists_each_problem_with_an_action(capsys: pytest.CaptureFixture[str],
                                                real_root: Path) -> None:
    run_cli(capsys, real_root, "sync")
    damage = _damage(real_root)
    result = run_cli(capsys, real_root, "--readonly", "fsck", "--json")
    assert result.code == 1
    found = {(f["check"], f["path"]) for f in result.json()["findings"]}
    assert ("digest-mismatch", "imagedb/content/sha256/" + damage["victim"].name) in found
    assert ("temp-file", "imagedb/content/sha256/" + damage["temp"].name) in found
    assert ("orphan-metadata", "imagedb/metadata/sha256/" + "e" * 64) in found
    assert ("temp-file", "layerdb/sha256/" + damage["removing"].name) in found
    assert all(f["action"] for f in result.json()["findings"])


def test_index_disagreeing_with_disk_is_found(capsys: pytest.CaptureFixture[str],
                                              real_root: Path, index: Path) -> None:
    with imagestore.open(real_root, index) as store:
        image_id = store.resolve("web:prod")
    (real_root / "imagedb/content/sha256" / image_id[7:]).unlink()  # behind the index's back
    with imagestore.open(real_root, index, sync=False) as store:
        findings = store.check()
    assert any(f.check == "index" and f.path == image_id for f in findings)


def test_repair_fixes_only_what_is_safe(capsys: pytest.CaptureFixture[str],
                                        real_root: Path) -> None:
    damage = _damage(real_root)
    result = run_cli(capsys, real_root, "fsck", "--repair")
    assert result.code == 1  # the corrupt content file is left for a person to decide
    assert not damage["temp"].exists()
    assert not damage["orphan"].exists()
    assert not damage["removing"].exists()
    assert damage["victim"].exists()
    again = run_cli(capsys, real_root, "fsck", "--json").json()["findings"]
    assert [(f["check"], f["path"]) for f in again] == [
        ("digest-mismatch", "imagedb/content/sha256/" + damage["victim"].name)]


def test_readonly_fsck_cannot_repair(capsys: pytest.CaptureFixture[str],
                                     real_root: Path) -> None:
    _damage(real_root)
    result = run_cli(capsys, real_root, "--readonly", "fsck", "--repair")
    assert result.code == 1
    assert "read-only" in result.err or "readonly" in result.err
    assert list((real_root / "imagedb/content/sha256").glob(".tmp-*"))


def test_broken_layer_chain_and_dangling_parent(capsys: pytest.CaptureFixture[str],
                                                real_root: Path) -> None:
    inspect = run_cli(capsys, real_root, "inspect", "web:1.0").json()[0]
    meta = real_root / "imagedb/metadata/sha256" / inspect["id"][7:]
    (meta / "parent").write_text("sha256:" + "9" * 64)
    top = real_root / "layerdb/sha256" / inspect["chain_id"][7:]
    (top / "diff").write_text("sha256:" + "1" * 64)
    found = run_cli(capsys, real_root, "fsck", "--json").json()["findings"]
    checks = {(f["check"], f["path"]) for f in found}
    assert ("parent", f"imagedb/metadata/sha256/{inspect['id'][7:]}/parent") in checks
    assert ("layer-chain", f"imagedb/content/sha256/{inspect['id'][7:]}") in checks
    assert json.dumps(found)  # serialisable


def test_odd_diff_ids_are_reported_not_fatal(capsys: pytest.CaptureFixture[str],
                                             empty_root: Path) -> None:
    raw = b'{"rootfs": {"type": "layers", "diff_ids": ["", "sha256:' + b"1" * 64 + b'"]}}'
    import hashlib

    (empty_root / "imagedb/content/sha256" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    result = run_cli(capsys, empty_root, "fsck", "--json")
    assert result.code == 1
    kinds = {f["check"] for f in result.json()["findings"]}
    assert kinds == {"missing-layer"}


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under the root with its mode and (for files) bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[str(path.relative_to(root))] = (path.lstat().st_mode, data)
    return out


@pytest.mark.parametrize("args", [["fsck"], ["fsck", "--json"], ["ls", "-a"], ["sync"],
                                  ["sync", "--full"], ["tree"]])
def test_reading_commands_change_nothing_under_the_root(capsys: pytest.CaptureFixture[str],
                                                        real_root: Path,
                                                        args: list[str]) -> None:
    """Leftovers are findings, never silently removed by the open before the check; a
    root whose imagedb folders are missing does not get them created either."""
    _damage(real_root)
    before = _tree(real_root)
    result = run_cli(capsys, real_root, *args)
    assert result.code in (0, 1)
    assert _tree(real_root) == before
    if args[0] == "fsck":
        assert "temp-file" in result.out


def test_opening_a_bare_root_creates_nothing(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    root = tmp_path / "bare"
    (root / "layerdb").mkdir(parents=True)
    assert run_cli(capsys, root, "ls").code == 0
    assert sorted(p.name for p in root.rglob("*")) == ["layerdb"]


def test_tags_of_missing_images_are_found_and_repaired_alone(
        capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    tags = real_root / "repositories.json"
    doc = json.loads(tags.read_text())
    doc["Repositories"].setdefault("ghost", {})["ghost:1"] = "sha256:" + "e" * 64
    tags.write_text(json.dumps(doc))
    result = run_cli(capsys, real_root, "fsck", "--json")
    assert result.code == 1
    found = [(f["check"], f["path"]) for f in result.json()["findings"]]
    assert found == [("dangling-tag", "repositories.json#ghost:1")]
    assert run_cli(capsys, real_root, "fsck", "--repair").code == 0
    del doc["Repositories"]["ghost"]
    assert json.loads(tags.read_text()) == doc  # the other tags untouched
    assert run_cli(capsys, real_root, "fsck").code == 0


@pytest.mark.parametrize("tagged", [False, True])
def test_a_failed_create_can_be_repaired_when_nothing_refers_to_it(
        capsys: pytest.CaptureFixture[str], real_root: Path, tmp_path: Path,
        tagged: bool) -> None:
    """moby's Create leaves the content file of an image whose layers are missing: fsck
    reports it, and --repair removes it unless a tag, child or container refers to it."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + "d" * 64]}}))
    result = run_cli(capsys, real_root, "create", str(config))
    assert result.code == 1 and "layer does not exist" in result.err
    content = real_root / "imagedb/content/sha256" / digest_of(config.read_bytes())[7:]
    assert content.exists()
    if tagged:
        tags = real_root / "repositories.json"
        doc = json.loads(tags.read_text())
        doc["Repositories"]["broken"] = {"broken:1": "sha256:" + content.name}
        tags.write_text(json.dumps(doc))
    found = run_cli(capsys, real_root, "fsck", "--json").json()["findings"]
    assert [(f["check"], f["path"]) for f in found] == [
        ("missing-layer", "imagedb/content/sha256/" + content.name)]
    result = run_cli(capsys, real_root, "fsck", "--repair")
    assert content.exists() == tagged
    assert result.code == (1 if tagged else 0)
    assert ("a tag, a child or a container refers to it" in result.out) == tagged


def test_special_files_are_reported(capsys: pytest.CaptureFixture[str], real_root: Path) -> None:
    meta = next(p for p in sorted((real_root / "imagedb/metadata/sha256").iterdir())
                if (p / "lastUpdated").exists() or (p / "parent").exists())
    key = "lastUpdated" if (meta / "lastUpdated").exists() else "parent"
    (meta / key).unlink()
    os.mkfifo(meta / key)
    layer = next(iter(sorted((real_root / "layerdb/sha256").iterdir())))
    (layer / "cache-id").unlink()
    os.mkfifo(layer / "cache-id")
    found = {(f["check"], f["path"]): f["message"]
             for f in run_cli(capsys, real_root, "fsck", "--json").json()["findings"]}
    assert found[("bad-metadata", f"imagedb/metadata/sha256/{meta.name}/{key}")] == \
        f"{key} is a FIFO, not a regular file"
    assert found[("bad-layer", f"layerdb/sha256/{layer.name}/cache-id")] == \
        "cache-id is a FIFO, not a regular file"
