"""The live-daemon guard, against real processes posing as ``dockerd``: where each one's
data-root is (command line, config file, working directory, its own root, rootless
defaults), pid files, and "cannot tell" instead of "no daemon".

A fake daemon is the Python interpreter started with argv[0] ``dockerd`` (``/proc`` shows
``dockerd -c <code> <flags>...``, as for a real one). Every condition that makes a daemon
"cannot tell" is local to this test process (a patched default config path or reader), so
imagestore processes running beside the suite never see it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagestore.errors import DaemonRunning
from imagestore.moby import daemon
from imagestore.moby.daemon import Daemon, check_writable, running_daemon

SLEEP = "import time; time.sleep(120)"
Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default config and pid files under tmp_path, never the host's."""
    monkeypatch.setattr(daemon, "DEFAULT_CONFIG_FILE", str(tmp_path / "etc" / "daemon.json"))
    monkeypatch.setattr(daemon, "DEFAULT_PIDFILES", (str(tmp_path / "run" / "docker.pid"),))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str, argv0: str = "dockerd", cwd: Path | None = None,
              env: dict[str, str] | None = None, code: str = SLEEP,
              bind: tuple[Path, Path] | None = None) -> subprocess.Popen[bytes]:
        """``bind``: run in a mount namespace of its own where ``bind[0]`` is mounted on
        ``bind[1]`` (as a container sees the host's folders)."""
        base = {k: v for k, v in os.environ.items() if k != "ROOTLESSKIT_STATE_DIR"}
        if bind is None:
            proc = subprocess.Popen([argv0, "-c", code, *flags], executable=sys.executable,
                                    cwd=cwd, env={**base, **(env or {})})
        else:
            script = ('mount --make-rprivate / && mount --bind "$1" "$2" && '
                      'exec -a "$3" "$4" -c "$5" "${@:6}"')
            proc = subprocess.Popen(["unshare", "-m", "bash", "-c", script, "_", *map(str, bind),
                                     argv0, sys.executable, code, *flags],
                                    cwd=cwd, env={**base, **(env or {})},
                                    stderr=subprocess.DEVNULL)
        procs.append(proc)
        for _ in range(250):
            if proc.poll() is not None:
                pytest.skip("cannot start the fake daemon here (mount namespaces?)")
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(argv0.encode()):
                break
            time.sleep(0.02)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _store(data_root: Path) -> Path:
    root = data_root / "image" / "vfs"
    root.mkdir(parents=True)
    return root


def _sure(found: Daemon | None, proc: subprocess.Popen[bytes]) -> bool:
    return found is not None and found.sure and found.pid == proc.pid


def test_data_root_relative_to_the_daemons_working_directory(
        tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = _store(tmp_path / "daemon-cwd" / "docker")
    # Our own working directory holds a "docker" too: it is not the daemon's.
    other = _store(tmp_path / "our-cwd" / "docker")
    monkeypatch.chdir(tmp_path / "our-cwd")
    proc = spawn("--data-root", "docker", cwd=tmp_path / "daemon-cwd")
    assert _sure(running_daemon(mine), proc)
    assert running_daemon(other) is None


@pytest.mark.parametrize("form", [
    ["--data-root={}"],
    ["--graph", "{}"],
    ["-g", "{}"],
    ["-g={}"],
    ["-g{}"],
    ["-Dg", "{}"],
    ["--data-root", "{other}", "--data-root", "{}"],  # pflag: the last one wins
    ["--data-root={other}", "--data-root={}"],
])
def test_command_line_forms(form: list[str], tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    other = _store(tmp_path / "other")
    flags = [f.format(str(tmp_path / "docker"), other=str(tmp_path / "other")) for f in form]
    proc = spawn(*flags)
    assert _sure(running_daemon(root), proc)
    assert running_daemon(other) is None


def test_a_symlinked_data_root_is_the_same_root(tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    proc = spawn("--data-root", str(tmp_path / "link"))
    assert _sure(running_daemon(root), proc)


@pytest.mark.parametrize("key", ["data-root", "graph"])
def test_config_file_names_the_data_root(key: str, tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    config = tmp_path / "conf.json"
    config.write_text(json.dumps({key: str(tmp_path / "docker"), "debug": True}))
    proc = spawn("--config-file", str(config))
    assert _sure(running_daemon(root), proc)
    found = running_daemon(root)
    assert found is not None and repr(key) in found.reason


def test_relative_config_file_and_data_root_follow_the_working_directory(
        tmp_path: Path, spawn: Spawn) -> None:
    cwd = tmp_path / "srv"
    root = _store(cwd / "docker")
    (cwd / "conf").mkdir()
    (cwd / "conf" / "d.json").write_text('{"data-root": "docker"}')  # against cwd, as dockerd
    proc = spawn("--config-file=conf/d.json", cwd=cwd)
    assert _sure(running_daemon(root), proc)


def test_the_default_config_file(tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    proc = spawn()
    assert running_daemon(root) is None  # no config: /var/lib/docker
    Path(daemon.DEFAULT_CONFIG_FILE).write_text(json.dumps({"data-root": str(tmp_path / "docker")}))
    assert _sure(running_daemon(root), proc)


def test_the_command_line_needs_no_config(tmp_path: Path, spawn: Spawn) -> None:
    """dockerd refuses a data-root both on the command line and in the config, so with one on
    the command line a broken default config says nothing about it."""
    root = _store(tmp_path / "docker")
    Path(daemon.DEFAULT_CONFIG_FILE).write_text("{broken")
    proc = spawn("--data-root", str(tmp_path / "docker"))
    assert _sure(running_daemon(root), proc)
    spawn("--data-root", str(tmp_path / "elsewhere"))
    assert running_daemon(_store(tmp_path / "third")) is None


def test_a_rootless_daemon_uses_its_xdg_folders(tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "share" / "docker")
    env = {"ROOTLESSKIT_STATE_DIR": str(tmp_path / "rk"), "XDG_DATA_HOME": str(tmp_path / "share"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proc = spawn(env=env)
    assert _sure(running_daemon(root), proc)
    # Its config is $XDG_CONFIG_HOME/docker/daemon.json, not /etc/docker/daemon.json.
    (tmp_path / "cfg" / "docker").mkdir(parents=True)
    (tmp_path / "cfg" / "docker" / "daemon.json").write_text(
        json.dumps({"data-root": str(tmp_path / "moved")}))
    moved = _store(tmp_path / "moved")
    assert running_daemon(root) is None
    assert _sure(running_daemon(moved), proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_a_chrooted_daemon_is_judged_by_its_own_view(tmp_path: Path, spawn: Spawn) -> None:
    jail = tmp_path / "jail"
    inside = _store(jail / "docker")
    host = _store(tmp_path / "docker")
    # The jail has its own folder at the host store's path: that is the one the daemon uses.
    _store(jail / str(tmp_path / "docker").lstrip("/"))
    code = "import os, time; os.chroot('.'); time.sleep(120)"
    a = spawn("--data-root", "/docker", cwd=jail, code=code)
    b = spawn("--data-root", str(tmp_path / "docker"), cwd=jail, code=code)
    for _ in range(100):
        if os.readlink(f"/proc/{a.pid}/root") == os.readlink(f"/proc/{b.pid}/root") == str(jail):
            break
        time.sleep(0.02)
    assert _sure(running_daemon(inside), a)
    assert running_daemon(host) is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare")
def test_a_daemon_in_another_mount_namespace_is_judged_by_its_own_view(
        tmp_path: Path, spawn: Spawn) -> None:
    """Paths are compared by the folder they reach in the daemon's namespace: a container's
    bind mount of our root is our root, and its own folder at our root's path is not."""
    ours = _store(tmp_path / "docker")
    (tmp_path / "mnt").mkdir()
    a = spawn("--data-root", str(tmp_path / "mnt"), bind=(tmp_path / "docker", tmp_path / "mnt"))
    assert _sure(running_daemon(ours), a)
    a.kill()
    a.wait()
    other = _store(tmp_path / "other")
    b = spawn("--data-root", str(tmp_path / "docker"),
              bind=(tmp_path / "other", tmp_path / "docker"))
    assert running_daemon(ours) is None
    assert _sure(running_daemon(other), b)


def test_host_paths_when_the_daemon_cannot_be_looked_into(
        tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user who may not follow /proc/<pid>/root: host paths, relative ones resolved
    with /proc/<pid>/cwd, and "cannot tell" when that cannot be read either."""
    monkeypatch.setattr(daemon, "_may_look_inside", lambda pid: False)
    root = _store(tmp_path / "docker")
    proc = spawn("--data-root", "docker", cwd=tmp_path)
    assert _sure(running_daemon(root), proc)

    def denied(pid: int) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(daemon, "_cwd", denied)
    found = running_daemon(root)
    assert found == Daemon(proc.pid, False, "its working directory cannot be read "
                                            "(Permission denied) to resolve 'docker'")


def test_a_pid_file_names_a_daemon_proc_does_not_list(
        tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "_listed_pids", list)  # as with hidepid=2
    root = _store(tmp_path / "docker")
    proc = spawn("--data-root", str(tmp_path / "docker"))
    assert running_daemon(root) is None
    Path(daemon.DEFAULT_PIDFILES[0]).write_text(f"{proc.pid}\n")
    assert _sure(running_daemon(root), proc)


def test_the_pid_file_of_the_default_config(
        tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "_listed_pids", list)
    root = _store(tmp_path / "docker")
    proc = spawn("--data-root", str(tmp_path / "docker"), "--pidfile", str(tmp_path / "d.pid"))
    Path(daemon.DEFAULT_CONFIG_FILE).write_text(json.dumps({"pidfile": str(tmp_path / "d.pid")}))
    assert running_daemon(root) is None
    (tmp_path / "d.pid").write_text(str(proc.pid))
    assert _sure(running_daemon(root), proc)


def test_pid_files_of_dead_or_other_processes_do_not_count(
        tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    dead = spawn("--data-root", str(tmp_path / "docker"))
    dead.kill()
    dead.wait()
    other = spawn("--data-root", str(tmp_path / "docker"), argv0="containerd")
    for pid in (dead.pid, other.pid):
        Path(daemon.DEFAULT_PIDFILES[0]).write_text(str(pid))
        assert running_daemon(root) is None


def test_a_pid_files_process_that_cannot_be_examined(
        tmp_path: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _store(tmp_path / "docker")
    proc = spawn("--data-root", str(tmp_path / "elsewhere"))
    real = daemon._cmdline

    def hidden(pid: int) -> list[str]:
        if pid == proc.pid:
            raise PermissionError(13, "Permission denied")  # as with hidepid=1
        return real(pid)

    monkeypatch.setattr(daemon, "_cmdline", hidden)
    assert running_daemon(root) is None  # only listed in /proc: not known to be dockerd
    Path(daemon.DEFAULT_PIDFILES[0]).write_text(str(proc.pid))
    found = running_daemon(root)
    assert found is not None and (found.pid, found.sure) == (proc.pid, False)
    assert "its command line cannot be read: Permission denied" in found.reason


def test_argv0_names_the_daemon(tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    spawn("--data-root", str(tmp_path / "docker"), argv0="dockerd-rootless.sh")
    spawn("--data-root", str(tmp_path / "docker"), argv0="/usr/bin/containerd")
    assert running_daemon(root) is None
    proc = spawn("--data-root", str(tmp_path / "docker"), argv0="/usr/local/bin/dockerd")
    assert _sure(running_daemon(root), proc)


def test_writes_refused_when_sure_unless_forced(tmp_path: Path, spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    check_writable(root, readonly=False, force=False, what="delete image")
    proc = spawn("--data-root", str(tmp_path / "docker"))
    with pytest.raises(DaemonRunning) as caught:
        check_writable(root, readonly=False, force=False, what="delete image")
    exc = caught.value
    assert (exc.pid, exc.what, exc.sure) == (proc.pid, "delete image", True)
    assert str(exc) == (f"cannot delete image: dockerd (pid {proc.pid}) is using this root; "
                        "stop it first, or pass force=True at the risk of corrupting its view")
    check_writable(root, readonly=False, force=True, what="delete image")


@pytest.mark.parametrize("broken", ["not json", "a folder", "a list"])
def test_cannot_tell_refuses_writes_unless_forced(broken: str, tmp_path: Path,
                                                   spawn: Spawn) -> None:
    root = _store(tmp_path / "docker")
    config = Path(daemon.DEFAULT_CONFIG_FILE)
    if broken == "a folder":
        config.mkdir()
    else:
        config.write_text("{data-root: /x" if broken == "not json" else "[]")
    proc = spawn()  # no data-root on its command line: its config decides
    found = running_daemon(root)
    assert found is not None and (found.pid, found.sure) == (proc.pid, False)
    with pytest.raises(DaemonRunning) as caught:
        check_writable(root, readonly=False, force=False, what="set parent")
    exc = caught.value
    assert (exc.pid, exc.what, exc.sure) == (proc.pid, "set parent", False)
    why = {"not json": "is not valid JSON: ", "a folder": "is unreadable: Is a directory",
           "a list": "does not hold a JSON object"}[broken]
    assert str(exc).startswith(f"cannot set parent: cannot tell whether dockerd (pid {proc.pid}) "
                               f"uses this root: its config file {config} {why}")
    assert str(exc).endswith("pass force=True")
    check_writable(root, readonly=False, force=True, what="set parent")


def test_daemon_running_names_one_override_per_interface() -> None:
    sure = DaemonRunning("delete image", 42)
    assert (sure.what, sure.pid, sure.sure) == ("delete image", 42, True)
    assert str(sure).endswith("pass force=True at the risk of corrupting its view")
    assert "--force" not in str(sure)
    cli = sure.message("--force")
    assert cli == str(sure).replace("force=True", "--force")
    assert "force=True" not in cli
    unsure = DaemonRunning("create image", None, False, "its config file x is unreadable")
    assert str(unsure) == ("cannot create image: cannot tell whether a dockerd uses this root: "
                           "its config file x is unreadable; stop it first, or if it does not "
                           "use this root, pass force=True")
    assert unsure.message("--force").endswith("pass --force")
    copy = pickle.loads(pickle.dumps(unsure))
    assert (copy.what, copy.pid, copy.sure, copy.reason, str(copy)) == (
        unsure.what, unsure.pid, unsure.sure, unsure.reason, str(unsure))
