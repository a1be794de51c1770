"""``Host``: what ``imagestore.open`` hands out. moby's image ``Store`` (unchanged), with
the image service above it, as moby's daemon/images sits above image/: ``images``, the
Docker SDK for Python's ``client.images`` offline, and the checks ``fsck`` runs."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from imagestore.service import files
from imagestore.service.check import Finding, check, repair
from imagestore.service.models import ImageCollection
from imagestore.store import Store


class Host(Store):
    """A Docker host's images, read from its disk. Use ``imagestore.open`` to get one."""

    @cached_property
    def images(self) -> ImageCollection:
        """docker-py's ``client.images``: ``list``, ``get``, ``remove``, ``prune``."""
        return ImageCollection(self)

    def check(self, layers: bool = False) -> list[Finding]:
        """What ``fsck`` reports (``layers``: also rebuild every layer's tar): every
        digest, layer chain and parent link, the index against the disk, and the graph
        driver's folders. Nothing under the root changes."""
        return check(self, layers=layers)

    def repair(self, findings: list[Finding] | None = None) -> list[Finding]:
        """``fsck --repair``: act on the repairable ``findings`` (checked afresh when not
        given); the findings repaired, and the index's stale rows it resynced."""
        return repair(self, self.check() if findings is None else findings)

    def which(self, pattern: str, *, all_stores: bool = False) -> list[dict[str, Any]]:
        """The images (with store and tags) whose filesystem holds a path matching
        ``pattern`` (a path, or a shell glob; without ``/`` a file name in any folder), and
        the layer that brings it."""
        return files.which(self, pattern, all_stores=all_stores)

    def diff(self, first: str, second: str) -> dict[str, list[Any]]:
        """Paths added, removed and changed from image ``first`` to ``second`` (names)."""
        return files.diff(self, self.resolve(first), self.resolve(second))


__all__ = ["Host"]
