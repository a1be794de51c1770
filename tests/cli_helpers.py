"""Run the command line in-process, the way a shell would see it (exit code, stdout, stderr)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagestore.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], root: Path | None, *args: str,
            index: Path | None = None) -> Result:
    argv: list[str] = []
    if root is not None:
        argv += ["--root", str(root)]
    if index is not None:
        argv += ["--index", str(index)]
    code = 0
    try:
        main([*argv, *args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)
