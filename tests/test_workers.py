"""No process left behind: a sync killed by any signal, at any moment, leaves no worker
running and nothing holding the writers' lock, so the next sync completes.

Real processes, real signals: a CLI sync of a store large enough to start worker processes
runs in a session of its own; the signal goes to the syncing process alone (as `kill PID`,
`timeout` or systemd send it), and afterwards the whole session must be gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GENERATOR = Path(__file__).resolve().parent.parent / "bench" / "gen_imagedb.py"
IMAGES = 6000  # above the size at which a pass starts its workers


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("big")
    subprocess.run([sys.executable, str(GENERATOR), str(top), str(IMAGES), "--seed", "3"],
                   check=True, stdout=subprocess.DEVNULL)
    return top / "image" / "vfs"


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of a session."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(name))
    return out


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: every process's parent, then
        return [int(name) for name in os.listdir("/proc")
                if name.isdigit() and _parent(int(name)) == pid]
    return [int(c) for c in text.split()]


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _sync(root: Path, index: Path, *extra: str) -> subprocess.Popen[bytes]:
    err = (index.parent / f"{index.name}.stderr").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "imagestore.cli", "--root", str(root), "--index", str(index),
         "sync", *extra], start_new_session=True, stdout=subprocess.DEVNULL, stderr=err,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"})


def _wait(proc: subprocess.Popen[bytes], index: Path, timeout: float) -> int:
    """The exit code; on a hang, the stacks of the hung process fail the test."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)  # faulthandler prints every thread's stack
        proc.wait()
        raise AssertionError((index.parent / f"{index.name}.stderr").read_text()) from None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
@pytest.mark.parametrize("moment", ["workers started", "later"])
def test_a_killed_sync_leaves_no_process_and_no_lock(big_root: Path, tmp_path: Path,
                                                     sig: signal.Signals, moment: str) -> None:
    index = tmp_path / "index.sqlite"
    proc = _sync(big_root, index)
    deadline = time.monotonic() + 60
    while not _children(proc.pid):  # the pass's workers have started
        assert proc.poll() is None, "the sync ended before starting workers"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if moment == "later":  # well inside the pass (6,000 images take a few seconds)
        time.sleep(0.25)
    os.kill(proc.pid, sig)  # the syncing process alone, not its group
    _wait(proc, index, 60)
    deadline = time.monotonic() + 10
    while _session(proc.pid):
        assert time.monotonic() < deadline, f"left behind: {_session(proc.pid)}"
        time.sleep(0.05)
    again = _sync(big_root, index, "--json")
    try:
        assert _wait(again, index, 120) == 0
    finally:
        again.kill()
        again.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130


def test_workers_do_not_keep_the_writers_lock(big_root: Path, tmp_path: Path) -> None:
    """A worker's copy of the lock's descriptor is closed as it starts: while workers run,
    the lock file is open in the syncing process only."""
    index = tmp_path / "index.sqlite"
    lock = str(index) + ".lock"
    proc = _sync(big_root, index)
    try:
        deadline = time.monotonic() + 60
        while not (workers := _children(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        for pid in workers:
            try:
                fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except FileNotFoundError:
                continue  # finished meanwhile
            assert lock not in fds
    finally:
        proc.kill()
        proc.wait()
