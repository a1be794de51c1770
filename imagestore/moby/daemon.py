"""Is a Docker daemon using this root right now? Writing under its feet corrupts its view.

Daemons are found by scanning ``/proc`` for processes whose argv[0] is named ``dockerd``, and
by the pid files one writes (``/var/run/docker.pid``, ``/run/docker.pid``,
``$XDG_RUNTIME_DIR/docker.pid``, the ``pidfile`` of the default config files,
``<data-root>/../docker.pid``), which still name a daemon that ``/proc`` hides (``hidepid``).

Each daemon's data-root is worked out as dockerd does: ``--data-root``, ``-g``/``--graph`` on
its command line (last one wins, ``--opt value``, ``--opt=value``, ``-gVALUE``), else
``data-root`` or the older ``graph`` of its config file (``--config-file``, by default
``/etc/docker/daemon.json``, or ``$XDG_CONFIG_HOME/docker/daemon.json`` for a rootless daemon),
else ``/var/lib/docker`` (``$XDG_DATA_HOME/docker`` rootless). Paths are taken as the daemon
sees them: relative ones against its working directory, absolute ones under its root
(``/proc/<pid>/cwd``, ``/proc/<pid>/root``: a chrooted or containerised daemon is judged by its
own view). The daemon's data-root and this root are the same folder when they are the same
inode (bind mounts and symlinks included), else when their real paths match.

A daemon whose data-root cannot be worked out (its command line, working directory,
environment or config file unreadable, the config not valid JSON) is not assumed to be
elsewhere: the answer says it cannot tell, and why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagestore.errors import DaemonRunning, ReadOnlyStore
from imagestore.moby.files import process_alive

DEFAULT_DATA_ROOT = "/var/lib/docker"
# Module constants so tests can point them elsewhere; never written.
DEFAULT_CONFIG_FILE = "/etc/docker/daemon.json"
DEFAULT_PIDFILES: tuple[str, ...] = ("/var/run/docker.pid", "/run/docker.pid")
# dockerd's boolean shorthands, which pflag lets stand before another one (``-Dg DIR``).
_BOOL_SHORTHANDS = frozenset("Dhv")


@dataclass(frozen=True)
class Daemon:
    """A live dockerd that uses the root (``sure``), or may: ``reason`` says why it cannot be
    told. For a sure answer ``reason`` says where the daemon's data-root came from."""

    pid: int
    sure: bool
    reason: str


class _Unsure(Exception):
    """A daemon's data-root cannot be worked out; the message says why."""


def data_root_of(image_root: Path) -> Path:
    """``<data-root>`` for ``<data-root>/image/<driver>``."""
    return image_root.resolve().parent.parent


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _cmdline(pid: int) -> list[str]:
    """The process's argv; raises ``OSError`` when it cannot be read."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    if not raw:
        return []  # a kernel thread or a zombie
    return [os.fsdecode(a) for a in raw.removesuffix(b"\0").split(b"\0")]


def _is_dockerd(args: Sequence[str]) -> bool:
    return bool(args) and os.path.basename(args[0]) == "dockerd"


def _flag(args: Sequence[str], long: str, short: str | None = None) -> str | None:
    """The value pflag gives dockerd's string flag ``--long``/``-short``: the last one given
    as ``--long v``, ``--long=v``, ``-s v``, ``-s=v``, ``-sv`` or ``-Ds v``; flags end at
    ``--``. ``None`` when not given."""
    value = None
    i = 1
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, rest = arg[2:].partition("=")
            if name == long:
                if eq:
                    value = rest
                elif i < len(args):
                    value = args[i]
                    i += 1
        elif short and arg.startswith("-"):
            for j, char in enumerate(arg[1:], 1):
                if char == short:
                    rest = arg[j + 1:]
                    if rest:
                        value = rest.removeprefix("=")
                    elif i < len(args):
                        value = args[i]
                        i += 1
                    break
                if char not in _BOOL_SHORTHANDS:
                    break
    return value


def _read_json(raw: bytes) -> object:
    return json.loads(raw.decode("utf-8-sig"))  # dockerd skips a UTF-8 byte-order mark


def _may_look_inside(pid: int) -> bool:
    """May this process follow ``/proc/<pid>/root`` and ``/cwd`` (ptrace access)?"""
    try:
        os.stat(f"/proc/{pid}/root/")
    except OSError:
        return False
    return True


def _cwd(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/cwd")


class _View:
    """One daemon's paths as it sees them. Through ``/proc/<pid>/root`` and ``/cwd`` when
    this process may look there (root, or the daemon's own user); else host paths, and a
    relative path needs the working directory, which then cannot be read either."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.through_proc = _may_look_inside(pid)

    def __call__(self, path: str) -> str:
        """Where this process finds the daemon's ``path``."""
        if self.through_proc:
            if os.path.isabs(path):
                return f"/proc/{self.pid}/root{path}"
            return f"/proc/{self.pid}/cwd/{path}"
        if os.path.isabs(path):
            return path
        try:
            cwd = _cwd(self.pid)
        except OSError as exc:
            raise _Unsure(f"its working directory cannot be read ({_why(exc)}) to resolve "
                          f"{path!r}") from None
        return os.path.join(cwd, path)


class _Env:
    """The parts of a daemon's environment dockerd's defaults depend on: rootless mode
    (``ROOTLESSKIT_STATE_DIR``) moves them under the daemon user's XDG folders."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._vars: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._vars is None:
            try:
                raw = Path(f"/proc/{self.pid}/environ").read_bytes()
            except OSError as exc:
                if _uid(self.pid) == 0:
                    self._vars = {}  # a daemon running as root is not rootless
                    return self._vars
                raise _Unsure(f"its environment cannot be read ({_why(exc)}), and as it "
                              "does not run as root it may be rootless, with defaults there"
                              ) from None
            pairs = (os.fsdecode(e).partition("=") for e in raw.split(b"\0") if e)
            self._vars = {name: value for name, _, value in pairs}
        return self._vars

    def rootless(self) -> bool:
        return bool(self._load().get("ROOTLESSKIT_STATE_DIR"))

    def xdg(self, name: str, fallback: str) -> str:
        """``$XDG_<name>``, else ``$HOME/<fallback>``, as the daemon sees them."""
        env = self._load()
        if env.get(name):
            return env[name]
        if env.get("HOME"):
            return os.path.join(env["HOME"], fallback)
        raise _Unsure(f"it is rootless and neither {name} nor HOME is in its environment")


def _uid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective
    except (OSError, ValueError, IndexError):
        pass
    return None


def _config(view: _View, path: str, explicit: bool) -> dict[str, object]:
    """The daemon's config file; a missing default one is empty, as for dockerd."""
    try:
        raw = Path(view(path)).read_bytes()
    except FileNotFoundError:
        if not explicit:
            return {}
        raise _Unsure(f"its config file {path} is gone") from None
    except OSError as exc:
        raise _Unsure(f"its config file {path} is unreadable: {_why(exc)}") from None
    try:
        data = _read_json(raw)
    except ValueError as exc:
        raise _Unsure(f"its config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Unsure(f"its config file {path} does not hold a JSON object")
    return data


def _daemon_data_root(pid: int, args: Sequence[str], view: _View) -> tuple[str, str]:
    """The daemon's data-root as it spells it, and where that came from."""
    for long, short in (("data-root", None), ("graph", "g")):
        root = _flag(args, long, short)
        if root:
            return root, f"--{long}"
    env = _Env(pid)
    explicit = _flag(args, "config-file")
    if explicit:
        path = explicit
    elif env.rootless():
        path = os.path.join(env.xdg("XDG_CONFIG_HOME", ".config"), "docker", "daemon.json")
    else:
        path = DEFAULT_CONFIG_FILE
    config = _config(view, path, explicit is not None) if explicit != "" else {}
    for key in ("data-root", "graph"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise _Unsure(f"the {key!r} of its config file {path} is not a string")
        if value:
            return value, f"{key!r} in {path}"
    if env.rootless():
        return os.path.join(env.xdg("XDG_DATA_HOME", ".local/share"), "docker"), "rootless default"
    return DEFAULT_DATA_ROOT, "the default"


def _same_folder(where: str, data_root: Path, ours: os.stat_result | None) -> bool:
    if ours is not None:
        try:
            st = os.stat(where)
        except FileNotFoundError:
            return False
        except OSError:
            pass
        else:
            return (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino)
    return os.path.realpath(where) == str(data_root)


def _uses(pid: int, args: Sequence[str], data_root: Path,
          ours: os.stat_result | None) -> str | None:
    """Where the daemon's data-root, which is this root, came from; ``None`` when it is
    another folder. Raises ``_Unsure``."""
    view = _View(pid)
    root, source = _daemon_data_root(pid, args, view)
    if _same_folder(view(root), data_root, ours):
        return f"its data-root {root} ({source}) is this root"
    return None


def _pidfiles(data_root: Path) -> list[str]:
    files = list(DEFAULT_PIDFILES)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        files.append(os.path.join(runtime, "docker.pid"))
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    for config in (DEFAULT_CONFIG_FILE, os.path.join(home, "docker", "daemon.json")):
        try:
            data = _read_json(Path(config).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("pidfile"), str):
            files.append(data["pidfile"])
    files.append(str(data_root.parent / "docker.pid"))
    return list(dict.fromkeys(files))


def _candidates(data_root: Path) -> Iterator[tuple[int, list[str] | str]]:
    """Each live dockerd once: its pid and argv, or for a pid file's process whose argv
    cannot be read, why."""
    seen: set[int] = set()
    for pidfile in _pidfiles(data_root):
        try:
            pid = int(Path(pidfile).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid <= 0 or pid in seen or not process_alive(pid):
            continue
        seen.add(pid)
        try:
            args = _cmdline(pid)
        except OSError as exc:
            yield pid, f"{pidfile} names it, but its command line cannot be read: {_why(exc)}"
            continue
        if _is_dockerd(args):
            yield pid, args
    for pid in _listed_pids():
        if pid not in seen:
            try:
                args = _cmdline(pid)
            except OSError:
                continue
            if _is_dockerd(args):
                yield pid, args


def _listed_pids() -> list[int]:
    """The processes ``/proc`` lists (with ``hidepid=2``, only this user's)."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def running_daemon(image_root: Path) -> Daemon | None:
    """A live ``dockerd`` that uses ``image_root`` (``sure``), else one that may (the first
    whose data-root cannot be worked out), else ``None``."""
    data_root = data_root_of(image_root)
    try:
        ours: os.stat_result | None = os.stat(data_root)
    except OSError:
        ours = None
    unsure: Daemon | None = None
    for pid, found in _candidates(data_root):
        if isinstance(found, str):
            unsure = unsure or Daemon(pid, False, found)
            continue
        try:
            source = _uses(pid, found, data_root, ours)
        except _Unsure as exc:
            unsure = unsure or Daemon(pid, False, str(exc))
            continue
        if source is not None:
            return Daemon(pid, True, source)
    return unsure


def check_writable(image_root: Path, *, readonly: bool, force: bool, what: str) -> None:
    """Raise unless writing under the root is allowed now: not opened read-only, and no live
    dockerd using it or that cannot be told not to (``force`` overrides the latter, at the
    caller's risk)."""
    if readonly:
        raise ReadOnlyStore(f"cannot {what}: the store was opened read-only")
    if not force:
        daemon = running_daemon(image_root)
        if daemon is not None:
            raise DaemonRunning(what, daemon.pid, daemon.sure, daemon.reason)
