"""A real containerd (Debian's package) started on a copy of a containerd root, for tests.

``Containerd(root)`` runs ``/usr/bin/containerd`` with a private config: ``root`` is the
copy (never a file under ``tests/data``), and its state, config, log and the grpc, ttrpc
and debug sockets live in a folder of its own under ``/tmp`` (short, for the sockets'
108-byte limit), removed when it stops. The CRI plugin is off, and so are the snapshotters
that need a kernel or a disk this machine may not offer (btrfs, zfs, devmapper, aufs);
overlayfs and native stay on. Nothing is written outside the copy and that folder
(``io.containerd.internal.v1.opt`` would otherwise create ``/opt/containerd``).

``start()`` returns once ``ctr version`` answers and containerd's first garbage collection
(100 ms after boot) is done, so the root no longer changes by itself. ``stop()`` always
reaps the process (SIGTERM, then SIGKILL); use the object as a context manager or stop it
in a fixture's teardown. The only skip is for containerd or ctr not being installed; a
containerd that is installed but cannot start fails the test, with its log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
ROOT_A = DATA / "containerd-roots" / "containerd-root-A.tar.xz"  # extracts containerd/
EXPECTED_A = DATA / "containerd-roots" / "expected-A.json"
ROOT_C = DATA / "docker29-containerd" / "docker29-containerd-root-C.tar.xz"  # ctd-root/

# Plugins left out: the CRI (it would start a whole Kubernetes runtime) and the
# snapshotters that need a filesystem or device this machine may not have.
DISABLED = ("io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs")
READY_S = 60.0
STOP_S = 30.0
FIRST_GC = "msg=\"garbage collected\""  # the scheduler's debug line after a collection


def installed() -> bool:
    return shutil.which("containerd") is not None and shutil.which("ctr") is not None


def unpack(archive: Path, dest: Path, member: str) -> Path:
    """Extracts a fixture archive into ``dest`` (a test's folder) and returns the root in
    it, ``dest/member``: the copy a daemon may write to."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(dest)], check=True, timeout=120)
    root = dest / member
    if not root.is_dir():
        raise FileNotFoundError(f"{archive} has no {member}/")
    return root


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is JSON's string for these paths


class Containerd:
    """One containerd on ``root`` (a copy); see the module's docstring."""

    def __init__(self, root: Path, *, disabled: tuple[str, ...] = DISABLED) -> None:
        if not installed():
            pytest.skip("containerd/ctr are not installed (.ci/run installs Debian's "
                        "containerd)")
        root = root.resolve()
        if root.is_relative_to(DATA.resolve()):
            raise ValueError(f"{root} is a fixture: start containerd on a copy")
        self.root = root
        self.disabled = disabled
        self.run_dir = Path(tempfile.mkdtemp(prefix="is-ctd-"))  # short: socket paths
        self.address = self.run_dir / "c.sock"
        self.state = self.run_dir / "state"
        self.config = self.run_dir / "config.toml"
        self.log = self.run_dir / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_status: int | None = None  # the exit status, once stopped
        self._earlier_log = ""

    # -- life --------------------------------------------------------------------------

    def start(self) -> Containerd:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join([
            "version = 2",
            f"root = {_toml(str(self.root))}",
            f"state = {_toml(str(self.state))}",
            f"disabled_plugins = [{', '.join(_toml(p) for p in self.disabled)}]",
            "[grpc]",
            f"  address = {_toml(str(self.address))}",
            "[ttrpc]",
            f"  address = {_toml(str(self.run_dir / 't.sock'))}",
            "[debug]",
            f"  address = {_toml(str(self.run_dir / 'd.sock'))}",
            '  level = "debug"',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml(str(self.run_dir / 'opt'))}",
            ""]))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self._env())
        deadline = time.monotonic() + READY_S
        answered = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_text().strip().splitlines()[-5:]
                self.stop()
                pytest.fail("containerd exited at start (status "
                            f"{self.proc_status}):\n" + "\n".join(tail), pytrace=False)
            if not answered and self.address.exists():
                answered = self.ctr("version", check=False, timeout=10).returncode == 0
            if answered and FIRST_GC in self.log_text():
                return self
            time.sleep(0.05)
        tail = self.log_text().strip().splitlines()[-5:]
        self.stop()
        pytest.fail(f"containerd did not {'collect' if answered else 'answer'} within "
                    f"{READY_S:.0f} s:\n" + "\n".join(tail), pytrace=False)

    def stop(self) -> None:
        """Stops and reaps containerd (SIGTERM, SIGKILL after ``STOP_S``) and removes its
        folder; the log stays readable through ``log_text()``. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.proc_status = proc.returncode
        if self.log.exists():
            self._earlier_log += self.log.read_text(errors="replace")
            self.log.unlink()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("containerd is not running")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        now = self.log.read_text(errors="replace") if self.log.exists() else ""
        return self._earlier_log + now

    # -- talking to it -----------------------------------------------------------------

    @staticmethod
    def _env() -> dict[str, str]:
        # ctr reads CONTAINERD_ADDRESS/NAMESPACE/SNAPSHOTTER…: none of the caller's apply.
        return {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}

    def ctr(self, *args: str, namespace: str = "default", check: bool = True,
            input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``ctr --address <ours> --namespace <namespace> <args…>``; ``check`` fails with
        ctr's stderr."""
        cmd = ["ctr", "--address", str(self.address), "--namespace", namespace, *args]
        if input is None:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=self._env(), stdin=subprocess.DEVNULL)
        else:
            raw = subprocess.run(cmd, capture_output=True, input=input, timeout=timeout,
                                 env=self._env())
            done = subprocess.CompletedProcess(
                raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                raw.stderr.decode(errors="replace"))
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} (namespace {namespace}) failed "
                                 f"({done.returncode}): {done.stderr.strip()}")
        return done

    def ctr_bytes(self, *args: str, namespace: str = "default", timeout: float = 60) -> bytes:
        """ctr's stdout as bytes (``content get``)."""
        cmd = ["ctr", "--address", str(self.address), "--namespace", namespace, *args]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, env=self._env(),
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} (namespace {namespace}) failed "
                                 f"({done.returncode}): {done.stderr.decode(errors='replace')}")
        return done.stdout

    def ctr_json(self, *args: str, namespace: str = "default") -> Any:
        return json.loads(self.ctr(*args, namespace=namespace).stdout)

    def snapshotters(self) -> list[str]:
        """The snapshotter plugins that loaded (``ctr plugins ls``, status ``ok``)."""
        out = []
        for line in self.ctr("plugins", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "io.containerd.snapshotter.v1" \
                    and fields[-1] == "ok":
                out.append(fields[1])
        return sorted(out)

    def lock_holders(self, path: Path) -> set[int]:
        """The processes holding an flock or POSIX lock on ``path`` (``/proc/locks``)."""
        info = path.stat()
        want = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        holders = set()
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 30009 fe:00:2147337 0 EOF" ("->" marks waiters)
            if "->" in fields:
                fields.remove("->")
            if len(fields) >= 6 and fields[5] == want:
                holders.add(int(fields[4]))
        return holders


__all__ = ["DISABLED", "EXPECTED_A", "ROOT_A", "ROOT_C", "Containerd", "installed", "unpack"]
