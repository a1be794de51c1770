"""Is a Docker daemon using this root right now? Writing under its feet corrupts its view.

A daemon is found by its pidfile (``/var/run/docker.pid``, the rootless one, or
``<data-root>/../docker.pid``) or by scanning ``/proc`` for a ``dockerd`` whose data-root is
this root's; either way the process must be alive and really be ``dockerd``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from imagestore.errors import DaemonRunning, ReadOnlyStore

DEFAULT_DATA_ROOT = "/var/lib/docker"


def data_root_of(image_root: Path) -> Path:
    """``<data-root>`` for ``<data-root>/image/<driver>``."""
    return image_root.resolve().parent.parent


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _is_dockerd(args: list[str]) -> bool:
    return bool(args) and os.path.basename(args[0]) == "dockerd"


def _dockerds() -> Iterator[tuple[int, list[str]]]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for name in names:
        if name.isdigit():
            args = _cmdline(int(name))
            if _is_dockerd(args):
                yield int(name), args


def _pidfiles(data_root: Path) -> list[Path]:
    files = [Path("/var/run/docker.pid"), Path("/run/docker.pid"), data_root.parent / "docker.pid"]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        files.append(Path(runtime) / "docker.pid")
    return files


def running_daemon(image_root: Path) -> int | None:
    """The pid of a live ``dockerd`` that owns ``image_root``, else ``None``."""
    data_root = data_root_of(image_root)
    for pidfile in _pidfiles(data_root):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        args = _cmdline(pid)
        if _is_dockerd(args) and _owns(args, data_root):
            return pid
    for pid, args in _dockerds():
        if _owns(args, data_root):
            return pid
    return None


def _owns(args: list[str], data_root: Path) -> bool:
    root = _option(args, "--data-root") or _option(args, "-g") or DEFAULT_DATA_ROOT
    try:
        return Path(root).resolve() == data_root
    except OSError:
        return False


def check_writable(image_root: Path, *, readonly: bool, force: bool, what: str) -> None:
    """Raise unless writing under the root is allowed now: not opened read-only, and no live
    dockerd using it (``force`` overrides the latter, at the caller's risk)."""
    if readonly:
        raise ReadOnlyStore(f"cannot {what}: the store was opened read-only")
    if not force:
        pid = running_daemon(image_root)
        if pid is not None:
            raise DaemonRunning(
                f"cannot {what}: dockerd (pid {pid}) is using this root; stop it first, "
                f"or pass --force (force=True) at the risk of corrupting its view")


def may_tidy(image_root: Path, readonly: bool) -> bool:
    """Under the writers' lock no imagestore write is in flight: temp files are leftovers of
    a crash, safe to remove unless the root is read-only or a dockerd is writing."""
    return not readonly and running_daemon(image_root) is None
