"""A layer's file list from its blob in the content store, for a store that keeps no
tar-split: the blob is read once as a stream (plain tar, gzip, or zstd through the
``zstandard`` package, told apart by their magic bytes as containerd's ``DecompressStream``
does), the tar headers are parsed as ``moby.layerfiles`` parses the tar-split's (the same
``LayerFile`` entries, the same refusals), each regular file's bytes run through Go's ISO
CRC-64 as tar-split computes it, and nothing is held but one chunk and the entries.

The blob is checked against its digest and the uncompressed tar against the diff ID while it
streams. Everything wrong (a missing or odd blob, a digest that does not match, corrupt
compression, a tar that does not parse, a hostile name) is a line of ``problems``, never an
exception; a tar whose digest is not the diff ID gives no entries (they are not that
layer's). Nothing is written anywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import zlib
from typing import IO, Protocol, cast

from imagestore.containerd.layout import Layout
from imagestore.moby.layerfiles import (
    BLOCK,
    MAX_HEADERS,
    LayerFile,
    LayerFiles,
    _Bad,
    _entry,
    _headers,
    _number,
    _shown,
)
from imagestore.moby.save_go import crc64

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# What a layer's media type may end with for its blob to be read here (encrypted or other
# layers are refused before a byte is read).
READABLE = ("tar", "tar+gzip", "tar.gzip", "tar+zstd", "tar.zstd")
_ZERO = bytes(BLOCK)
_EXTENSIONS = (b"L", b"K", b"x", b"g")
_HEADER_ONLY = (b"1", b"2", b"3", b"4", b"5", b"6")  # Go's isHeaderOnlyType: no data
_FILES = (b"0", b"\0", b"7")
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class _Broken(ValueError):
    """The tar cannot be read on from here (the rest of the list is lost)."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Blob:
    """The blob file, hashed as it is read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = os.read(self.fd, CHUNK if size is None or size < 0 else size)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Tar:
    """The uncompressed stream, hashed as it is read, taken block by block."""

    def __init__(self, source: _Readable) -> None:
        self.source = source
        self.hash = hashlib.sha256()
        self.chunk = b""
        self.pos = 0
        self.offset = 0  # bytes of the tar handed out
        self.ended = False

    def _more(self) -> bool:
        if self.ended:
            return False
        chunk = self.source.read(CHUNK)
        if not chunk:
            self.ended = True
            return False
        self.hash.update(chunk)
        self.chunk, self.pos = chunk, 0
        return True

    def take(self, size: int, *, eof_ok: bool = False) -> bytes:
        """``size`` bytes; ``b""`` at the end when ``eof_ok``; ``_Broken`` when cut short."""
        parts: list[bytes] = []
        need = size
        while need:
            if self.pos == len(self.chunk) and not self._more():
                if eof_ok and need == size:
                    return b""
                raise _Broken(f"the tar ends inside a block at byte {self.offset}")
            part = self.chunk[self.pos:self.pos + need]
            self.pos += len(part)
            self.offset += len(part)
            need -= len(part)
            parts.append(part)
        return b"".join(parts)

    def feed(self, size: int, crc: int | None) -> int | None:
        """Pass ``size`` bytes, through the CRC-64 when ``crc`` is not ``None``."""
        while size:
            if self.pos == len(self.chunk) and not self._more():
                raise _Broken(f"the tar ends inside an entry's data at byte {self.offset}")
            part = min(size, len(self.chunk) - self.pos)
            if crc is not None:
                crc = crc64(memoryview(self.chunk)[self.pos:self.pos + part], crc)
            self.pos += part
            self.offset += part
            size -= part
        return crc

    def drain(self) -> None:
        self.pos = len(self.chunk)
        while self._more():
            pass


def _checksum(block: bytes, offset: int) -> None:
    """Go's ``archive/tar`` refuses a header whose checksum is neither the unsigned nor the
    signed sum of its bytes (the checksum field counted as spaces)."""
    try:
        want = _number(block[148:156])
    except _Bad:
        raise _Broken(f"header at byte {offset} has no valid checksum") from None
    rest = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(rest)
    signed = unsigned - 256 * sum(1 for b in rest if b & 0x80)
    if want not in (unsigned, signed):
        raise _Broken(f"header at byte {offset} fails its checksum (not a tar there)")


def _entries(tar: _Tar, out: LayerFiles, found: dict[str, LayerFile]) -> None:
    """Every entry up to the end of the archive into ``found`` (the last of a path wins);
    an entry refused is a problem and the walk goes on; ``_Broken`` stops it."""
    number = 0
    while True:
        start = tar.offset
        block = tar.take(BLOCK, eof_ok=True)
        if not block:
            return  # the end of the stream on a block boundary: Go's io.EOF
        if block == _ZERO:
            after = tar.take(BLOCK, eof_ok=True)
            if not after or after == _ZERO:
                return
            raise _Broken(f"a zero block at byte {start} is followed by a header")
        number += 1
        raw = bytearray()
        too_big = False
        while True:
            _checksum(block, tar.offset - BLOCK)
            flag = block[156:157]
            if flag not in _EXTENSIONS:
                raw += block
                break
            try:
                size = _number(block[124:136])
            except _Bad as exc:
                raise _Broken(f"extension header at byte {tar.offset - BLOCK}: {exc}") from None
            if size < 0:
                raise _Broken(f"extension header at byte {tar.offset - BLOCK} has a negative size")
            padded = -(-size // BLOCK) * BLOCK
            if too_big or len(raw) + BLOCK + padded > MAX_HEADERS + BLOCK * 4:
                too_big = True  # passed over, never held
                tar.feed(padded, None)
            else:
                raw += block
                raw += tar.take(padded)
            block = tar.take(BLOCK)
        try:
            main_size = _number(block[124:136])
        except _Bad as exc:
            raise _Broken(f"header at byte {tar.offset - BLOCK}: {exc}") from None
        fields: dict[str, object] | None = None
        name = block[0:100].split(b"\0", 1)[0]
        why = f"headers are longer than {MAX_HEADERS} bytes" if too_big else None
        if not too_big:
            try:
                fields, name = _headers(bytes(raw), 0)
            except _Bad as exc:
                why = str(exc)
        size = main_size if fields is None else int(fields["size"])  # type: ignore[call-overload]
        if flag in _HEADER_ONLY:
            size = 0
        if size < 0:
            raise _Broken(f"entry {number} has a negative size")
        crc = tar.feed(size, 0 if fields is not None and flag in _FILES and size else None)
        tar.feed(-size % BLOCK, None)
        if fields is not None:
            try:
                entry = _entry(fields, name, crc.to_bytes(8, "big") if crc is not None else None)
            except _Bad as exc:
                why = str(exc)
            else:
                if entry.whiteout != "root":
                    found.pop(entry.path, None)  # a path given again moves to its new place
                    found[entry.path] = entry
                continue
        shown = _shown(name.decode("utf-8", "replace"))
        out.problems.append(f"entry {number} ({shown}): {why}")


def _source(blob: _Blob, magic: bytes) -> tuple[str, _Readable]:
    if magic.startswith(GZIP_MAGIC):
        return "gzip", gzip.GzipFile(fileobj=cast(IO[bytes], blob), mode="rb")
    if magic.startswith(ZSTD_MAGIC):
        import zstandard

        return "zstd", zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], blob), read_size=CHUNK, read_across_frames=True, closefd=False)
    return "tar", blob


def readable(media_type: str) -> bool:
    """Whether a layer of this media type can be read here."""
    return media_type.endswith(READABLE) and "encrypted" not in media_type


def read_blob_files(layout: Layout, digest: str, diff_id: str | None,
                    media_type: str | None = None) -> LayerFiles:
    """The entries of the layer whose blob is ``digest`` (its uncompressed tar should be
    ``diff_id``). Never raises for what is on disk: every fault is a line of ``problems``."""
    out = LayerFiles()
    if media_type is not None and not readable(media_type):
        out.problems.append(f"media type {_shown(media_type)} is not a tar this reads")
        return out
    try:
        path = layout.blob_file(digest)
    except ValueError:
        out.problems.append(f"blob {_shown(digest)} is not a valid digest")
        return out
    try:
        fd = os.open(path, _OPEN)
    except FileNotFoundError:
        out.problems.append(f"blob {digest} is missing")
        return out
    except OSError as exc:
        out.problems.append(f"blob {digest} cannot be opened: {exc.strerror or exc}")
        return out
    found: dict[str, LayerFile] = {}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            out.problems.append(f"blob {digest} is not a regular file")
            return out
        blob = _Blob(fd)
        kind, source = _source(blob, os.pread(fd, 4, 0))
        tar = _Tar(source)
        whole = False
        try:
            _entries(tar, out, found)
            tar.drain()  # what follows the end of the archive counts in the diff ID
            whole = True
        except _Broken as exc:
            out.problems.append(f"layer tar does not parse: {exc}")
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            out.problems.append(f"blob is not a readable {kind} stream: {exc or 'truncated'}")
        except OSError as exc:
            out.problems.append(f"blob {digest} cannot be read: {exc.strerror or exc}")
        except Exception as exc:  # zstandard.ZstdError, without importing it for every layer
            if type(exc).__name__ != "ZstdError":
                raise
            out.problems.append(f"blob is not a readable zstd stream: {exc}")
        try:
            blob.drain()
        except OSError as exc:
            out.problems.append(f"blob {digest} cannot be read: {exc.strerror or exc}")
        else:
            got = f"{digest.partition(':')[0]}:" + blob.hash.hexdigest() \
                if digest.startswith("sha256:") else None
            if got is not None and got != digest:
                out.problems.append(f"blob content is {got}, not its digest {digest}")
        if whole and diff_id is not None and diff_id.startswith("sha256:"):
            tar_id = "sha256:" + tar.hash.hexdigest()
            if tar_id != diff_id:
                out.problems.append(f"uncompressed tar is {tar_id}, not the diff ID {diff_id}")
                found.clear()
    finally:
        os.close(fd)
    out.entries = list(found.values())
    return out


__all__ = ["READABLE", "read_blob_files", "readable"]
