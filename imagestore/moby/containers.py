"""The containers of a data-root, as the daemon loads them (moby daemon/daemon.go
``restore`` reading ``containers/<id>/config.v2.json``): which image each was created from,
whether it runs, and its times. An image a container uses is never deleted without force."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imagestore.errors import InvalidImageConfig
from imagestore.moby.digest import is_image_id
from imagestore.moby.files import read_regular
from imagestore.moby.gotime import parse_time
from imagestore.moby.root import Root


@dataclass(frozen=True)
class Container:
    """A container of the data-root, as the daemon loads it from ``config.v2.json``:
    ``image`` is the image ID it was created from, ``times`` its created, started and
    finished times (those that are set), ``manifest`` the platform manifest it runs (Docker
    25 and later on containerd's store: ``ImageManifest``)."""

    id: str
    image: str
    running: bool
    times: tuple[tuple[str, datetime], ...] = ()
    manifest: str | None = None


def _time(value: object) -> datetime | None:
    """A container time; Go's zero time (never started) is ``None``."""
    if not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    try:
        return parse_time(value)
    except InvalidImageConfig:
        return None


def containers(root: Root) -> list[Container] | None:
    """The containers of this data-root, by ID; ``None`` when the root is not inside a
    data-root (no ``containers`` folder to read). A container whose config cannot be read is
    skipped, as the daemon skips it when it loads."""
    folder = root.path.parent.parent / "containers"
    if root.path.parent.name != "image":
        return None
    return containers_in(folder)


def containers_in(folder: Path) -> list[Container] | None:
    """The containers of a data-root's ``containers`` folder (``None`` when it is not a
    folder); Docker 29 keeps them there in containerd mode too."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    found = []
    with os.scandir(folder) as entries:  # a symlinked entry is not followed out
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    for name in names:
        try:
            config = json.loads(read_regular(folder / name / "config.v2.json"))
        except (OSError, ValueError, RecursionError):
            continue
        image = config.get("Image") if isinstance(config, dict) else None
        if not isinstance(image, str) or not is_image_id(image):
            continue
        state = config.get("State")
        state = state if isinstance(state, dict) else {}
        times = ((what, _time(value)) for what, value in (
            ("created", config.get("Created")), ("started", state.get("StartedAt")),
            ("finished", state.get("FinishedAt"))))
        manifest = config.get("ImageManifest")
        digest = manifest.get("digest") if isinstance(manifest, dict) else None
        found.append(Container(name, image, state.get("Running") is True,
                               tuple((w, t) for w, t in times if t is not None),
                               digest if isinstance(digest, str) else None))
    return found


def containers_using(root: Root) -> set[str]:
    """Image IDs that containers of this data-root were created from."""
    return {c.image for c in containers(root) or ()}


__all__ = ["Container", "containers", "containers_in", "containers_using"]
