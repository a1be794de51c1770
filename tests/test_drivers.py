"""Graph-driver data is released as moby's drivers release it, never beyond the layer's own
files, and driver folders nothing uses are found (and removed only when BuildKit's own are
known)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from engine import ROOT_A, unpack_root_a

from imagestore.errors import ImageStoreError
from imagestore.moby import drivers
from imagestore.moby.drivers import (
    DANGLING_LINK,
    MISSING,
    ORPHAN,
    UNCLAIMED,
    UNFINISHED,
    Driver,
    DriverBusy,
    UnsafeDriverData,
    UnsupportedDriver,
    driver_for,
    find_driver,
    find_orphans,
    finish_removals,
    read_references,
    remove_orphans,
)
from imagestore.moby.layerdb import LayerDB
from imagestore.moby.mountinfo import mount_points, mounted_under, parse

ROOT_A_BUILDKIT = ROOT_A.with_name("root-A-buildkit.tar.xz")


def apparent_bytes(path: Path) -> int:
    """The sizes of the regular files under ``path`` (os.walk follows no symlink)."""
    return sum(p.lstat().st_size for folder, _dirs, files in os.walk(path)
               for p in (Path(folder) / f for f in files)
               if p.is_file() and not p.is_symlink())


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` with what it is (a symlink's target, a file's bytes)."""
    out = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(folder) / name
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = p.read_bytes().hex()
            else:  # a device node (vfs/backingFsBlockDev)
                out[rel] = f"special {p.lstat().st_mode:o}"
    return out


class Killed(Exception):
    """The process dying at that point (nothing after it runs)."""


def hex64(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


# -- vfs, on the real data-root Docker 20.10 wrote --------------------------------------------
@pytest.fixture
def root_a(tmp_path: Path) -> Path:
    return unpack_root_a(tmp_path)


@pytest.fixture
def root_a_buildkit(tmp_path: Path) -> Path:
    subprocess.run(["tar", "-xJf", str(ROOT_A_BUILDKIT), "-C", str(tmp_path)], check=True)
    return tmp_path / "root-A"


def vfs_of(data_root: Path) -> tuple[Driver, LayerDB]:
    return driver_for(data_root / "image" / "vfs"), LayerDB(data_root / "image/vfs/layerdb")


def test_vfs_driver_is_found_from_the_image_root(root_a: Path) -> None:
    driver = driver_for(root_a / "image" / "vfs")
    assert (driver.name, driver.home, driver.folders) == \
        ("vfs", root_a / "vfs", root_a / "vfs" / "dir")
    assert find_driver(root_a / "image" / "vfs") == driver


def test_vfs_release_removes_the_layer_copy_and_counts_its_bytes(root_a: Path) -> None:
    driver, ldb = vfs_of(root_a)
    refs = read_references(ldb)
    cache = refs.layers[max(refs.layers, key=lambda c: apparent_bytes(driver.folders /
                                                                       refs.layers[c]))]
    before = set(os.listdir(driver.folders))
    expected = apparent_bytes(driver.folders / cache)
    assert expected > 0
    assert driver.size(cache) == expected
    assert driver.release(cache) == expected
    assert set(os.listdir(driver.folders)) == before - {cache}
    assert driver.release(cache) == 0  # already gone: tolerated, as moby does


def test_pristine_root_has_no_orphans(root_a: Path) -> None:
    driver, ldb = vfs_of(root_a)
    refs = read_references(ldb)
    assert refs.ids == set(os.listdir(driver.folders))  # every folder is a layer's or a mount's
    for mount_id, init_id in refs.mounts.values():
        assert init_id == mount_id + "-init"  # moby's initMount names it so, and records it
    assert find_orphans(driver, refs, frozenset()) == []
    assert find_orphans(driver, refs, None, "not read") == []


def buildkit_ids(driver: Driver, ldb: LayerDB) -> frozenset[str]:
    return frozenset(set(os.listdir(driver.folders)) - read_references(ldb).ids)


def test_buildkit_folders_of_unknown_owner_are_reported_not_removed(root_a_buildkit: Path
                                                                    ) -> None:
    driver, ldb = vfs_of(root_a_buildkit)
    owned = buildkit_ids(driver, ldb)
    assert len(owned) == 3
    found = find_orphans(driver, read_references(ldb), None, "snapshots.db unreadable")
    assert {(f.kind, Path(f.path).name, f.size) for f in found} == \
        {(UNCLAIMED, i, apparent_bytes(driver.folders / i)) for i in owned}
    assert all("snapshots.db unreadable" in f.detail for f in found)
    before = tree(root_a_buildkit / "vfs")
    done = remove_orphans(driver, read_references(ldb), None, "snapshots.db unreadable")
    assert done.removed == () and done.driver_bytes == 0
    assert "BuildKit" in done.refused and "snapshots.db unreadable" in done.refused
    assert tree(root_a_buildkit / "vfs") == before


def test_buildkit_folders_known_are_kept_and_a_stray_folder_is_removed(root_a_buildkit: Path
                                                                       ) -> None:
    driver, ldb = vfs_of(root_a_buildkit)
    owned = buildkit_ids(driver, ldb)
    refs = read_references(ldb)
    assert find_orphans(driver, refs, owned) == []
    stray = driver.folders / ("f" * 64)
    (stray / "etc").mkdir(parents=True)
    (stray / "etc" / "data").write_bytes(b"x" * 1234)
    (stray / "etc" / "hosts").symlink_to("/etc/hosts")
    found = find_orphans(driver, refs, owned)
    assert [(f.kind, f.path, f.size) for f in found] == [(ORPHAN, str(stray), 1234)]
    kept = {i: tree(driver.folders / i) for i in owned}
    done = remove_orphans(driver, refs, owned)
    assert (done.removed, done.driver_bytes, done.failed, done.refused) == \
        ((str(stray),), 1234, (), "")
    assert not stray.exists()
    assert Path("/etc/hosts").exists()
    assert {i: tree(driver.folders / i) for i in owned} == kept


def test_vfs_release_never_follows_a_symlink_out(root_a: Path, tmp_path: Path) -> None:
    driver, ldb = vfs_of(root_a)
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "precious").write_bytes(b"p" * 100)
    cache = next(iter(read_references(ldb).layers.values()))
    expected = apparent_bytes(driver.folders / cache)
    (driver.folders / cache / "escape").symlink_to(outside / "keep")
    (driver.folders / cache / "escape-file").symlink_to(outside / "keep" / "precious")
    assert driver.release(cache) == expected
    assert (outside / "keep" / "precious").read_bytes() == b"p" * 100


def test_a_symlinked_dir_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (tmp_path / "dr" / "image" / "vfs").mkdir(parents=True)
    (tmp_path / "dr" / "vfs").mkdir()
    (tmp_path / "dr" / "vfs" / "dir").symlink_to(outside)
    driver = driver_for(tmp_path / "dr" / "image" / "vfs")
    with pytest.raises(UnsafeDriverData):
        driver.release("victim")
    assert (outside / "victim").is_dir()


@pytest.mark.parametrize("bad", ["", ".", "..", "../vfs", "a/b", "/etc"])
def test_a_driver_id_that_is_not_a_name_is_refused(root_a: Path, bad: str) -> None:
    driver, _ = vfs_of(root_a)
    before = tree(root_a / "vfs")
    with pytest.raises(UnsafeDriverData, match="not a name"):
        driver.release(bad)
    assert tree(root_a / "vfs") == before


# -- overlay2, laid out as moby's overlay2 driver lays it out ---------------------------------
@dataclass
class Overlay:
    data_root: Path
    driver: Driver
    ldb: LayerDB
    ids: dict[str, str]  # role -> driver ID
    links: dict[str, str]  # role -> l/ name
    chains: dict[str, str]  # role -> chain ID (layers only)

    def folder(self, role: str) -> Path:
        return self.driver.home / self.ids[role]


def link_name(seed: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(alphabet[b % 36] for b in digest[:26])


def add_overlay_folder(home: Path, driver_id: str, link: str, lowers: list[str],
                       files: dict[str, bytes]) -> None:
    """One folder as overlay2's ``create`` makes it: diff/, link, the l/ symlink; with a
    parent, work/ and lower."""
    folder = home / driver_id
    (folder / "diff").mkdir(parents=True)
    for rel, data in files.items():
        (folder / "diff" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "diff" / rel).write_bytes(data)
    (folder / "link").write_text(link)
    (home / "l").mkdir(exist_ok=True)
    (home / "l" / link).symlink_to(f"../{driver_id}/diff")
    if lowers:
        (folder / "work").mkdir()
        (folder / "lower").write_text(":".join(f"l/{x}" for x in lowers))


@pytest.fixture
def overlay(tmp_path: Path) -> Overlay:
    data_root = tmp_path / "docker"
    image_root = data_root / "image" / "overlay2"
    home = data_root / "overlay2"
    home.mkdir(parents=True)
    mount = hex64("mount")
    ids = {"base": hex64("base"), "top": hex64("top"), "init": mount + "-init", "mount": mount}
    links = {role: link_name(role) for role in ids}
    add_overlay_folder(home, ids["base"], links["base"], [],
                       {"etc/os-release": b"ID=test\n", "bin/sh": b"\x7fELF" + b"\0" * 60})
    add_overlay_folder(home, ids["top"], links["top"], [links["base"]],
                       {"app/main.py": b"print('hi')\n" * 10})
    add_overlay_folder(home, ids["init"], links["init"], [links["top"], links["base"]],
                       {"etc/hosts": b"", "etc/resolv.conf": b""})
    add_overlay_folder(home, ids["mount"], links["mount"],
                       [links["init"], links["top"], links["base"]], {"tmp/log": b"l" * 77})
    chains = {"base": "sha256:" + hex64("chain-base"), "top": "sha256:" + hex64("chain-top")}
    for role, chain in chains.items():
        folder = image_root / "layerdb" / "sha256" / chain[7:]
        folder.mkdir(parents=True)
        (folder / "cache-id").write_text(ids[role])
        (folder / "diff").write_text("sha256:" + hex64("diff-" + role))
        (folder / "size").write_text("100")
    (folder / "parent").write_text(chains["base"])
    mount_folder = image_root / "layerdb" / "mounts" / hex64("container")
    mount_folder.mkdir(parents=True)
    (mount_folder / "mount-id").write_text(ids["mount"])
    (mount_folder / "init-id").write_text(ids["init"])
    (mount_folder / "parent").write_text(chains["top"])
    driver = driver_for(image_root)
    assert (driver.name, driver.home, driver.folders) == ("overlay2", home, home)
    return Overlay(data_root, driver, LayerDB(image_root / "layerdb"), ids, links, chains)


def test_overlay2_layout_has_no_orphans(overlay: Overlay) -> None:
    assert find_orphans(overlay.driver, read_references(overlay.ldb), frozenset()) == []


def test_overlay2_release_removes_the_link_then_the_folder(overlay: Overlay) -> None:
    home = overlay.driver.home
    before = tree(home)
    expected = apparent_bytes(overlay.folder("top"))
    assert expected == len(b"print('hi')\n" * 10) + 26 + 28  # + link, lower
    assert overlay.driver.release(overlay.ids["top"]) == expected
    assert not overlay.folder("top").exists()
    assert not (home / "l" / overlay.links["top"]).is_symlink()
    gone = {k for k in before if k.split("/")[0] == overlay.ids["top"]}
    gone.add(f"l/{overlay.links['top']}")
    assert tree(home) == {k: v for k, v in before.items() if k not in gone}


@pytest.mark.parametrize("content", ["", "../../etc", "/", "..", ".", "a/../../b"])
def test_overlay2_refuses_a_link_file_that_is_not_a_link_name(overlay: Overlay,
                                                              content: str) -> None:
    sentinel = overlay.data_root / "etc" / "passwd"  # where l/../../etc would lead
    sentinel.parent.mkdir()
    sentinel.write_text("root:x:0:0\n")
    (overlay.folder("top") / "link").write_text(content)
    before = tree(overlay.data_root)
    with pytest.raises(UnsafeDriverData, match="link file"):
        overlay.driver.check_release(overlay.ids["top"])
    with pytest.raises(UnsafeDriverData, match="link file"):
        overlay.driver.release(overlay.ids["top"])
    with pytest.raises(UnsafeDriverData):
        overlay.ldb.remove_layer(overlay.chains["top"], overlay.driver)
    assert tree(overlay.data_root) == before  # nothing renamed, nothing deleted


def test_overlay2_refuses_a_link_that_leads_to_another_layer(overlay: Overlay) -> None:
    (overlay.folder("top") / "link").write_text(overlay.links["base"])
    before = tree(overlay.data_root)
    with pytest.raises(UnsafeDriverData, match="not to"):
        overlay.driver.release(overlay.ids["top"])
    assert tree(overlay.data_root) == before


def test_overlay2_release_never_follows_a_symlink_out(overlay: Overlay, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "precious").write_bytes(b"p" * 4096)
    diff = overlay.folder("top") / "diff"
    expected = apparent_bytes(overlay.folder("top"))
    (diff / "escape").symlink_to(outside / "data")
    (diff / "app" / "abs").symlink_to("/")
    (diff / "up").symlink_to("../../../..")
    assert overlay.driver.release(overlay.ids["top"]) == expected
    assert (outside / "data" / "precious").read_bytes() == b"p" * 4096
    assert overlay.folder("base").is_dir()


def test_overlay2_dangling_links_are_reported_and_removed(overlay: Overlay) -> None:
    links = overlay.driver.home / "l"
    (links / "GONE").symlink_to("../" + hex64("gone") + "/diff")
    (links / "ESCAPE").symlink_to("/etc")
    (links / "SECOND").symlink_to(f"../{overlay.ids['base']}/diff")  # not base's own link
    (links / "FILE").write_text("x")
    refs = read_references(overlay.ldb)
    found = find_orphans(overlay.driver, refs, frozenset())
    assert sorted((f.kind, Path(f.path).name) for f in found) == \
        [(DANGLING_LINK, n) for n in ("ESCAPE", "FILE", "GONE", "SECOND")]
    assert {Path(f.path).name: f.size for f in found} == dict.fromkeys(
        ("ESCAPE", "FILE", "GONE", "SECOND"), 0)
    done = remove_orphans(overlay.driver, refs, frozenset())
    assert (sorted(Path(p).name for p in done.removed), done.failed) == \
        (["ESCAPE", "FILE", "GONE", "SECOND"], ())
    assert sorted(os.listdir(links)) == sorted(overlay.links.values())
    assert Path("/etc").is_dir()
    assert find_orphans(overlay.driver, refs, frozenset()) == []


def test_overlay2_orphans_missing_data_and_buildkit(overlay: Overlay) -> None:
    home = overlay.driver.home
    stray, snap = hex64("stray"), "j4njf2u7p4djzn9fc5tl30lbu"
    add_overlay_folder(home, stray, link_name("stray"), [overlay.links["base"]],
                       {"a": b"1" * 300, "b/c": b"2" * 33})
    add_overlay_folder(home, snap, link_name("snap"), [], {"x": b"3" * 5})
    (home / "backingFsBlockDev").write_bytes(b"")  # quota's device node: a file, not an ID
    size = apparent_bytes(home / stray)
    assert size == 333 + 26 + 28  # the diff's files, link and lower
    refs = read_references(overlay.ldb)
    found = find_orphans(overlay.driver, refs, frozenset({snap}))
    assert [(f.kind, Path(f.path).name, f.size) for f in found] == [(ORPHAN, stray, size)]
    unknown = find_orphans(overlay.driver, refs, None, "no snapshots.db reader")
    assert sorted((f.kind, Path(f.path).name, f.size) for f in unknown) == \
        sorted([(UNCLAIMED, stray, size), (UNCLAIMED, snap, 5 + 26)])
    done = remove_orphans(overlay.driver, refs, frozenset({snap}))
    assert (done.removed, done.driver_bytes) == ((str(home / stray),), size)
    assert not (home / "l" / link_name("stray")).is_symlink()
    assert (home / snap / "diff" / "x").exists() and (home / "l" / link_name("snap")).exists()
    for role in overlay.ids:
        assert overlay.folder(role).is_dir()
    # A layer whose folder went away is named, with its chain.
    overlay.driver.release(overlay.ids["base"])
    missing = [f for f in find_orphans(overlay.driver, refs, frozenset({snap}))
               if f.kind == MISSING]
    assert [(Path(f.path).name, overlay.chains["base"] in f.detail) for f in missing] == \
        [(overlay.ids["base"], True)]


# -- drivers imagestore cannot release --------------------------------------------------------
@pytest.mark.parametrize("name", ["btrfs", "zfs", "devicemapper", "windowsfilter",
                                  "fuse-overlayfs", "aufs", "overlay"])
def test_an_unknown_driver_is_refused_before_anything_is_deleted(tmp_path: Path,
                                                                 name: str) -> None:
    image_root = tmp_path / "docker" / "image" / name
    (image_root / "layerdb" / "sha256").mkdir(parents=True)
    (tmp_path / "docker" / name / "subvolumes" / "abc").mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(UnsupportedDriver) as caught:
        driver_for(image_root)
    assert caught.value.driver == name
    message = str(caught.value)
    assert "\n" not in message and repr(name) in message
    assert isinstance(caught.value, ImageStoreError)
    with pytest.raises(UnsupportedDriver):
        find_driver(image_root)
    assert tree(tmp_path) == before


def test_a_root_outside_a_data_root_has_no_driver(tmp_path: Path) -> None:
    (tmp_path / "root" / "layerdb").mkdir(parents=True)
    assert find_driver(tmp_path / "root") is None
    with pytest.raises(ImageStoreError, match="data-root"):
        driver_for(tmp_path / "root")


# -- mounts -----------------------------------------------------------------------------------
SAMPLE = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "36 35 98:0 /mnt1 /var/lib/my\\040docker/overlay2/abc/merged rw,noatime master:1 - "
    "overlay overlay rw,lowerdir=l/A\n"
    "37 35 98:0 / /srv/tab\\011and\\012newline\\134back rw - ext4 /dev/sda1 rw\n"
    "38 35 98:0 / /var/lib/my\\040docker/overlay2-other rw - ext4 /dev/sda1 rw\n"
    "garbage\n"
)


def test_mountinfo_paths_are_unescaped() -> None:
    assert parse(SAMPLE.encode()) == [
        "/proc", "/var/lib/my docker/overlay2/abc/merged", "/srv/tab\tand\nnewline\\back",
        "/var/lib/my docker/overlay2-other"]


def test_mounted_under_finds_a_mount_in_the_driver_home(tmp_path: Path) -> None:
    home = tmp_path / "my docker" / "overlay2"
    (home / "abc" / "merged").mkdir(parents=True)
    sample = tmp_path / "mountinfo"
    sample.write_text(SAMPLE.replace("/var/lib/my\\040docker", str(tmp_path / "my\\040docker")))
    assert mounted_under(home, sample) == [str(home / "abc" / "merged")]
    assert mounted_under(home / "abc" / "merged", sample) == [str(home / "abc" / "merged")]
    assert mounted_under(tmp_path / "my docker" / "overlay", sample) == []
    driver = Driver("overlay2", home, str(sample))
    with pytest.raises(DriverBusy, match="merged"):
        driver.check_unmounted()
    done = remove_orphans(driver, drivers.References(), frozenset())
    assert done.removed == () and "mounted" in done.refused
    unreadable = Driver("overlay2", home, str(tmp_path / "no-such-mountinfo"))
    with pytest.raises(DriverBusy, match="cannot read"):
        unreadable.check_unmounted()


def test_this_process_mount_table_is_read() -> None:
    assert "/" in mount_points()


# -- removing a layer: rename, release, remove, and finishing after a crash --------------------
def test_remove_layer_releases_the_driver_data(root_a: Path) -> None:
    driver, ldb = vfs_of(root_a)
    chain, cache = sorted(read_references(ldb).layers.items())[0]
    expected = apparent_bytes(driver.folders / cache)
    assert ldb.remove_layer(chain, driver) == expected
    assert not (ldb.layers / chain[7:]).exists()
    assert not (driver.folders / cache).exists()
    assert not list(ldb.layers.glob("*-removing"))


def test_remove_layer_without_a_driver_keeps_driver_data(root_a: Path) -> None:
    driver, ldb = vfs_of(root_a)
    chain, cache = sorted(read_references(ldb).layers.items())[0]
    assert ldb.remove_layer(chain) == 0
    assert not (ldb.layers / chain[7:]).exists()
    assert (driver.folders / cache).is_dir()


def test_overlay2_remove_layer_goes_through_the_driver(overlay: Overlay) -> None:
    expected = apparent_bytes(overlay.folder("top"))
    assert overlay.ldb.remove_layer(overlay.chains["top"], overlay.driver) == expected
    assert not overlay.folder("top").exists()
    assert not (overlay.driver.home / "l" / overlay.links["top"]).is_symlink()
    assert overlay.ldb.remove_layer(overlay.chains["top"], overlay.driver) == 0  # gone already


def test_a_crash_before_the_release_is_finished_later(root_a: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    driver, ldb = vfs_of(root_a)
    chain, cache = sorted(read_references(ldb).layers.items())[-1]
    expected = apparent_bytes(driver.folders / cache)

    def crash(self: Driver, driver_id: str) -> int:
        raise Killed("killed between the rename and the release")

    with monkeypatch.context() as m:
        m.setattr(Driver, "release", crash)
        with pytest.raises(Killed):
            ldb.remove_layer(chain, driver)
    [left] = ldb.layers.glob(f"{chain[7:]}-*-removing")
    assert len(left.name) == 64 + 1 + 64 + len("-removing")  # moby's <chain>-<random>-removing
    assert (driver.folders / cache).is_dir()
    refs = read_references(ldb)
    assert chain not in refs.layers and cache in refs.ids  # still not an orphan
    assert [(f.kind, f.path, f.size) for f in find_orphans(driver, refs, frozenset())] == \
        [(UNFINISHED, str(left), expected)]
    done = finish_removals(driver, ldb)
    assert (done.removed, done.driver_bytes, done.failed) == ((str(left),), expected, ())
    assert not left.exists() and not (driver.folders / cache).exists()
    assert find_orphans(driver, read_references(ldb), frozenset()) == []
    assert finish_removals(driver, ldb) == drivers.Cleanup()


def test_a_crash_after_the_release_is_finished_later(root_a: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    driver, ldb = vfs_of(root_a)
    chain, cache = sorted(read_references(ldb).layers.items())[-1]

    def crash(path: object, ignore_errors: bool = False) -> None:
        raise Killed("killed before the folder went")

    with monkeypatch.context() as m:
        m.setattr(shutil, "rmtree", crash)  # the folder removal after the release
        with pytest.raises(Killed):
            ldb.remove_layer(chain, driver)
    [left] = ldb.layers.glob(f"{chain[7:]}-*-removing")
    assert not (driver.folders / cache).exists()
    done = finish_removals(driver, ldb)
    assert (done.removed, done.driver_bytes) == ((str(left),), 0)
    assert not left.exists()


def test_finishing_never_releases_data_a_live_layer_uses(root_a: Path) -> None:
    driver, ldb = vfs_of(root_a)
    live_cache = sorted(read_references(ldb).layers.values())[0]
    stale = ldb.layers / (hex64("stale") + "-" + "0" * 64 + "-removing")
    stale.mkdir()
    (stale / "cache-id").write_text(live_cache)
    done = finish_removals(driver, ldb)
    assert (done.removed, done.driver_bytes) == ((str(stale),), 0)
    assert (driver.folders / live_cache).is_dir()
