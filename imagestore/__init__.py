"""imagestore: Docker's image store over the on-disk imagedb/layerdb, with a persistent SQL
index."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagestore.errors import (
    AmbiguousImageID,
    DaemonRunning,
    DigestMismatch,
    DriverBusy,
    ImageConflict,
    ImageNotFound,
    ImageStoreError,
    IndexCorrupt,
    IndexUnavailable,
    InvalidImageConfig,
    LayerNotFound,
    NoSuchNamespace,
    NoSuchStore,
    ReadOnlyKind,
    ReadOnlyStore,
    StoreNameTaken,
    UnsafeDriverData,
    UnsupportedDriver,
)
from imagestore.lazy import loader

if TYPE_CHECKING:
    from imagestore.moby.image import Image, RootFS
    from imagestore.moby.layerdb import LayerMetadata
    from imagestore.opening import namespaces, open
    from imagestore.store import Deletion, Store
    from imagestore.sync import Problem, ProblemKind, SyncReport

# Loaded on first use: the command line's --help and usage errors must not pay for the
# index's database layer.
_LAZY = {
    "Image": "imagestore.moby.image", "RootFS": "imagestore.moby.image",
    "LayerMetadata": "imagestore.moby.layerdb", "open": "imagestore.opening",
    "namespaces": "imagestore.opening",
    "Store": "imagestore.store", "Deletion": "imagestore.store", "Problem": "imagestore.sync",
    "ProblemKind": "imagestore.sync", "SyncReport": "imagestore.sync",
}


__getattr__ = loader(__name__, _LAZY, globals())


__version__ = "0.1.0"

__all__ = [
    "AmbiguousImageID",
    "DaemonRunning",
    "Deletion",
    "DigestMismatch",
    "DriverBusy",
    "Image",
    "ImageConflict",
    "ImageNotFound",
    "ImageStoreError",
    "IndexCorrupt",
    "IndexUnavailable",
    "InvalidImageConfig",
    "LayerMetadata",
    "LayerNotFound",
    "NoSuchNamespace",
    "NoSuchStore",
    "Problem",
    "ProblemKind",
    "ReadOnlyKind",
    "ReadOnlyStore",
    "RootFS",
    "Store",
    "StoreNameTaken",
    "SyncReport",
    "UnsafeDriverData",
    "UnsupportedDriver",
    "namespaces",
    "open",
]
