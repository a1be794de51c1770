"""The sync progress bar: on a terminal, only after a moment, on stderr."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from imagestore.cli.app import ProgressBar


def test_bar_waits_a_moment_then_draws(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar()
    bar("images", 1, 10)
    assert capsys.readouterr().err == ""  # a fast sync never shows a bar
    bar.start -= 5
    bar("images", 5, 10)
    bar.finish()
    err = capsys.readouterr().err
    assert err.startswith("\rsyncing images [###############...............] 5/10")
    assert err.endswith("\n")


def test_no_bar_when_not_shown(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar()
    bar("layers", 3, 3)
    bar.finish()
    assert capsys.readouterr().err == ""


def test_terminal_run_keeps_stdout_clean(real_root: Path, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "imagestore.cli", "--root", str(real_root), "--index",
         str(tmp_path / "i.sqlite"), "search", "f1e1"],
        stdout=subprocess.PIPE, stderr=follower, check=False)
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 0
    assert proc.stdout.decode().strip().startswith("sha256:f1e1")
