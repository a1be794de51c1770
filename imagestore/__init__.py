"""imagestore: Docker's image store over the on-disk imagedb/layerdb, with a persistent SQL
index."""

from __future__ import annotations

from imagestore.errors import (
    AmbiguousImageID,
    DaemonRunning,
    DigestMismatch,
    ImageNotFound,
    ImageStoreError,
    IndexCorrupt,
    IndexUnavailable,
    InvalidImageConfig,
    LayerNotFound,
    ReadOnlyStore,
)
from imagestore.moby.image import Image, RootFS
from imagestore.moby.layerdb import LayerMetadata
from imagestore.opening import open
from imagestore.store import Store
from imagestore.sync import Problem, ProblemKind, SyncReport

__version__ = "0.1.0"

__all__ = [
    "AmbiguousImageID",
    "DaemonRunning",
    "DigestMismatch",
    "Image",
    "ImageNotFound",
    "ImageStoreError",
    "IndexCorrupt",
    "IndexUnavailable",
    "InvalidImageConfig",
    "LayerMetadata",
    "LayerNotFound",
    "Problem",
    "ProblemKind",
    "ReadOnlyStore",
    "RootFS",
    "Store",
    "SyncReport",
    "open",
]
