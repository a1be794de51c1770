"""The command line: ``app`` (global options, opening the store, errors), ``commands``,
``report`` (what the commands ask beyond moby's interface), ``fsck``, ``humanize`` and
``output`` (the one renderer of JSON, NL, CSV and text)."""

from __future__ import annotations

from imagestore.cli import commands as _commands  # noqa: F401  (registers the commands)
from imagestore.cli import files as _files  # noqa: F401
from imagestore.cli import fleet as _fleet  # noqa: F401
from imagestore.cli import prune as _prune  # noqa: F401
from imagestore.cli import save as _save  # noqa: F401
from imagestore.cli.app import cli, main

__all__ = ["cli", "main"]
