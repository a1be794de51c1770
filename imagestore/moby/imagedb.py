"""The imagedb on disk (moby's fs.go): content files by digest and their metadata files.

Every path is built from a validated 64-hex name (never a path from user input).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from imagestore.errors import DigestMismatch, ImageNotFound, ImageStoreError
from imagestore.moby.digest import digest_of, hex_of
from imagestore.moby.files import (
    TEMP_PREFIX,
    atomic_write,
    fsync_dir,
    make_private_dirs,
    read_optional,
    read_regular,
)

METADATA_KEYS = ("parent", "lastUpdated", "builtLocally")


class ImageDB:
    """``imagedb/``: the store backend. IDs are full ``sha256:<hex>`` strings."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        self.content = root / "content" / "sha256"
        self.metadata = root / "metadata" / "sha256"
        if create:
            try:
                for folder in (self.content, self.metadata):
                    make_private_dirs(folder)
                    if not folder.is_dir():
                        raise NotADirectoryError(f"{folder} is not a directory")
            except OSError as exc:
                raise ImageStoreError(f"failed to create storage backend: {exc}") from None

    def content_path(self, image_id: str) -> Path:
        return self.content / hex_of(image_id)

    def metadata_path(self, image_id: str, key: str) -> Path:
        if key not in METADATA_KEYS:
            raise ValueError(f"unknown metadata key {key!r}")
        return self.metadata / hex_of(image_id) / key

    def walk(self) -> Iterator[os.DirEntry[str]]:
        """Every entry of ``content/sha256`` (names unchecked: the caller decides)."""
        try:
            with os.scandir(self.content) as entries:
                yield from entries
        except FileNotFoundError:
            return

    def get(self, image_id: str) -> bytes:
        """Content bytes, verified against the ID."""
        path = self.content_path(image_id)
        try:
            data = read_regular(path)
        except OSError as exc:
            raise ImageNotFound(f"failed to get digest {image_id}: {exc}") from None
        if digest_of(data) != image_id:
            raise DigestMismatch(f"failed to verify: {image_id}")
        return data

    def set(self, data: bytes) -> str:
        if not data:
            raise ImageStoreError("invalid empty data")
        image_id = digest_of(data)
        try:
            atomic_write(self.content_path(image_id), data)
        except OSError as exc:
            raise ImageStoreError(f"failed to write digest data: {exc}") from None
        return image_id

    def delete(self, image_id: str) -> None:
        """Remove the metadata folder, then the content file (missing parts are fine)."""
        # rmtree refuses a symlinked folder (ignored here), so nothing outside is touched.
        shutil.rmtree(self.metadata / hex_of(image_id), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.content_path(image_id))
        fsync_dir(self.content)

    def set_metadata(self, image_id: str, key: str, data: bytes) -> None:
        self.get(image_id)  # moby: the content must exist and verify first
        path = self.metadata_path(image_id, key)
        try:
            make_private_dirs(path.parent)
            atomic_write(path, data)
        except OSError as exc:
            raise ImageStoreError(f"failed to write metadata {key} of {image_id}: {exc}") from None

    def get_metadata(self, image_id: str, key: str) -> bytes | None:
        try:
            return read_optional(self.metadata_path(image_id, key))
        except OSError as exc:
            raise ImageStoreError(f"failed to read metadata: {exc}") from None

    def remove_temp_file(self, name: str) -> bool:
        """Remove ``content/sha256/<name>`` if it is a temp file an interrupted atomic write
        left (only under the writers' lock: a live writer's temp file looks the same)."""
        if not name.startswith(TEMP_PREFIX):
            return False
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(self.content / name)
        return True

    def remove_metadata_temp_files(self, hex_name: str) -> None:
        """Remove temp files an interrupted write left in one image's metadata folder (only
        under the writers' lock)."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in os.listdir(self.metadata / hex_name):
                if name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                        os.unlink(self.metadata / hex_name / name)

    def delete_metadata(self, image_id: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.metadata_path(image_id, key))
