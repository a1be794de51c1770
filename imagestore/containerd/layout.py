"""Where containerd keeps things under its root (containerd's plugin folders), and how a
path a user gives leads to that root: the root itself (``/var/lib/containerd``), or a Docker
data-root whose own containerd lives in ``containerd/daemon`` (moby daemon/command/daemon.go,
the managed containerd's root)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from imagestore.errors import ImageStoreError

META = Path("io.containerd.metadata.v1.bolt") / "meta.db"
CONTENT = Path("io.containerd.content.v1.content")
SNAPSHOTTER_PREFIX = "io.containerd.snapshotter.v1."
MANAGED = Path("containerd") / "daemon"  # under a Docker data-root
DEFAULT_NAMESPACE = "moby"  # moby daemon/config DefaultContainersNamespace


def is_root(path: Path) -> bool:
    """Whether ``path`` is a containerd root (it holds ``meta.db``)."""
    return (path / META).is_file()


def find(path: str | os.PathLike[str]) -> Path | None:
    """The containerd root ``path`` stands for, or ``None`` when it is not one (a classic
    root, or nothing known). A Docker data-root in containerd mode whose containerd runs
    elsewhere is told in one line: which root to open instead."""
    root = Path(path)
    if is_root(root):
        return root
    if is_root(root / MANAGED):
        return root / MANAGED
    if (root / "image" / "identity-cache.db").is_file() and not _has_classic(root):
        raise ImageStoreError(
            f"{root} is a Docker data-root in containerd mode: its images are in "
            f"containerd's store; open that root instead (--root /var/lib/containerd, "
            f"or where DOCKER_CONTAINERD_ROOT points)")
    return None


def _has_classic(root: Path) -> bool:
    try:
        return any((root / "image" / d / "imagedb").is_dir()
                   for d in os.listdir(root / "image"))
    except OSError:
        return False


@dataclass(frozen=True)
class Layout:
    """The files of one containerd root; ``docker_root``: the Docker data-root that uses it
    as its image store, when known (its ``containers`` say which image each container runs)."""

    root: Path
    docker_root: Path | None = None

    @classmethod
    def at(cls, root: Path, docker_root: Path | None = None) -> Layout:
        """A root found by ``find``; a managed containerd's data-root is known from its path."""
        if docker_root is None and root.parts[-2:] == MANAGED.parts:
            docker_root = root.parent.parent
        return cls(root, docker_root)

    @property
    def meta(self) -> Path:
        return self.root / META

    @property
    def blobs(self) -> Path:
        return self.root / CONTENT / "blobs"

    @property
    def ingest(self) -> Path:
        return self.root / CONTENT / "ingest"

    def blob(self, digest: str) -> Path:
        """A blob's file (containerd's ``blobPath``); ``ValueError`` for a digest that
        could name something else."""
        return Path(self.blob_file(digest))

    def blob_file(self, digest: str) -> str:
        """``blob`` as a plain string: the hot paths read tens of thousands of them."""
        algorithm, sep, hexpart = digest.partition(":")
        if not sep or not algorithm.isalnum() or not hexpart.isalnum() \
                or (not hexpart.islower() and not hexpart.isdigit()):
            raise ValueError(f"not a digest: {digest[:100]!r}")
        return f"{self._blobs}/{algorithm}/{hexpart}"

    @cached_property
    def _blobs(self) -> str:
        return str(self.blobs)

    def regular_blobs(self, algorithm: str = "sha256") -> frozenset[str]:
        """The encoded digests of the regular files among the blobs of ``algorithm``, from
        one listing (a symlink, folder or FIFO there is no blob)."""
        try:
            with os.scandir(f"{self._blobs}/{algorithm}") as entries:
                return frozenset(e.name for e in entries if e.is_file(follow_symlinks=False))
        except OSError:
            return frozenset()

    def snapshotter_db(self, name: str) -> Path:
        return self.root / f"{SNAPSHOTTER_PREFIX}{name}" / "metadata.db"

    def snapshotters(self) -> list[str]:
        """The snapshotters that keep a ``metadata.db`` here."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(n[len(SNAPSHOTTER_PREFIX):] for n in names
                      if n.startswith(SNAPSHOTTER_PREFIX)
                      and (self.root / n / "metadata.db").is_file())


__all__ = ["DEFAULT_NAMESPACE", "Layout", "find", "is_root"]
