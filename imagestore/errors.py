"""The exception hierarchy: every error a caller can see is an ``ImageStoreError``.

The extra base classes (``LookupError``, ``ValueError``) let callers who do not know this
package still catch the obvious category.
"""

from __future__ import annotations


class ImageStoreError(Exception):
    """Base class of every error raised by imagestore."""


class ImageNotFound(ImageStoreError, LookupError):
    """No image answers to the given ID or prefix."""


class AmbiguousImageID(ImageStoreError):
    """A prefix matches more than one image; ``candidates`` lists them, sorted."""

    def __init__(self, term: str, candidates: list[str]) -> None:
        self.term = term
        self.candidates = sorted(candidates)
        shown = ", ".join(self.candidates[:20])
        more = f" and {len(self.candidates) - 20} more" if len(self.candidates) > 20 else ""
        super().__init__(f"ambiguous image ID {term!r}: matches {shown}{more}")


class InvalidImageConfig(ImageStoreError, ValueError):
    """Config bytes that moby's ``NewFromJSON`` (or ``Create``) would reject."""


class InvalidConfigType(ImageStoreError, TypeError):
    """``create`` was handed something that is not bytes."""


class LayerNotFound(ImageStoreError):
    """The layer an image needs is not in ``layerdb``."""


class DigestMismatch(ImageStoreError):
    """A content file's bytes no longer hash to its name."""


class ReadOnlyStore(ImageStoreError):
    """A writing method was called on a store opened with ``readonly=True``."""


class DaemonRunning(ImageStoreError):
    """A live ``dockerd`` owns the root: writing under it would corrupt its view."""


class IndexUnavailable(ImageStoreError):
    """The index cannot be opened or brought to the current schema."""


__all__ = [
    "AmbiguousImageID",
    "DaemonRunning",
    "DigestMismatch",
    "ImageNotFound",
    "ImageStoreError",
    "IndexUnavailable",
    "InvalidConfigType",
    "InvalidImageConfig",
    "LayerNotFound",
    "ReadOnlyStore",
]
