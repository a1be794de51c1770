"""The content store's blobs (containerd plugins/content/local) and the OCI and Docker
documents in them: indexes, manifests, configs, layers; and which platform answers for an
index (containerd's ``platforms.Default()``, as Docker 29 picks its best manifest)."""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import stat
from dataclasses import dataclass
from typing import Any

from imagestore.containerd.layout import Layout

INDEXES = frozenset({"application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json"})
MANIFESTS = frozenset({"application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json"})
CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                     "application/vnd.docker.container.image.v1+json"})
LAYER_PREFIXES = ("application/vnd.docker.image.rootfs.", "application/vnd.oci.image.layer.")
ATTESTATION = "attestation-manifest"
MAX_DOCUMENT = 8 << 20  # a manifest or config larger than this is not read into memory


def is_layer(media_type: str) -> bool:
    return media_type.startswith(LAYER_PREFIXES)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


_ARCH = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
         "armel": "arm", "i386": "386", "i686": "386"}


def normalize(value: Platform) -> Platform:
    """containerd's ``platforms.Normalize``."""
    arch = _ARCH.get(value.architecture.lower(), value.architecture.lower())
    variant = value.variant.lower()
    if arch == "arm64" and variant in ("8", "v8"):
        variant = ""
    if arch == "arm" and variant in ("", "7"):
        variant = "v7" if variant == "7" or not variant else variant
    if arch == "amd64" and variant == "v1":
        variant = ""
    return Platform(value.os.lower(), arch, variant)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` as ``--platform`` takes it; ``ValueError`` otherwise."""
    parts = text.split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
    return normalize(Platform(*parts))


def host_platform() -> Platform:
    machine = _platform.machine() or "amd64"
    return normalize(Platform("linux", machine, "v7" if machine.startswith("armv7") else ""))


def matches(wanted: Platform, offered: Platform) -> bool:
    """Whether an index entry's platform serves ``wanted`` (``platforms.Only``: an arm64
    host also runs arm/v7..v8 images; variants of amd64 above the host's are refused)."""
    got = normalize(offered)
    if got.os != wanted.os:
        return False
    if got.architecture == wanted.architecture:
        return not wanted.variant or not got.variant or got.variant == wanted.variant \
            or (wanted.architecture == "arm" and got.variant <= wanted.variant)
    return wanted.architecture == "arm64" and got.architecture == "arm" \
        and got.variant in ("v7", "v8", "")


def rank(wanted: Platform, offered: Platform) -> int:
    """Lower is better, among entries that match (exact first)."""
    got = normalize(offered)
    return 0 if got == wanted else 1 if got.architecture == wanted.architecture else 2


class BlobError(Exception):
    """A blob is missing, unreadable, or not what its digest says."""

    def __init__(self, digest: str, why: str) -> None:
        super().__init__(f"blob {digest}: {why}")
        self.digest = digest
        self.why = why


def read_blob(layout: Layout, digest: str, *, limit: int = MAX_DOCUMENT,
              verify: bool = True) -> bytes:
    """A blob's bytes, checked against its digest; ``BlobError`` says what is wrong."""
    try:
        path = layout.blob_file(digest)
    except ValueError:
        raise BlobError(digest, "not a valid digest") from None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BlobError(digest, "missing") from None
    except OSError as exc:
        raise BlobError(digest, f"cannot open: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BlobError(digest, "not a regular file")
        if info.st_size > limit:
            raise BlobError(digest, f"{info.st_size} bytes, more than a document may hold")
        data = b""
        while len(data) < info.st_size:
            chunk = os.read(fd, info.st_size - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise BlobError(digest, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if verify and digest.startswith("sha256:") \
            and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise BlobError(digest, "content does not match its digest")
    return data


def blob_size(layout: Layout, digest: str) -> int | None:
    """The blob file's size, or ``None`` when absent (never follows a symlink)."""
    try:
        info = os.lstat(layout.blob_file(digest))
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def document(data: bytes) -> dict[str, Any]:
    """A JSON object from a blob; ``ValueError`` when it is not one."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


__all__ = ["ATTESTATION", "CONFIGS", "INDEXES", "MANIFESTS", "BlobError", "Platform",
           "blob_size", "document", "host_platform", "is_layer", "matches", "normalize",
           "parse_platform", "rank", "read_blob"]
