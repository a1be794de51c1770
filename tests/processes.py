"""The test run's own processes: started with Ctrl-C heard, and never left behind.

A pytest started with SIGINT ignored (``pytest &`` from a script, some CI runners) passes the
ignore on to every process a test starts (``exec`` keeps an ignored signal ignored), so a test
that stops a command with Ctrl-C waits on a command that never hears it, and the command runs
on after the test failed. The run keeps ignoring SIGINT, but through a handler that does
nothing: ``exec`` resets a caught signal to its default, so the commands tests start hear
Ctrl-C as they would from a terminal.

A test that leaves a process of its own running (a child or grandchild of pytest started
while the test ran, alive after its teardown) fails, in its teardown, naming the process,
which is killed; a process left at the end of the run (a fixture's) fails the run. Loaded by
``conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Generator
from types import FrameType

import pytest

# A process a test stopped may take a moment to exit: a leak is what is still there after this.
GRACE_S = 5.0
_BEFORE = pytest.StashKey[set[int]]()


def _hear_nothing(signum: int, frame: FrameType | None) -> None:
    """SIGINT while the run ignores it: nothing happens, as with SIG_IGN."""


def pytest_configure(config: pytest.Config) -> None:
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, _hear_nothing)


def descendants() -> dict[int, str]:
    """The processes under this one that are running (zombies are not), with their command
    lines; empty where there is no ``/proc``."""
    parent_of: dict[int, int] = {}
    running: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        parent_of[int(entry)] = int(fields[1])
        if fields[0] != b"Z":
            running.add(int(entry))
    found, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        children = [c for c, p in parent_of.items() if p == pid and c not in found]
        found.update(children)
        todo.extend(children)
    return {pid: _command(pid) for pid in sorted(found & running)}


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def _left(before: set[int]) -> dict[int, str]:
    """What is running now that was not before, once given ``GRACE_S`` to exit."""
    deadline = time.monotonic() + GRACE_S
    while True:
        left = {pid: cmd for pid, cmd in descendants().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _kill(left: dict[int, str]) -> str:
    for pid in left:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)
    return "; ".join(f"{pid}: {cmd}" for pid, cmd in left.items())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    item.stash[_BEFORE] = set(descendants())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item,
                            nextitem: pytest.Item | None) -> Generator[None, object, object]:
    result = yield
    before = item.stash.get(_BEFORE, None)
    if before is not None:
        left = _left(before)
        if left:
            pytest.fail(f"the test left {len(left)} process(es) of its own running (now "
                        f"killed): {_kill(left)}", pytrace=False)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    left = _left(set())
    if left:
        print(f"\nthe run left {len(left)} process(es) of its own running (now killed): "
              f"{_kill(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
