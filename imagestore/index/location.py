"""Where an index lives and which store of it a root is: known without SQLAlchemy, so that a
warm command line finds its index and store before deciding whether it needs the engine."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from imagestore.errors import IndexUnavailable

# The newest revision in migrations/versions (a test keeps the two equal): an index already
# there opens without importing Alembic at all, which a warm CLI call notices.
HEAD = "0008"
# A sync that changed nothing still records when it ran, but no more often than this: a warm
# open stays a pure read.
STAMP_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Identity:
    """Who a store is: its name in the index, and where its root is."""

    name: str
    host: str
    root: str
    driver: str


@dataclass(frozen=True)
class StoreInfo:
    id: int
    name: str
    redacted: bool
    last_sync: str | None


def stamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC, fixed width, so that stamps sort as text."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp_due(last: str | None, when: dt.datetime) -> bool:
    """A sync time recorded as ``last`` is to be refreshed at ``when`` (older than
    ``STAMP_EVERY``, or none)."""
    return last is None or last < stamp(when - STAMP_EVERY)


def within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """``path`` is ``folder`` or lies under it, symlinks resolved."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, top]) == top


def identity(image_root: Path, name: str | None = None) -> Identity:
    """A store's identity; its default name is ``HOST:/real/path`` of its image root."""
    host, root = socket.gethostname(), os.path.realpath(image_root)
    if name is not None and not name.strip():
        raise IndexUnavailable("the store name is empty")
    # The driver is the folder's name only where Docker laid it out: <data-root>/image/<driver>.
    driver = Path(root).name if Path(root).parent.name == "image" else ""
    return Identity(name or f"{host}:{root}", host, root, driver)


def containerd_name(root: Path, namespace: str) -> str:
    """A containerd store's default name: ``HOST:/real/path#containerd:NAMESPACE``."""
    return f"{socket.gethostname()}:{os.path.realpath(root)}#containerd:{namespace}"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imagestore"


def default_index_path(root: Path) -> Path:
    """One SQLite file per root, named after it so a person can tell them apart."""
    real = os.path.realpath(root)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", real).strip("-")[-48:] or "root"
    return state_dir() / f"{slug}-{hashlib.sha256(real.encode()).hexdigest()[:12]}.sqlite"


def sqlite_file(index: str | os.PathLike[str] | None, root: Path | None = None
                ) -> Path | None:
    """The local SQLite file ``index`` names (``None``: the default file of ``root``, a path,
    or a plain ``sqlite:///`` URL); ``None`` for anything else (a server, a URL with options),
    which only the engine can tell."""
    if index is None:
        return None if root is None else default_index_path(root)
    text = os.fspath(index)
    if not text.strip():
        return None
    if "://" not in text:
        return Path(os.path.abspath(text))
    if text.startswith("sqlite:///") and "?" not in text and len(text) > len("sqlite:///"):
        return Path(os.path.abspath(unquote(text[len("sqlite:///"):])))
    return None


__all__ = ["HEAD", "STAMP_EVERY", "Identity", "StoreInfo", "containerd_name",
           "default_index_path", "identity",
           "sqlite_file", "stamp", "stamp_due", "state_dir", "within"]
