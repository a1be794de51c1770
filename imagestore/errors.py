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


class ImageConflict(ImageStoreError):
    """moby's image delete conflicts (daemon/images/image_delete.go ``imageDeleteConflict``):
    a child image, a container, several repositories. ``hard`` ones cannot be forced;
    ``used``: a container (or, beyond moby, recent use) keeps the image. Nothing was changed
    for the image named."""

    def __init__(self, message: str, *, hard: bool = False, used: bool = False) -> None:
        super().__init__(message)
        self.hard, self.used = hard, used


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


class ReadOnlyKind(ReadOnlyStore):
    """A write asked of a kind of store imagestore only reads (containerd's, for now):
    refused before anything is touched."""

    def __init__(self, kind: str, what: str, namespace: str | None = None) -> None:
        where = f" (namespace {namespace})" if namespace else ""
        super().__init__(f"{what} refused: this is a {kind} store{where}, which imagestore "
                         f"reads only; nothing was changed")
        self.kind = kind
        self.what = what
        self.namespace = namespace


class NoSuchNamespace(ImageStoreError, LookupError):
    """A containerd root holds no such namespace; ``present`` lists those it holds."""

    def __init__(self, namespace: str, present: list[str]) -> None:
        super().__init__(f"namespace {namespace!r} is not in this containerd root "
                         f"(namespaces: {', '.join(present) or 'none'})")
        self.namespace = namespace
        self.present = present


class DaemonRunning(ImageStoreError):
    """A live ``dockerd`` owns the root (``sure``), or may and which cannot be told (``reason``
    says why): writing under it would corrupt its view.

    ``pid`` is the daemon's (``None`` when unknown), ``what`` the refused action. ``str()`` ends
    with the library's override, ``force=True``; ``message(flag)`` names another one (the
    command line's ``--force``).
    """

    def __init__(self, what: str, pid: int | None = None, sure: bool = True,
                 reason: str = "") -> None:
        super().__init__(what, pid, sure, reason)  # args rebuild it (pickle, copy)
        self.what = what
        self.pid = pid
        self.sure = sure
        self.reason = reason

    def message(self, flag: str) -> str:
        """The explanation, ending with the advice to override with ``flag``."""
        daemon = "a dockerd" if self.pid is None else f"dockerd (pid {self.pid})"
        if self.sure:
            return (f"cannot {self.what}: {daemon} is using this root; stop it first, "
                    f"or pass {flag} at the risk of corrupting its view")
        why = f": {self.reason}" if self.reason else ""
        return (f"cannot {self.what}: cannot tell whether {daemon} uses this root{why}; "
                f"stop it first, or if it does not use this root, pass {flag}")

    def __str__(self) -> str:
        return self.message("force=True")


class IndexUnavailable(ImageStoreError):
    """The index cannot be opened or brought to the current schema."""


class IndexCorrupt(IndexUnavailable):
    """The index's storage is damaged. It is derived data: rebuilding it from the root
    (``Store.sync(full=True)``, ``imagestore sync --full``) loses nothing."""


class NoSuchStore(IndexUnavailable, LookupError):
    """The index holds no store of that name (``name``)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class StoreNameTaken(IndexUnavailable):
    """The store name ``name`` belongs to another image root (``root`` on ``host``): opening
    this root under it would mix two stores' rows; ``rename_root`` moves the name."""

    def __init__(self, name: str, host: str, root: str, message: str) -> None:
        super().__init__(message)
        self.name, self.host, self.root = name, host, root


# -- graph-driver data (rm, prune, fsck) -------------------------------------------------------
class DriverBusy(ImageStoreError):
    """Something is mounted under the driver's folder (``mounts``), or that cannot be told
    (``reason``): deleting would delete through the mount."""

    def __init__(self, home: str, mounts: tuple[str, ...] = (), reason: str = "") -> None:
        super().__init__(home, mounts, reason)  # args rebuild it (pickle, copy)
        self.home = home
        self.mounts = mounts
        self.reason = reason

    def __str__(self) -> str:
        if not self.mounts:
            return f"cannot remove driver data under {self.home}: {self.reason}"
        more = f" and {len(self.mounts) - 1} more" if len(self.mounts) > 1 else ""
        return (f"cannot remove driver data under {self.home}: {self.mounts[0]}{more} is "
                f"mounted there (stop the containers that use it)")


class UnsafeDriverData(ImageStoreError):
    """Removing this data as asked would reach beyond the layer's own files (``path``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"refusing to remove {self.path}: {self.reason}"


class UnsupportedDriver(ImageStoreError):
    """The root's storage driver keeps data this package cannot remove as the engine does."""

    def __init__(self, driver: str, image_root: str = "",
                 supported: tuple[str, ...] = ("vfs", "overlay2")) -> None:
        super().__init__(driver, image_root, supported)  # args rebuild it (pickle, copy)
        self.driver = driver
        self.image_root = image_root
        self.supported = supported

    def __str__(self) -> str:
        return (f"storage driver {self.driver!r} is not supported: only the data of "
                f"{' and '.join(self.supported)} can be released")


__all__ = [
    "AmbiguousImageID",
    "DaemonRunning",
    "DigestMismatch",
    "DriverBusy",
    "ImageConflict",
    "ImageNotFound",
    "ImageStoreError",
    "IndexCorrupt",
    "IndexUnavailable",
    "InvalidConfigType",
    "InvalidImageConfig",
    "LayerNotFound",
    "NoSuchStore",
    "ReadOnlyStore",
    "StoreNameTaken",
    "UnsafeDriverData",
    "UnsupportedDriver",
]
