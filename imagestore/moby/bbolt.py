"""A read-only reader of bbolt files (etcd-io/bbolt, BoltDB's format).

Docker, containerd and BuildKit keep state in bbolt files under the data root; imagestore
reads some of them (BuildKit's ``snapshots.db``) to tell whose a driver folder is. Those files
come from someone else's disk, may be half written, and belong to a daemon that may be running,
so this reader never writes or locks, and treats the file as hostile: every offset is checked
against the file, no page is followed twice, the bytes read cannot add up to more than the file
holds, and anything unexpected is one ``BoltError`` naming what is wrong and where. It never
hangs and never raises anything else.

The format (bbolt's ``internal/common``): pages of ``page_size`` bytes, each with a header
(id u64, flags u16, count u16, overflow u32). Pages 0 and 1 are metas; the valid one with the
higher txid holds the root bucket's page. Branch pages hold ``(pos, ksize, pgid)`` elements,
leaf pages ``(flags, pos, ksize, vsize)`` elements, ``pos`` counted from the element itself.
A bucket's value is ``(root pgid, sequence)``; root 0 means an inline leaf page follows.
bbolt writes integers in the host's byte order; the meta's magic tells which.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from imagestore.errors import ImageStoreError

MAGIC = 0xED0CDAED
VERSION = 2
BRANCH, LEAF, META, FREELIST = 0x01, 0x02, 0x04, 0x10
BUCKET_FLAG = 0x01
HEADER_SIZE = 16  # page header, and also each branch or leaf element
META_SIZE = 64  # magic .. checksum; the checksum covers the 56 bytes before it
# bbolt looks for the second meta at 1 KiB .. 16 MiB when the first is damaged; same bounds.
MIN_PAGE, MAX_PAGE = 512, 1 << 24
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


class BoltError(ImageStoreError, ValueError):
    """The file is not a bbolt file this reader can trust (or cannot be read at all)."""


def fnv1a64(data: bytes) -> int:
    """bbolt's meta checksum (Go's ``hash/fnv`` New64a)."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


class Bucket(Mapping[bytes, "bytes | Bucket"]):
    """One bucket, read in full: keys map to plain values (bytes) or to nested buckets.

    Eager on purpose: the file is closed once ``read`` returns, so nothing here can fail
    later or see a file a daemon has since rewritten.
    """

    def __init__(self, sequence: int = 0) -> None:
        self.sequence = sequence
        self.skipped = False  # left unread (``read_with_txid``'s ``skip``)
        self._entries: dict[bytes, bytes | Bucket] = {}

    def __getitem__(self, key: bytes) -> bytes | Bucket:
        return self._entries[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Bucket({self._entries!r}, sequence={self.sequence})"

    def bucket(self, key: bytes) -> Bucket | None:
        """The nested bucket at ``key``; ``None`` when absent or a plain value."""
        found = self._entries.get(key)
        return found if isinstance(found, Bucket) else None

    def value(self, key: bytes) -> bytes | None:
        """The plain value at ``key``; ``None`` when absent or a bucket."""
        found = self._entries.get(key)
        return found if isinstance(found, bytes) else None

    def buckets(self) -> dict[bytes, Bucket]:
        """The nested buckets alone, in key order."""
        return {k: v for k, v in self._entries.items() if isinstance(v, Bucket)}

    def plain(self) -> dict[bytes, bytes]:
        """The plain values alone, in key order (a reader of many small buckets, such as
        containerd's labels, wants them without the generic mapping's per-key calls)."""
        return {k: v for k, v in self._entries.items() if isinstance(v, bytes)}


@dataclass(frozen=True)
class _Meta:
    order: str  # "<" or ">": bbolt writes in the writer's native byte order
    page_size: int
    root: int
    sequence: int
    high_water: int  # pages at or past this id were never allocated
    txid: int


def read(path: str | os.PathLike[str]) -> Bucket:
    """The root bucket of the bbolt file at ``path`` (see ``read_with_txid``)."""
    return read_with_txid(path)[0]


def read_with_txid(path: str | os.PathLike[str], skip: Skip | None = None
                   ) -> tuple[Bucket, int]:
    """The root bucket of the bbolt file at ``path``, read without writing or locking, and
    the transaction ID of the meta page it was read from (a reader beside a live writer
    reads the txid again afterwards: an unchanged one means no commit tore the read).
    ``skip(path)``: nested buckets (named by their keys from the root) the caller will not
    look at; they stay empty, ``skipped`` set, and their pages are never read.

    ``O_NONBLOCK`` and the regular-file check keep a FIFO or device planted at ``path`` from
    hanging or flooding the reader; like every read under a data root (``files.py``), a
    symlink is not followed, since on someone else's disk it may point anywhere on ours.
    """
    name = os.fsdecode(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        why = "is a symlink (not followed)" if exc.errno == errno.ELOOP else exc.strerror
        raise BoltError(f"{name}: cannot open: {why or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BoltError(f"{name}: not a regular file")
        reader = _Reader(fd, info.st_size, name, skip)
        return reader.root(), reader.meta.txid
    except OSError as exc:
        raise BoltError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def txid(path: str | os.PathLike[str]) -> int:
    """The transaction ID of the file's current meta page (two small reads)."""
    name = os.fsdecode(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                     | os.O_NOCTTY)
    except OSError as exc:
        raise BoltError(f"{name}: cannot open: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BoltError(f"{name}: not a regular file")
        return _Reader(fd, info.st_size, name).meta.txid
    except OSError as exc:
        raise BoltError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


# A bucket still to fill, where its tree starts (a page id or an inline page), and its path
# of keys from the root.
_Work = tuple[Bucket, "int | memoryview", tuple[bytes, ...]]
Skip = Callable[[tuple[bytes, ...]], bool]


class _Reader:
    def __init__(self, fd: int, size: int, name: str, skip: Skip | None = None) -> None:
        self.fd, self.size, self.name, self.skip = fd, size, name, skip
        meta = self._meta()
        self.order, self.page_size = meta.order, meta.page_size
        self.high_water, self.meta = meta.high_water, meta
        self.header = struct.Struct(self.order + "QHHI")
        self.branch = struct.Struct(self.order + "IIQ")
        self.leaf = struct.Struct(self.order + "IIII")
        self.bucket_value = struct.Struct(self.order + "QQ")
        self.visited: set[int] = {0, 1}
        # Regions of a sound file never overlap, so what is read cannot exceed the file's
        # size; crafted elements sharing bytes (inline buckets nested many times) would
        # otherwise cost exponential work.
        self.budget = size

    def fail(self, what: str) -> BoltError:
        return BoltError(f"{self.name}: {what}")

    def pread(self, length: int, offset: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.fail(f"{length} bytes at offset {offset} run past the end of the file "
                            f"({self.size} bytes)")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise self.fail(f"file shrank while reading (short read at offset {offset})")
        return data

    def _meta(self) -> _Meta:
        """The valid meta with the higher txid, as bbolt's ``DB.meta`` picks it."""
        first, why0 = self._meta_at(0, None, None)
        second: _Meta | None = None
        why1 = "not found"
        if first is not None:
            second, why1 = self._meta_at(first.page_size, first.page_size, first.order)
        else:  # the page size is unknown: try where bbolt tries, the meta names its own
            candidate = MIN_PAGE
            while second is None and candidate <= MAX_PAGE:
                second, why = self._meta_at(candidate, candidate, None)
                if candidate == 4096:  # the usual size: its reason is the one worth telling
                    why1 = why
                candidate *= 2
        valid = [m for m in (first, second) if m is not None]
        if not valid:
            raise self.fail(f"no valid meta page (page 0: {why0}; page 1: {why1})")
        return max(valid, key=lambda m: m.txid)  # max keeps the first on a tie, as bbolt

    def _meta_at(self, offset: int, page_size: int | None,
                 order: str | None) -> tuple[_Meta | None, str]:
        if offset + HEADER_SIZE + META_SIZE > self.size:
            return None, "past the end of the file"
        raw = self.pread(META_SIZE, offset + HEADER_SIZE)
        for candidate in ("<", ">") if order is None else (order,):
            magic, version, size, _flags, root, seq, _free, high, txid, checksum = \
                struct.unpack(candidate + "IIIIQQQQQQ", raw)
            if magic != MAGIC:
                continue
            if version != VERSION:
                return None, f"version {version}, not {VERSION}"
            if checksum != fnv1a64(raw[:56]):
                return None, "checksum mismatch"
            if not MIN_PAGE <= size <= MAX_PAGE:
                return None, f"page size {size} out of range"
            if page_size is not None and size != page_size:
                return None, f"page size {size} differs from {page_size}"
            if root >= high:
                return None, f"root page {root} at or past the high-water mark {high}"
            return _Meta(candidate, size, root, seq, high, txid), ""
        return None, "bad magic"

    def root(self) -> Bucket:
        top = Bucket(self.meta.sequence)
        work: list[_Work] = [(top, self.meta.root, ())]
        while work:  # iterative: a deep tree must not exhaust Python's stack
            bucket, source, path = work.pop()
            self._fill(bucket, source, path, work)
        return top

    def _fill(self, bucket: Bucket, source: int | memoryview, path: tuple[bytes, ...],
              work: list[_Work]) -> None:
        """Walks one bucket's B+tree in key order; nested buckets go onto ``work``."""
        where = f"bucket {path[-1][:64]!r}" if path else "root bucket"
        last: bytes | None = None
        stack: list[int | memoryview] = [source]
        while stack:
            item = stack.pop()
            if isinstance(item, memoryview):
                page, label = item, f"inline page of {where}"
                flags, count = self._header(page, label)
                if flags != LEAF:
                    raise self.fail(f"{label}: flags {flags:#x}, only leaf pages are inlined")
            else:
                page, label = self._page(item), f"page {item} ({where})"
                flags, count = self._header(page, label)
            if HEADER_SIZE + count * HEADER_SIZE > len(page):
                raise self.fail(f"{label}: {count} elements do not fit in {len(page)} bytes")
            self._spend(HEADER_SIZE + count * HEADER_SIZE, label)
            if flags == BRANCH:
                children = []
                for i in range(count):
                    at = HEADER_SIZE * (i + 1)
                    pos, ksize, child = self.branch.unpack_from(page, at)
                    self._slice(page, at + pos, ksize, label, "branch", i)
                    self._spend(ksize, label)
                    children.append(child)
                stack.extend(reversed(children))
                continue
            for i in range(count):
                at = HEADER_SIZE * (i + 1)
                eflags, pos, ksize, vsize = self.leaf.unpack_from(page, at)
                key = bytes(self._slice(page, at + pos, ksize, label, "leaf", i))
                value = self._slice(page, at + pos + ksize, vsize, label, "leaf", i)
                if last is not None and key <= last:
                    raise self.fail(f"{label}: leaf element {i}: keys out of order in {where}")
                last = key
                if eflags == 0:
                    self._spend(ksize + vsize, label)
                    bucket._entries[key] = bytes(value)
                elif eflags == BUCKET_FLAG:
                    self._spend(ksize + HEADER_SIZE, label)
                    bucket._entries[key] = self._child(value, key, label, i, path, work)
                else:
                    raise self.fail(f"{label}: leaf element {i}: unknown element flags "
                                    f"{eflags:#x}")

    def _child(self, value: memoryview, key: bytes, label: str, i: int,
               path: tuple[bytes, ...], work: list[_Work]) -> Bucket:
        if len(value) < HEADER_SIZE:
            raise self.fail(f"{label}: leaf element {i}: bucket value of {len(value)} bytes, "
                            f"less than 16")
        root, sequence = self.bucket_value.unpack_from(value)
        child = Bucket(sequence)
        inner = (*path, key)
        if self.skip is not None and self.skip(inner):
            child.skipped = True  # left unread, as the caller asked
        else:
            work.append((child, value[HEADER_SIZE:] if root == 0 else root, inner))
        return child

    def _header(self, page: memoryview, label: str) -> tuple[int, int]:
        if len(page) < HEADER_SIZE:
            raise self.fail(f"{label}: {len(page)} bytes, too short for a page header")
        _id, flags, count, _overflow = self.header.unpack_from(page)
        if flags in (BRANCH, LEAF):
            return flags, count
        if flags in (META, FREELIST):
            kind = "a meta" if flags == META else "a freelist"
            raise self.fail(f"{label} is {kind} page where a branch or leaf page belongs")
        raise self.fail(f"{label}: unknown page flags {flags:#x}")

    def _page(self, pgid: int) -> memoryview:
        """A page and its overflow pages; each page id may be reached once only."""
        if pgid < 2:
            raise self.fail(f"page {pgid} is a meta page where a branch or leaf page belongs")
        if pgid in self.visited:
            raise self.fail(f"page {pgid} reached twice (a cycle or shared page)")
        if pgid >= self.high_water:
            raise self.fail(f"page {pgid} at or past the high-water mark {self.high_water}")
        if (pgid + 1) * self.page_size > self.size:
            raise self.fail(f"page {pgid} lies past the end of the file ({self.size} bytes)")
        self.visited.add(pgid)
        data = self.pread(self.page_size, pgid * self.page_size)
        found, _flags, _count, overflow = self.header.unpack_from(data)
        if found != pgid:
            raise self.fail(f"page {pgid} calls itself page {found}")
        if overflow:
            last = pgid + overflow
            if last >= self.high_water or (last + 1) * self.page_size > self.size:
                raise self.fail(f"page {pgid}: {overflow} overflow pages run past the "
                                f"high-water mark or the end of the file")
            extra = range(pgid + 1, last + 1)
            if not self.visited.isdisjoint(extra):
                raise self.fail(f"page {pgid}: its overflow pages are reached twice")
            self.visited.update(extra)
            data += self.pread(overflow * self.page_size, (pgid + 1) * self.page_size)
        return memoryview(data)

    def _slice(self, page: memoryview, start: int, length: int, label: str, kind: str,
               i: int) -> memoryview:
        """A view, not a copy: crafted elements may all point at one large region. (The
        message is made only on failure: a file holds a million elements.)"""
        if start + length > len(page):
            raise self.fail(f"{label}: {kind} element {i}: {length} bytes at {start} run "
                            f"past the page's {len(page)} bytes")
        return page[start:start + length]

    def _spend(self, amount: int, label: str) -> None:
        self.budget -= amount
        if self.budget < 0:
            raise self.fail(f"{label}: elements share bytes (more data than the file holds)")
