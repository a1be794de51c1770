"""Reading and writing files the way Docker does: never following a symlink, never blocking
on a FIFO, never reading more than a limit, and writing atomically (temp file in the same
folder, fsync, rename) with Docker's modes, so a real engine can keep using what we wrote.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_PREFIX = ".tmp-"
# Real configs are kilobytes; one larger than this is not an image config but an attack on
# memory (and on every listing that decodes it): such an entry is skipped and recorded.
MAX_FILE_SIZE = 32 * 1024 * 1024


StrPath = str | os.PathLike[str]


_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@contextlib.contextmanager
def opened_folder(path: StrPath) -> Iterator[int | None]:
    """A folder's descriptor for ``dir_fd``-relative reads (a short path to resolve instead of
    the whole one, hundreds of thousands of times in a cold sync); ``None`` when it cannot be
    opened, and readers then use whole paths as before."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def read_regular(path: StrPath, limit: int = MAX_FILE_SIZE, *, dir_fd: int | None = None
                 ) -> bytes:
    """Read a regular file without following a symlink at its last component.

    Raises ``FileNotFoundError`` when absent and ``OSError`` (with a clear message) when the
    entry is a symlink, a directory or another non-regular file, or larger than ``limit``.
    """
    try:
        fd = os.open(path, _READ, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink (not followed)", os.fspath(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EISDIR, "not a regular file", os.fspath(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
        # A short read of a regular file is its end: the common case is one read call.
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:  # it grew since fstat: read on to the end
            chunks = [data]
            total = len(data)
            while total <= limit and (more := os.read(fd, 65536)):
                chunks.append(more)
                total += len(more)
            data = b"".join(chunks)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
        return data
    finally:
        os.close(fd)


def read_optional(path: StrPath, limit: int = 1 << 16, *, dir_fd: int | None = None
                  ) -> bytes | None:
    """A metadata-sized file's bytes, ``None`` when it does not exist.

    The hot path of a cold sync (hundreds of thousands of tiny files): no ``fstat``, one
    ``read``. Never follows a symlink, never blocks on a FIFO (it reads as empty), refuses a
    directory or anything longer than ``limit``.
    """
    try:
        fd = os.open(path, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symlink (not followed)", os.fspath(path)) from None
        raise
    try:
        # One call: a short read of a regular file is its end, and a read that fills the
        # buffer is over the limit (hundreds of thousands of these make a cold sync).
        data = os.read(fd, limit + 1)
    except BlockingIOError:
        data = b""
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", os.fspath(path))
    return data


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "destination is not a regular file", str(path))
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every folder it creates is 0700 whatever the umask (Docker's mode;
    folders that already exist are left as they are)."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=DIR_MODE)
            os.chmod(folder, DIR_MODE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
