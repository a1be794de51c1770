"""``imagestore save``: images out of a store as archives a real engine loads and runs, with
layers byte for byte what Docker saved, references taken as ``docker save`` takes them, and
nothing under the root touched (read-only stores and live daemons included)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run_cli
from conftest import truth_json
from engine import Engine, unpack_root_a
from test_save import members

import imagestore
from imagestore.errors import ImageStoreError, LayerNotFound
from imagestore.moby.tarsplit import LayerError
from imagestore.saving import Saving, find_layer

SAVED = Path(__file__).parent / "data" / "docker-20.10-vfs" / "saved"
BB_LAYER = "sha256:47e5f13bea911aadfc97d117e72c8e38764c4b4b97178f87e49a7de6ad5cdfbd"
BB_CACHE = "32bfb2bd796698a95768dc73f09edb35c87935df73e658af569ba00a677392fc"
TOOL_CACHE = "0fa6bf694ded060ccfb0e09c402349f2541662508b3dc3e883e45632b2ee01bf"
WEB = "sha256:f1e10523c794d0b9354e057bf80096ce6540e5b41c4f137bd3b0c4a95392399e"
WEB_PROD = "sha256:cb7f2db5b8a955cc79b68d96c56676531af365539f20e8d901b654f5ff09dc2b"
API = "sha256:378113ba1b01bd6b9a8e908fe8a511bf74813871cc6e00b5181aa9dc671ab2aa"
TOOL = "sha256:aab6b0931984d819c9a7b231de93b499658c33b305e8809a2653a6d45aa7aeba"
UNTAGGED = "sha256:39cac2fce54f4155b598fc122e7fcf4bb61f2d3fe4c789021f2a3bf2f483e103"
# Docker 20.10's own archives of these (tests/data/docker-20.10-vfs/saved).
ARCHIVES = {"web:1.0": "web_1.0.tar", "web:prod": "web_prod.tar",
            "registry.example.com/team/api:1.0": "registry.example.com_team_api_1.0.tar"}
FORMATS = ("oci", "legacy")
# Every tag of each image, so a loaded engine must show the tags the original engine did.
EVERY_TAG = ["web", "api:1.0", "registry.example.com/team/api:1.0", "bb:1.35", "tool:1.0",
             "committed:1", "devbase", UNTAGGED[7:19]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Docker 20.10 data-root; tests that save from it leave it as it is (one
    test checks exactly that on a copy)."""
    return unpack_root_a(tmp_path_factory.mktemp("rootA"))


@pytest.fixture(scope="module")
def root(pristine: Path) -> Path:
    return pristine / "image" / "vfs"


@pytest.fixture
def data_root(pristine: Path, tmp_path: Path) -> Path:
    """A copy to damage or watch (vfs/ also holds a device node: only vfs/dir is copied)."""
    dst = tmp_path / "root-A"
    for part in ("image", "vfs/dir"):
        shutil.copytree(pristine / part, dst / part, symlinks=True)
    return dst


def manifest(data: bytes) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(members(data)["manifest.json"][1])
    return items


def layer_bytes(data: bytes) -> dict[str, bytes]:
    """Each image's layer tars by diff ID (the config's ``rootfs``), symlinks followed."""
    got = members(data)
    out: dict[str, bytes] = {}
    for item in manifest(data):
        config = json.loads(got[item["Config"]][1])
        for path, diff in zip(item["Layers"], config["rootfs"]["diff_ids"], strict=True):
            info, body = got[path]
            if info.issym():
                body = got[os.path.normpath(os.path.join(os.path.dirname(path),
                                                         info.linkname))][1]
            out[diff] = body
    return out


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def imagestore_cmd(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """The command as a shell runs it (its own process, its own stdout)."""
    return subprocess.run([sys.executable, "-m", "imagestore.cli", "--root", str(root), *args],
                          timeout=300, check=False, **kw)


def saved(capsys: pytest.CaptureFixture[str], root: Path, out: Path, *args: str) -> bytes:
    result = run_cli(capsys, root, "save", *args, "-o", str(out))
    assert (result.code, result.err) == (0, ""), result.err
    return out.read_bytes()


# -- what goes into the archive --------------------------------------------------------------


def test_legacy_archives_are_byte_identical_to_docker_20_10(
        capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path) -> None:
    for ref, name in ARCHIVES.items():
        got = saved(capsys, root, tmp_path / "x.tar", ref, "--format", "legacy")
        assert got == (SAVED / name).read_bytes(), ref


@pytest.mark.parametrize("layout", FORMATS)
def test_layers_are_the_ones_docker_saved(capsys: pytest.CaptureFixture[str], root: Path,
                                          tmp_path: Path, layout: str) -> None:
    data = saved(capsys, root, tmp_path / "x.tar", "web:1.0", "tool:1.0", "--format", layout)
    items = manifest(data)
    got = members(data)
    assert [i["RepoTags"] for i in items] == [["web:1.0"], ["tool:1.0"]]
    assert [got[i["Config"]][1] for i in items] == \
        [(root / "imagedb/content/sha256" / i[7:]).read_bytes() for i in (WEB, TOOL)]
    layers = layer_bytes(data)
    assert all(sha(body) == diff for diff, body in layers.items())  # what docker load checks
    assert len(layers) == 3 + 4
    docker_s = layer_bytes((SAVED / "web_1.0.tar").read_bytes())
    assert {d: layers[d] for d in docker_s} == docker_s
    if layout == "legacy":
        assert items[0]["Layers"] == manifest((SAVED / "web_1.0.tar").read_bytes())[0]["Layers"]
    else:
        names = [d["annotations"]["io.containerd.image.name"]
                 for d in json.loads(got["index.json"][1])["manifests"]]
        assert names == ["docker.io/library/web:1.0", "docker.io/library/tool:1.0"]


def test_refs_name_images_as_docker_save_takes_them(capsys: pytest.CaptureFixture[str],
                                                    root: Path, tmp_path: Path) -> None:
    """An ID (full, bare, any unique prefix, sha256:prefix) saves the image untagged; a tag
    in any spelling saves that tag; a bare name saves every tag of the repository; several
    refs to one image share its entry."""
    cases: list[tuple[list[str], list[tuple[str, list[str] | None]]]] = [
        ([WEB, WEB_PROD[7:], TOOL[7:15], f"sha256:{API[7:14]}"],
         [(WEB, None), (WEB_PROD, None), (TOOL, None), (API, None)]),
        (["docker.io/library/web:1.0", "index.docker.io/library/tool:1.0"],
         [(WEB, ["web:1.0"]), (TOOL, ["tool:1.0"])]),
        (["web"], [(WEB, ["web:1.0"]), (WEB_PROD, ["web:prod"])]),
        (["api:1.0", WEB, "registry.example.com/team/api:1.0", "web:1.0", API[7:20]],
         [(API, ["api:1.0", "registry.example.com/team/api:1.0"]), (WEB, ["web:1.0"])]),
    ]
    for refs, expected in cases:
        items = manifest(saved(capsys, root, tmp_path / "x.tar", *refs))
        assert [("sha256:" + i["Config"][13:], i["RepoTags"]) for i in items] == expected, refs


# -- where it goes ---------------------------------------------------------------------------


def test_stdout_to_a_pipe_is_the_same_archive(capsys: pytest.CaptureFixture[str], root: Path,
                                              tmp_path: Path) -> None:
    for refs in (["web:1.0", "tool:1.0"], ["web:1.0", "--format", "legacy"]):
        piped = imagestore_cmd(root, "save", *refs, "-o", "-", capture_output=True)
        assert (piped.returncode, piped.stderr) == (0, b"")
        assert piped.stdout == saved(capsys, root, tmp_path / "x.tar", *refs)
    assert piped.stdout == (SAVED / "web_1.0.tar").read_bytes()


def test_stdout_on_a_terminal_is_refused(root: Path, tmp_path: Path) -> None:
    leader, terminal = os.openpty()
    try:
        done = imagestore_cmd(root, "save", "web:1.0", "-o", "-", stdout=terminal,
                              stderr=subprocess.PIPE, cwd=tmp_path)
        os.set_blocking(leader, False)
        try:
            shown = os.read(leader, 1 << 16)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(terminal)
        os.close(leader)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        "imagestore: cowardly refusing to save to a terminal. Use the -o flag or redirect"]
    assert shown == b""
    assert os.listdir(tmp_path) == []


def test_output_is_required(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    result = run_cli(capsys, root, "save", "web:1.0")
    assert result.code == 2 and "-o" in result.err


# -- reading only ----------------------------------------------------------------------------


def tree(top: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``top``: type and mode, owner, size, mtime, and content or link."""
    out: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(top):
        for name in ["", *dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            body: Any = None
            if path.is_symlink():
                body = os.readlink(path)
            elif path.is_file():
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(top))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                               st.st_mtime_ns, body)
    return out


@pytest.mark.parametrize("flags", [["--readonly"], []], ids=["readonly", "plain"])
def test_saving_leaves_the_root_untouched(capsys: pytest.CaptureFixture[str], data_root: Path,
                                          tmp_path: Path, flags: list[str]) -> None:
    before = tree(data_root)
    for layout in FORMATS:
        result = run_cli(capsys, data_root / "image" / "vfs", *flags, "save", *EVERY_TAG,
                         "--format", layout, "-o", str(tmp_path / f"{layout}.tar"))
        assert (result.code, result.err) == (0, "")
        assert len(manifest((tmp_path / f"{layout}.tar").read_bytes())) == 8
    assert tree(data_root) == before


# -- failing cleanly -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", FORMATS)
def test_a_damaged_layer_fails_in_one_line_and_leaves_nothing(
        capsys: pytest.CaptureFixture[str], data_root: Path, tmp_path: Path,
        layout: str) -> None:
    busybox = data_root / "vfs" / "dir" / BB_CACHE / "bin" / "busybox"
    raw = bytearray(busybox.read_bytes())
    raw[12345] ^= 0xFF
    busybox.write_bytes(raw)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.tar").write_bytes(b"old")
    for target in ("new.tar", "keep.tar"):
        result = run_cli(capsys, data_root / "image" / "vfs", "save", "web:1.0", "tool:1.0",
                         "--format", layout, "-o", str(out / target))
        assert result.code == 1
        assert result.out == ""
        [line] = result.err.splitlines()
        assert line.startswith("imagestore: cannot save tool:1.0 (aab6b0931984): ")
        assert f"layer {BB_LAYER}: ./bin/busybox: " in line
        assert sorted(os.listdir(out)) == ["keep.tar"]  # no temp file either
        assert (out / "keep.tar").read_bytes() == b"old"


def test_a_layer_missing_from_the_driver_fails_before_a_byte_is_written(
        data_root: Path, tmp_path: Path) -> None:
    shutil.rmtree(data_root / "vfs" / "dir" / TOOL_CACHE)
    piped = imagestore_cmd(data_root / "image" / "vfs", "save", "web:1.0", "tool:1.0", "-o",
                           "-", capture_output=True)
    assert (piped.returncode, piped.stdout) == (1, b"")
    [line] = piped.stderr.decode().splitlines()
    assert "cannot save tool:1.0" in line and TOOL_CACHE in line and "is missing" in line


@pytest.mark.parametrize(("ref", "message"), [
    ("nosuch:1.0", "No such image: nosuch:1.0"),
    ("web:9", "No such image: web:9"),
    ("nosuch", "No such image: nosuch"),
    ("sha256:" + "0" * 64, "No such image: sha256:" + "0" * 64),
    ("deadbeef", "No such image: deadbeef"),
    ("Web:1.0", "repository name (library/Web) must be lowercase"),
    ("5", "ambiguous image ID '5'"),
])
def test_a_ref_that_names_no_image_fails_in_one_line(capsys: pytest.CaptureFixture[str],
                                                    root: Path, tmp_path: Path, ref: str,
                                                    message: str) -> None:
    result = run_cli(capsys, root, "save", "web:1.0", ref, "-o", str(tmp_path / "x.tar"))
    assert result.code == 1
    [line] = result.err.splitlines()
    assert line.startswith("imagestore: ") and message in line
    assert os.listdir(tmp_path) == []


# -- the library -----------------------------------------------------------------------------


def mixed(store: imagestore.Store) -> Any:
    """The store with ``Saving`` mixed in, whether or not ``Store`` inherits it yet."""
    if not isinstance(store, Saving):
        store.__class__ = type("SavingStore", (type(store), Saving), {})
    return store


def test_the_store_saves_and_streams_layers(capsys: pytest.CaptureFixture[str], root: Path,
                                            index: Path, tmp_path: Path) -> None:
    expected = saved(capsys, root, tmp_path / "x.tar", "web:1.0", "tool:1.0")
    with imagestore.open(root, index, readonly=True) as opened:
        store = mixed(opened)
        out = io.BytesIO()
        assert store.save(["web:1.0", "tool:1.0"], out) == len(expected)
        assert out.getvalue() == expected
        assert store.save("web:1.0", tmp_path / "y.tar", format="legacy") > 0
        assert (tmp_path / "y.tar").read_bytes() == (SAVED / "web_1.0.tar").read_bytes()
        diffs = json.loads(store.get(TOOL).raw)["rootfs"]["diff_ids"]
        layers = layer_bytes(expected)
        chain = find_layer(store, diffs[2]).chain_id
        assert chain != diffs[2]  # a layer above the bottom: found by its diff ID
        for ref in (diffs[2], chain, chain[7:], BB_LAYER):
            diff = find_layer(store, ref).diff_id
            assert b"".join(store.layer_tar(ref)) == layers[diff]
        for bad in ("sha256:" + "0" * 64, "nonsense", "../../etc"):
            with pytest.raises(LayerNotFound):
                store.layer_tar(bad)
        with pytest.raises(ImageStoreError, match="format"):
            store.save("web:1.0", io.BytesIO(), format="zip")


def test_a_damaged_layer_streams_an_error(data_root: Path, index: Path) -> None:
    busybox = data_root / "vfs" / "dir" / BB_CACHE / "bin" / "busybox"
    busybox.write_bytes(busybox.read_bytes()[:-1])
    with imagestore.open(data_root, index, readonly=True) as opened, \
            pytest.raises(LayerError, match="shorter") as info:
        b"".join(mixed(opened).layer_tar(BB_LAYER))
    assert (info.value.chain_id, info.value.path) == (BB_LAYER, "./bin/busybox")


# -- real engines ----------------------------------------------------------------------------


@pytest.fixture
def empty_engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "empty-data-root")
    yield e
    e.stop()


def test_docker_loads_and_runs_what_imagestore_saved(
        capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path,
        empty_engine: Engine) -> None:
    archives = {layout: tmp_path / f"{layout}.tar" for layout in FORMATS}
    for layout, archive in archives.items():
        saved(capsys, root, archive, *EVERY_TAG, "--format", layout)
    truth = {i["Id"]: i for i in truth_json("image-inspect.json")}
    ids = ["sha256:" + i["Config"].split("/")[-1].removesuffix(".json")
           for i in manifest(archives["oci"].read_bytes())]
    assert len(ids) == 8
    listing = (root.parent.parent / "vfs" / "dir" / TOOL_CACHE / "data" / "listing.txt"
               ).read_text()
    engine = empty_engine.start()
    for layout, archive in archives.items():
        engine.docker("load", "-i", str(archive))
        for image_id in ids:
            seen = engine.inspect(image_id)
            assert seen["Id"] == image_id, layout
            assert sorted(seen["RepoTags"]) == sorted(truth[image_id]["RepoTags"]), layout
            assert seen["Size"] == truth[image_id]["Size"], layout
        run = engine.docker("run", "--rm", "--network", "none", "tool:1.0")
        assert run.stdout == listing, layout
        run = engine.docker("run", "--rm", "--network", "none", "tool:1.0", "/bin/sh", "-c",
                            "echo $((6 * 7)) from $(ls /bin/busybox)")
        assert run.stdout == "42 from /bin/busybox\n", layout
        run = engine.docker("run", "--rm", "--network", "none", "committed:1")
        assert run.stdout.strip() == "committed", layout
        engine.docker("rmi", "-f", *reversed(ids))  # children (committed:1) first
        assert engine.images("-a") == [], layout


def test_saving_while_the_daemon_runs_gives_what_docker_save_gives(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The daemon (Docker 20.10, legacy layout) saves the same refs: the same bytes for one
    image; for several, the same images, tags and layers (the engine's order is a map's)."""
    data_root = unpack_root_a(tmp_path / "lab")
    root = data_root / "image" / "vfs"
    engine = Engine(data_root)
    try:
        engine.start()
        for refs in (["tool:1.0"], ["committed:1"], [UNTAGGED[7:19]], [WEB_PROD], ["web"],
                     ["api:1.0", WEB, "registry.example.com/team/api:1.0", "web:1.0"],
                     ["devbase", "bb:1.35", "committed:1", f"sha256:{TOOL[7:20]}"]):
            ours = saved(capsys, root, tmp_path / "ours.tar", *refs, "--format", "legacy")
            engine.docker("save", "-o", str(tmp_path / "docker.tar"), *refs)
            docker_s = (tmp_path / "docker.tar").read_bytes()
            if len(manifest(docker_s)) == 1:
                assert ours == docker_s, refs
            key = lambda item: item["Config"]  # noqa: E731
            assert sorted(manifest(ours), key=key) == sorted(manifest(docker_s), key=key), refs
            assert layer_bytes(ours) == layer_bytes(docker_s), refs
    finally:
        engine.stop()
    assert "invalid image" not in engine.log_text()


# A save that stops for good once its archive is written into its temp file, before the
# rename: where a SIGKILL, a crash or a reboot leaves a complete temp file behind.
_STALLED_SAVE = """
import sys, time
from imagestore.moby import archive
write = archive.save_to
def stall(*args, **kwargs):
    total = write(*args, **kwargs)
    print("written", flush=True)
    time.sleep(600)
    return total
archive.save_to = stall
from imagestore.cli import main
main(sys.argv[1:])
"""


def test_a_killed_save_leaves_a_temp_file_the_next_save_removes(root: Path,
                                                                tmp_path: Path) -> None:
    """Issue 23, item 9: a ``save -o`` killed with SIGKILL left a hidden ``.FILE.xxxx.tmp``
    (as large as the archive) that nothing noticed. The next save to the same target removes
    the temp files whose writer is gone, says so, and keeps a running save's."""
    target = tmp_path / "out" / "web.tar"
    target.parent.mkdir()

    def stalled() -> tuple[subprocess.Popen[bytes], str]:
        before = set(os.listdir(target.parent))
        proc = subprocess.Popen([sys.executable, "-c", _STALLED_SAVE, "--root", str(root),
                                 "save", "web:1.0", "-o", str(target)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline() == b"written\n"
        made = set(os.listdir(target.parent)) - before
        assert len(made) == 1 and not target.exists()
        return proc, made.pop()

    live, running = stalled()  # a save still running: its temp file is its own
    try:
        killed, left = stalled()
        killed.kill()
        killed.wait()
        assert left.startswith(".web.tar.") and left.endswith(".tmp")
        size = (target.parent / left).stat().st_size
        assert size > 10000  # the whole archive, written
        done = imagestore_cmd(root, "save", "web:1.0", "-o", str(target), capture_output=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr.decode() == (
            f"imagestore: warning: removed 1 temp file(s) a save to {target} that never "
            f"finished left behind ({size} bytes): {left}\n")
        assert sorted(os.listdir(target.parent)) == sorted(["web.tar", running])
        assert manifest(target.read_bytes())[0]["RepoTags"] == ["web:1.0"]
    finally:
        live.kill()
        live.wait()
