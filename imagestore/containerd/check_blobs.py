"""The content store's blob files, examined without trusting them: never through a symlink,
never opening what is not a regular file (a FIFO would block, a device would never end),
hashed in 1 MiB chunks and never past the size the file had when opened, and a file is
not hashed at all when its size already tells it is not the blob its record describes (a
sparse 1 TB file at a blob path costs one ``lstat``)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from imagestore.containerd.layout import Layout
from imagestore.containerd.meta import Namespace
from imagestore.moby.files import file_kind

CHUNK = 1 << 20
MAX_DOCUMENT = 8 << 20  # an index or manifest larger than this is hashed, never parsed
ALGORITHMS = frozenset({"sha256", "sha384", "sha512"})  # go-digest's registered ones

OK, NO_RECORD, MISSING, BAD, SIZE, MISMATCH, BAD_DIGEST = (
    "ok", "no-record", "missing", "bad", "size", "mismatch", "bad-digest")


@dataclass
class Blob:
    """What the file of one recorded digest turned out to be."""

    digest: str
    state: str
    why: str = ""
    size: int | None = None  # the file's size, when it has one
    data: bytes | None = None  # the bytes, for a document that was asked for and verified
    record_size: int | None = None


what = file_kind  # the words fsck uses for a file that is not a regular one


def _hash(path: os.PathLike[str] | str, algorithm: str, size: int, ino: int,
          keep: bool) -> tuple[str, bytes | None]:
    """The file's digest over its first ``size`` bytes, and the bytes when ``keep``;
    ``OSError`` when it cannot be read or was swapped since the ``lstat``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_ino != ino:
            raise OSError(f"changed while being read (now {what(info.st_mode)})"
                          if not stat.S_ISREG(info.st_mode) else "replaced while being read")
        h = hashlib.new(algorithm)
        parts: list[bytes] = []
        left = size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if keep:
                parts.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return f"{algorithm}:{h.hexdigest()}", (b"".join(parts) if keep else None)


class Blobs:
    """Each blob of the namespace examined at most once."""

    def __init__(self, layout: Layout, ns: Namespace) -> None:
        self.layout, self.ns = layout, ns
        self.seen: dict[str, Blob] = {}

    def examine(self, digest: str, expect: int | None = None, *, keep: bool = False) -> Blob:
        """The blob's state. ``expect``: the size the first descriptor naming it gives;
        ``keep``: its bytes are wanted (a document small enough to parse)."""
        blob = self.seen.get(digest)
        if blob is None:
            blob = self.seen[digest] = self._examine(digest, expect, keep)
        elif keep and blob.state == OK and blob.data is None and (blob.size or 0) <= MAX_DOCUMENT:
            blob = self.seen[digest] = self._examine(digest, expect, keep)  # rare: read again
        return blob

    def _examine(self, digest: str, expect: int | None, keep: bool) -> Blob:
        record = self.ns.blobs.get(digest)
        if record is None:
            return Blob(digest, NO_RECORD)
        blob = Blob(digest, OK, record_size=record.size)
        algorithm = digest.partition(":")[0]
        try:
            path = self.layout.blob(digest)
        except ValueError:
            blob.state, blob.why = BAD_DIGEST, "not a valid digest"
            return blob
        if algorithm not in ALGORITHMS:
            blob.state, blob.why = BAD_DIGEST, f"unknown digest algorithm {algorithm[:20]!r}"
            return blob
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            blob.state, blob.why = MISSING, "its file is gone"
            return blob
        except OSError as exc:
            blob.state, blob.why = BAD, f"cannot be looked at: {exc.strerror or exc}"
            return blob
        if not stat.S_ISREG(info.st_mode):
            blob.state, blob.why = BAD, f"its file is {what(info.st_mode)}, not a regular file"
            return blob
        blob.size = info.st_size
        wanted = expect if expect is not None else record.size
        if info.st_size != wanted:
            blob.state = SIZE  # cannot be the blob: not hashed
            return blob
        try:
            got, data = _hash(path, algorithm, info.st_size, info.st_ino,
                              keep and info.st_size <= MAX_DOCUMENT)
        except OSError as exc:
            blob.state, blob.why = BAD, f"cannot be read: {exc.strerror or exc}"
            return blob
        if got != digest:
            blob.state, blob.why = MISMATCH, f"its content hashes to {got}"
            return blob
        blob.data = data
        return blob

    def files(self) -> set[str]:
        """The digest of every entry in the content store's blob folders (names that are
        not digests are left alone, as containerd's walk leaves them)."""
        out: set[str] = set()
        try:
            algorithms = sorted(os.listdir(self.layout.blobs))
        except OSError:
            return out
        for algorithm in algorithms:
            if algorithm not in ALGORITHMS:
                continue
            try:
                names = os.listdir(self.layout.blobs / algorithm)
            except OSError:
                continue
            for name in names:
                digest = f"{algorithm}:{name}"
                try:
                    self.layout.blob(digest)
                except ValueError:
                    continue
                out.add(digest)
        return out


__all__ = ["ALGORITHMS", "BAD", "BAD_DIGEST", "CHUNK", "MAX_DOCUMENT", "MISMATCH", "MISSING",
           "NO_RECORD", "OK", "SIZE", "Blob", "Blobs", "what"]
