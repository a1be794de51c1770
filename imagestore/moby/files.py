"""Reading and writing files the way Docker does: never following a symlink, never blocking
on a FIFO, never reading more than a limit, and writing atomically (temp file in the same
folder, fsync, rename) with Docker's modes, so a real engine can keep using what we wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
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


# -- temp files of long writes, and the ones their writers left ------------------------------
# ``docker save -o`` (moby's tarexport) writes its archive straight to the target; a long write
# here goes to a temp file beside it, renamed into place at the end. A writer killed outright
# (SIGKILL, a crash, a reboot) cannot remove its temp file, so the temp file says who wrote it:
# its name carries the writer's pid, and the writer holds an ``flock`` on it for as long as
# it lives (the kernel drops the lock however the process ends, in whatever pid namespace).


def owned_temp(target: Path) -> tuple[int, Path]:
    """A new temp file beside ``target`` for a long write, mode 0600: its descriptor and
    path, ``.NAME.PID-RANDOM.tmp``, locked by this process (the lock lasts while any
    duplicate of the descriptor stays open)."""
    path = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE)
    with contextlib.suppress(OSError):  # a file system without locks: the pid alone tells
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, path


def remove_abandoned_temps(target: Path) -> list[tuple[Path, int]]:
    """Remove the temp files ``owned_temp`` made beside ``target`` whose writer is gone: the
    process its name gives no longer runs (or is a zombie), nobody holds its lock, and it is
    this user's regular file. Whatever cannot be told for sure is kept. Returns each file
    removed, with its size."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.([0-9]+)-[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        found = pattern.fullmatch(name)
        if found is not None:
            size = _remove_if_abandoned(target.parent / name, int(found.group(1)))
            if size is not None:
                removed.append((target.parent / name, size))
    return removed


def _remove_if_abandoned(path: Path, pid: int) -> int | None:
    if process_alive(pid):
        return None
    try:
        fd = os.open(path, _READ)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        # Held: its writer lives (the pid of another pid namespace means nothing here).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if process_alive(pid):  # made a moment ago, not locked yet: its writer is starting
            return None
        os.unlink(path)
        return st.st_size
    except OSError:
        return None
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words ("a FIFO", "a folder"...)."""
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISLNK, "a symlink"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def process_alive(pid: int) -> bool:
    """The process ``pid`` exists and is not a zombie (whose files are closed, its locks
    released); one that cannot be signalled (another user's) exists."""
    if pid <= 0:
        return True  # not a writer's pid: nothing to judge by
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True


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
