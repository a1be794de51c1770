"""What is mounted where (``/proc/self/mountinfo``, the table moby's ``mountinfo`` reads), and
walking a tree without leaving it: no mount crossed, no symlink followed, no name that climbs.

Removing a driver folder while something is mounted under it would delete through the mount:
a container's merged overlay, or a bind mount of a host folder. moby unmounts first
(``EnsureRemoveAll``); a tool that is not the daemon must not, so it refuses instead. Only this
process's mount namespace is visible: a daemon in another namespace is caught by the
live-daemon check, not here; a walk that meets another device refuses as a last guard.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from imagestore.errors import DriverBusy, UnsafeDriverData

MOUNTINFO = "/proc/self/mountinfo"

# The kernel escapes space, tab, newline and backslash in paths as three octal digits
# (``\040``...); moby's parser accepts any three octal digits up to 0o377.
_ESCAPE = re.compile(rb"\\([0-3][0-7][0-7])")


def unescape(field: bytes) -> bytes:
    """A mountinfo path field as the path's bytes."""
    return _ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), field)


def parse(data: bytes) -> list[str]:
    """The mount points of a mountinfo table, in its order. Lines too short to hold a mount
    point are skipped: a damaged line must not hide the others."""
    points = []
    for line in data.splitlines():
        fields = line.split(b" ")
        if len(fields) >= 5 and fields[4]:
            points.append(os.fsdecode(unescape(fields[4])))
    return points


def mount_points(mountinfo: str | os.PathLike[str] = MOUNTINFO) -> list[str]:
    """Every mount point of this mount namespace. Raises ``OSError`` when the table cannot be
    read: "nothing is mounted" must never be the answer to "cannot tell"."""
    with open(mountinfo, "rb") as f:
        return parse(f.read())


def mounted_under(path: str | os.PathLike[str],
                  mountinfo: str | os.PathLike[str] = MOUNTINFO) -> list[str]:
    """Mount points at ``path`` or below it, sorted. ``path`` is compared by its real path,
    as the kernel lists mounts by theirs."""
    real = os.path.realpath(path)
    below = real.rstrip("/") + "/"
    return sorted({p for p in mount_points(mountinfo) if p == real or p.startswith(below)})


def check_unmounted(home: str | os.PathLike[str], mountinfo: str | os.PathLike[str]) -> None:
    """Raise ``DriverBusy`` when anything is mounted under ``home``, or when the mount table
    cannot be read."""
    try:
        mounts = mounted_under(home, mountinfo)
    except OSError as exc:
        raise DriverBusy(str(home), (), f"cannot read {mountinfo} ({exc.strerror or exc}) "
                         f"to see what is mounted") from None
    if mounts:
        raise DriverBusy(str(home), tuple(mounts))


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def is_plain_name(name: str) -> bool:
    """A name that stays inside the folder it is joined to: never ``..``, ``/`` or empty."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def open_folder(name: str | os.PathLike[str], path: Path, parent_fd: int | None = None, *,
                follow: bool = False) -> int:
    """Open a folder (relative to ``parent_fd``), its last component never a symlink unless
    ``follow``; ``UnsafeDriverData`` when it is not a folder, ``FileNotFoundError`` if absent."""
    try:
        return os.open(name, _DIR & ~(os.O_NOFOLLOW if follow else 0), dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeDriverData(str(path), "not a folder (a symlink or a file)") from None
        raise


def walk(parent_fd: int, name: str, path: str | os.PathLike[str], *, remove: bool) -> int:
    """Apparent bytes of the regular files at and under ``name`` (relative to the open folder
    ``parent_fd``; 0 when absent), removed as they are counted when ``remove``. Never follows
    a symlink; a folder on another device than ``parent_fd`` is a mount point: ``DriverBusy``.
    Iterative, so that no depth of folders exhausts the stack. ``path`` (``name``'s, for
    messages) is joined as plain strings: a prune walks a folder for every layer it releases."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        if remove:
            os.unlink(name, dir_fd=parent_fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    dev = os.fstat(parent_fd).st_dev
    total = 0
    frames: list[tuple[int, list[str], int, str, str]] = []  # fd, names left, parent, name

    def enter(pfd: int, child: str, where: str) -> None:
        fd = os.open(child, _DIR, dir_fd=pfd)
        try:
            if os.fstat(fd).st_dev != dev:
                raise DriverBusy(where, (where,))
            frames.append((fd, os.listdir(fd), pfd, child, where))
        except BaseException:
            os.close(fd)
            raise

    try:
        enter(parent_fd, name, os.fspath(path))
        while frames:
            fd, names, pfd, folder, where = frames[-1]
            if not names:
                frames.pop()
                os.close(fd)
                if remove:
                    os.rmdir(folder, dir_fd=pfd)
                continue
            child = names.pop()
            try:
                st = os.lstat(child, dir_fd=fd)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                enter(fd, child, f"{where}/{child}")
                continue
            if remove:
                os.unlink(child, dir_fd=fd)
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    finally:
        for frame in frames:
            os.close(frame[0])
    return total


__all__ = ["MOUNTINFO", "DriverBusy", "UnsafeDriverData", "check_unmounted", "is_plain_name",
           "mount_points", "mounted_under", "open_folder", "parse", "unescape", "walk"]
