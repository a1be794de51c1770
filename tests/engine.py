"""A real Docker engine (Debian's docker.io) started on a data-root of the test's own."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT_A = Path(__file__).parent / "data" / "engine-roots" / "root-A.tar.xz"


def unpack_root_a(dest: Path) -> Path:
    """The whole Docker 20.10 data-root (vfs layers included) behind the test store."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xJf", str(ROOT_A), "-C", str(dest)], check=True)
    return dest / "root-A"


class Engine:
    def __init__(self, data_root: Path) -> None:
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            pytest.skip("dockerd is not installed (.ci/run installs Debian's docker.io)")
        self.data_root = data_root
        self.exec_root = Path(tempfile.mkdtemp(prefix="is-exec-"))  # short: socket paths
        self.sock = self.exec_root / "docker.sock"
        self.log = self.exec_root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._earlier_log = ""

    def start(self) -> Engine:
        self.exec_root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data_root), "--exec-root",
                 str(self.exec_root / "exec"), "--pidfile", str(self.exec_root / "docker.pid"),
                 "-H", f"unix://{self.sock}", "--storage-driver", "vfs", "--bridge", "none",
                 "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                reason = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                pytest.skip(f"dockerd cannot start here: {reason}")
            if self.sock.exists() and self.docker("version", check=False).returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        pytest.skip("dockerd did not answer within 90 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # Nothing left in /tmp: the log is kept in memory for log_text().
        if self.log.exists():
            self._earlier_log += self.log.read_text(errors="replace")
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", f"unix://{self.sock}", *args], check=check,
                              capture_output=True, text=True, timeout=120)

    def images(self, *flags: str) -> list[dict[str, Any]]:
        out = self.docker("images", *flags, "--no-trunc", "--format", "{{json .}}").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.docker("image", "inspect", ref).stdout)
        return data[0]

    def log_text(self) -> str:
        now = self.log.read_text(errors="replace") if self.log.exists() else ""
        return self._earlier_log + now
