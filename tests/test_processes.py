"""The test run's own processes (``tests/processes.py``): commands started by a run that
ignores SIGINT still hear Ctrl-C, and a test that leaves a process running fails, the process
killed. Each case runs a small suite in a pytest of its own, started as ``pytest &`` from a
script starts it: with SIGINT ignored."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import processes

# The suite's conftest, as far as processes go.
CONFTEST = 'pytest_plugins = ["processes"]\n'

CTRL_C = '''
import signal, subprocess, sys, time

def test_a_command_hears_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1)  # the interpreter is up
        proc.send_signal(signal.SIGINT)
        # KeyboardInterrupt, then the interpreter ends by the signal, as from a terminal
        assert proc.wait(timeout=20) == -signal.SIGINT
    finally:
        proc.kill()
        proc.wait()

def test_the_run_still_ignores_it():
    signal.raise_signal(signal.SIGINT)  # nothing happens
'''

LEAK = '''
import subprocess

def test_leaves_a_process():
    subprocess.Popen(["sleep", "60"], start_new_session=True)

def test_then_one_that_does_not():
    subprocess.run(["true"], check=True)
'''


def _suite(tmp_path: Path, tests: str, *, conftest: str = CONFTEST
           ) -> subprocess.CompletedProcess[str]:
    shutil.copy(processes.__file__, tmp_path / "processes.py")
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_inner.py").write_text(tests)
    script = 'trap "" INT; exec "$0" -m pytest -q -p no:cacheprovider "$@"'
    return subprocess.run(["bash", "-c", script, sys.executable, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)


def test_commands_started_by_a_run_that_ignores_sigint_hear_ctrl_c(tmp_path: Path) -> None:
    """Issue 23, item 10: started with SIGINT ignored, the suite's commands inherited the
    ignore, and the Ctrl-C tests failed (one left its ``sql`` child spinning)."""
    done = _suite(tmp_path, CTRL_C)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout


def test_a_test_that_leaves_a_process_running_fails(tmp_path: Path) -> None:
    done = _suite(tmp_path, LEAK)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "ERROR at teardown of test_leaves_a_process" in done.stdout
    assert "left 1 process(es) of its own running (now killed)" in done.stdout
    assert "sleep 60" in done.stdout
    assert "2 passed, 1 error" in done.stdout
    assert not [cmd for cmd in processes.descendants().values() if cmd == "sleep 60"]
