"""The imagedb backend: moby's fs_test.go (docs/moby-semantics.md §2) plus modes and atomicity."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import imagestore
from imagestore import DigestMismatch, ImageNotFound, ImageStoreError
from imagestore.moby.digest import digest_of
from imagestore.moby.files import atomic_write, opened_folder, read_optional, read_regular
from imagestore.moby.imagedb import ImageDB

FOO = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
BAR = "sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
BAZ = "sha256:baa5a0964d3320fbc0c6a922140453c8513ea24ab8fd0577034804a967248096"
FOOBAR = "sha256:c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"


@pytest.fixture
def backend(tmp_path: Path) -> ImageDB:
    return ImageDB(tmp_path / "imagedb")


def hex_(image_id: str) -> str:
    return image_id.split(":", 1)[1]


def all_names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for the test; the original is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


# -- fs_test.go ------------------------------------------------------------------------------
def test_get_invalid_data(backend: ImageDB) -> None:
    image_id = backend.set(b"foobar")
    assert image_id == FOOBAR
    (backend.content / hex_(image_id)).write_bytes(b"foobar2")
    with pytest.raises(DigestMismatch, match="failed to verify"):
        backend.get(image_id)


def test_invalid_set_directory_at_content_path(backend: ImageDB) -> None:
    (backend.content / hex_(FOOBAR)).mkdir()
    with pytest.raises(ImageStoreError, match="failed to write digest data"):
        backend.set(b"foobar")
    assert (backend.content / hex_(FOOBAR)).is_dir()
    assert [n for n in os.listdir(backend.content) if n.startswith(".tmp-")] == []


@pytest.mark.parametrize("where", [".", "content", "metadata"])
def test_invalid_root(tmp_path: Path, where: str) -> None:
    root = tmp_path / "root"
    if where == ".":
        root.write_bytes(b"")
    else:
        root.mkdir()
        (root / where).write_bytes(b"")
    with pytest.raises(ImageStoreError, match="failed to create storage backend"):
        ImageDB(root)


def test_metadata_get_set(backend: ImageDB) -> None:
    foo, bar = backend.set(b"foo"), backend.set(b"bar")
    assert (foo, bar) == (FOO, BAR)
    backend.set_metadata(foo, "parent", b"tval1")
    backend.set_metadata(foo, "lastUpdated", b"tval2")
    backend.set_metadata(bar, "parent", b"tval3")
    assert backend.get_metadata(foo, "parent") == b"tval1"
    assert backend.get_metadata(foo, "lastUpdated") == b"tval2"
    assert backend.get_metadata(bar, "parent") == b"tval3"
    # A missing key reads as absent (moby: "failed to read metadata").
    assert backend.get_metadata(bar, "lastUpdated") is None
    # Empty metadata is allowed and distinct from absent.
    backend.set_metadata(bar, "builtLocally", b"")
    assert backend.get_metadata(bar, "builtLocally") == b""
    # Setting metadata needs the content: "failed to get digest".
    with pytest.raises(ImageStoreError, match="failed to get digest"):
        backend.set_metadata(BAZ, "parent", b"tval")
    assert not (backend.metadata / hex_(BAZ)).exists()


def test_set_metadata_needs_verified_content(backend: ImageDB) -> None:
    foo = backend.set(b"foo")
    (backend.content / hex_(foo)).write_bytes(b"corrupt")
    with pytest.raises(DigestMismatch, match="failed to verify"):
        backend.set_metadata(foo, "parent", BAR.encode())
    assert backend.get_metadata(foo, "parent") is None


def test_metadata_keys_are_restricted(backend: ImageDB) -> None:
    foo = backend.set(b"foo")
    for key in ("tkey", "../parent", "parent/../../x", ""):
        with pytest.raises(ValueError):
            backend.set_metadata(foo, key, b"x")
    assert not (backend.metadata / hex_(foo)).exists()


def test_walk_lists_entries_unfiltered(backend: ImageDB) -> None:
    backend.set(b"foo")
    (backend.content / "foobar").write_bytes(b"foo")
    assert sorted(e.name for e in backend.walk()) == sorted([hex_(FOO), "foobar"])


def test_walk_lists_set_content(backend: ImageDB) -> None:
    assert list(backend.walk()) == []
    backend.set(b"foo")
    backend.set(b"bar")
    assert sorted(e.name for e in backend.walk()) == sorted([hex_(FOO), hex_(BAR)])


def test_walk_of_missing_content_folder_is_empty(tmp_path: Path) -> None:
    assert list(ImageDB(tmp_path / "nothing", create=False).walk()) == []
    assert not (tmp_path / "nothing").exists()


def test_invalid_walker_entry_is_skipped_by_sync_and_recorded(
    empty_root: Path, open_store: Callable[..., imagestore.Store]
) -> None:
    imagedb = ImageDB(empty_root / "imagedb")
    good = imagedb.set(b'{"rootfs": {"type": "layers"}}')
    (imagedb.content / "foobar").write_bytes(b'{"rootfs": {"type": "layers"}}')
    store = open_store(empty_root)
    assert list(store.map()) == [good]
    report = store.sync(full=True)
    problems = {p.path: p for p in report.problems}
    assert "imagedb/content/sha256/foobar" in problems
    assert problems["imagedb/content/sha256/foobar"].kind == "invalid-name"
    assert report.skipped == 1


def test_get_set(backend: ImageDB) -> None:
    assert backend.set(b"foobar") == FOOBAR
    random = os.urandom(8192)
    random_id = backend.set(random)
    assert random_id == digest_of(random)
    assert backend.get(FOOBAR) == b"foobar"
    assert backend.get(random_id) == random
    assert (backend.content / hex_(FOOBAR)).read_bytes() == b"foobar"


def test_set_again_returns_same_id_and_keeps_metadata(backend: ImageDB) -> None:
    foo = backend.set(b"foo")
    backend.set_metadata(foo, "parent", BAR.encode())
    assert backend.set(b"foo") == foo
    assert backend.get_metadata(foo, "parent") == BAR.encode()


def test_get_unset_key(backend: ImageDB) -> None:
    with pytest.raises(ImageNotFound, match="failed to get digest"):
        backend.get(FOOBAR)
    # Malformed IDs are refused before any path is built from them.
    for bad in ("foobar:abc", "sha256:abc", FOOBAR + "a", "sha256:../../../etc/passwd"):
        with pytest.raises((ValueError, ImageStoreError)):
            backend.get(bad)


@pytest.mark.parametrize("data", [b"", bytearray()])
def test_get_empty_data(backend: ImageDB, data: bytes) -> None:
    with pytest.raises(ImageStoreError, match="invalid empty data"):
        backend.set(data)
    assert list(backend.walk()) == []


def test_delete(backend: ImageDB) -> None:
    foo, bar = backend.set(b"foo"), backend.set(b"bar")
    backend.set_metadata(foo, "parent", bar.encode())
    backend.delete(foo)
    with pytest.raises(ImageNotFound, match="failed to get digest"):
        backend.get(foo)
    assert not (backend.metadata / hex_(foo)).exists()
    assert backend.get(bar) == b"bar"
    backend.delete(bar)
    with pytest.raises(ImageNotFound, match="failed to get digest"):
        backend.get(bar)
    backend.delete(bar)  # deleting again is harmless
    assert list(backend.walk()) == []


def test_delete_metadata(backend: ImageDB) -> None:
    foo = backend.set(b"foo")
    backend.set_metadata(foo, "parent", BAR.encode())
    backend.set_metadata(foo, "lastUpdated", b"x")
    backend.delete_metadata(foo, "parent")
    backend.delete_metadata(foo, "parent")  # missing key is not an error
    assert backend.get_metadata(foo, "parent") is None
    assert backend.get_metadata(foo, "lastUpdated") == b"x"
    assert backend.get(foo) == b"foo"


# -- modes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o000, 0o002, 0o022, 0o027, 0o077], ids=oct)
def test_modes_whatever_the_umask(tmp_path: Path, umask: Callable[[int], int],
                                  mask: int) -> None:
    umask(mask)
    root = tmp_path / "imagedb"
    backend = ImageDB(root)
    foo = backend.set(b"foo")
    backend.set_metadata(foo, "parent", BAR.encode())
    umask(0o022)
    folders = [root, root / "content", backend.content, root / "metadata", backend.metadata,
               backend.metadata / hex_(foo)]
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for file in (backend.content / hex_(foo), backend.metadata / hex_(foo) / "parent"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=oct)
def test_rewrite_fixes_file_mode(backend: ImageDB, umask: Callable[[int], int],
                                 mask: int) -> None:
    path = backend.content / hex_(FOO)
    path.write_bytes(b"foo")
    path.chmod(0o666)
    umask(mask)
    backend.set(b"foo")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- atomic writes ---------------------------------------------------------------------------
def test_writes_leave_no_temp_files(backend: ImageDB) -> None:
    ids = [backend.set(f"config {i}".encode()) for i in range(20)]
    for image_id in ids:
        backend.set_metadata(image_id, "parent", ids[0].encode())
        backend.set_metadata(image_id, "lastUpdated", b"2020-01-01T00:00:00Z")
    backend.set(b"config 0")
    leftovers = [n for n in all_names(backend.root) if ".tmp-" in n]
    assert leftovers == []
    assert sorted(e.name for e in backend.walk()) == sorted(hex_(i) for i in ids)


def test_failed_write_keeps_old_file_and_no_temp(backend: ImageDB,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    foo = backend.set(b"foo")
    backend.set_metadata(foo, "parent", BAR.encode())

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ImageStoreError):
        backend.set_metadata(foo, "parent", BAZ.encode())
    with pytest.raises(ImageStoreError, match="failed to write digest data"):
        backend.set(b"bar")
    monkeypatch.undo()
    assert backend.get_metadata(foo, "parent") == BAR.encode()
    assert not (backend.content / hex_(BAR)).exists()
    assert [n for n in all_names(backend.root) if ".tmp-" in n] == []


def test_atomic_write_refuses_non_regular_destination(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        atomic_write(tmp_path / "dir", b"x")
    assert (tmp_path / "dir").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["dir"]


# -- symlinks --------------------------------------------------------------------------------
def test_symlink_content_file_is_not_followed(backend: ImageDB, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"foo")
    (backend.content / hex_(FOO)).symlink_to(outside)
    with pytest.raises(ImageStoreError):
        backend.get(FOO)
    with pytest.raises(OSError):
        read_regular(backend.content / hex_(FOO))
    # Writing over it does not write through it either.
    with pytest.raises(ImageStoreError, match="failed to write digest data"):
        backend.set(b"foo")
    assert outside.read_bytes() == b"foo"
    assert (backend.content / hex_(FOO)).is_symlink()
    # Nor does metadata: set_metadata needs verified content first.
    with pytest.raises(ImageStoreError):
        backend.set_metadata(FOO, "parent", BAR.encode())


def test_symlink_metadata_is_not_followed(backend: ImageDB, tmp_path: Path) -> None:
    foo = backend.set(b"foo")
    secret = tmp_path / "secret"
    secret.write_bytes(BAR.encode())
    folder = backend.metadata / hex_(foo)
    folder.mkdir()
    (folder / "parent").symlink_to(secret)
    with pytest.raises(ImageStoreError):
        backend.get_metadata(foo, "parent")
    with pytest.raises(ImageStoreError):
        backend.set_metadata(foo, "parent", BAZ.encode())
    assert secret.read_bytes() == BAR.encode()
    # Deleting the image removes the link, never the target.
    backend.delete(foo)
    assert secret.read_bytes() == BAR.encode()


def test_symlinked_metadata_folder_is_not_followed_by_delete(backend: ImageDB,
                                                             tmp_path: Path) -> None:
    foo = backend.set(b"foo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "parent").write_bytes(BAR.encode())
    (backend.metadata / hex_(foo)).symlink_to(elsewhere, target_is_directory=True)
    backend.delete(foo)
    assert (elsewhere / "parent").read_bytes() == BAR.encode()
    assert not (backend.content / hex_(foo)).exists()


def test_read_regular_refuses_directories_and_fifos(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for name in ("d", "fifo"):
        with pytest.raises(OSError):
            read_regular(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(OSError):
        read_regular(tmp_path / "big", limit=99)
    assert read_regular(tmp_path / "big", limit=100) == b"x" * 100


def test_read_regular_reads_past_a_stale_size_and_still_limits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One read call covers a file whose size fstat gave; a file that grew since is read to
    its end, and the size limit still holds."""
    path = tmp_path / "grew"
    data = os.urandom(200_000)
    path.write_bytes(data)
    real_fstat = os.fstat

    def stale(fd: int) -> os.stat_result:  # the size before the file grew
        st = list(real_fstat(fd))
        st[stat.ST_SIZE] = 10
        return os.stat_result(st)

    monkeypatch.setattr(os, "fstat", stale)
    assert read_regular(path) == data
    with pytest.raises(OSError, match="larger than 100000 bytes"):
        read_regular(path, limit=100_000)
    monkeypatch.undo()
    assert read_regular(path) == data
    with pytest.raises(OSError, match="larger than 199999 bytes"):
        read_regular(path, limit=199_999)


def test_read_optional_limits_and_reads_relative_to_a_folder(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"x" * 10)
    (tmp_path / "big").write_bytes(b"x" * 100)
    with opened_folder(tmp_path) as fd:
        assert fd is not None
        assert read_optional("small", limit=10, dir_fd=fd) == b"x" * 10
        assert read_optional("absent", dir_fd=fd) is None
        with pytest.raises(OSError, match="larger than 99 bytes"):
            read_optional("big", limit=99, dir_fd=fd)
    with opened_folder(tmp_path / "absent") as fd:
        assert fd is None
