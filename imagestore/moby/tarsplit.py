"""A layer's tar rebuilt from ``layerdb/sha256/<chain>/tar-split.json.gz`` and the graph
driver's files, byte for byte, as moby's ``layer.TarStream`` does (vbatts/tar-split's
``WriteOutputTarStream``): ``docker load`` accepts a layer only when its sha256 is the diff ID.

Everything streams: the tar-split is read line by line, files in fixed chunks, so memory stays
flat whatever the layer's size. The driver's tree is someone else's data: a name is cleaned
lexically (as Go's ``filepath.Join``) and refused if it climbs out or is absolute, and every
component is opened relative to its parent without following a symlink.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import gzip
import hashlib
import json
import multiprocessing
import os
import stat
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagestore.errors import ImageStoreError
from imagestore.moby.digest import PREFIX, is_image_id
from imagestore.moby.files import read_optional
from imagestore.moby.save_go import crc64

DRIVERS = ("vfs", "overlay2")
TAR_SPLIT = "tar-split.json.gz"
CHUNK = 1 << 17  # file reads and output chunks
MAX_ENTRY = 1 << 24  # one JSON line; real ones are a few KiB (headers, PAX records)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _shown(text: str) -> str:
    """One printable line: names come from someone else's disk."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class LayerProblem:
    """Why a layer cannot be rebuilt exactly. ``path`` is the member's name in the layer tar
    for a file at fault, the on-disk path of a metadata file or folder at fault, or ``""``
    for the layer as a whole."""

    chain_id: str
    path: str
    reason: str

    def __str__(self) -> str:
        where = f"{_shown(self.path)}: " if self.path else ""
        return f"layer {self.chain_id}: {where}{_shown(self.reason)}"


class LayerError(ImageStoreError):
    """A layer that cannot be rebuilt byte for byte; ``str()`` is one line naming both."""

    def __init__(self, chain_id: str, path: str, reason: str) -> None:
        super().__init__(chain_id, path, reason)  # args rebuild it (pickle, copy)
        self.chain_id = chain_id
        self.path = path
        self.reason = reason

    @property
    def problem(self) -> LayerProblem:
        return LayerProblem(self.chain_id, self.path, self.reason)

    def __str__(self) -> str:
        return str(self.problem)


@dataclass(frozen=True)
class LayerSource:
    """One layer to rebuild: ``layerdb`` holds ``sha256/<chain>/``, ``driver_root`` is the
    graph driver's folder ``<data-root>/<driver>``."""

    layerdb: Path
    driver_root: Path
    driver: str
    chain_id: str
    diff_id: str

    @property
    def folder(self) -> Path:
        return self.layerdb / "sha256" / self.chain_id[len(PREFIX) :]

    def error(self, path: str, reason: str) -> LayerError:
        return LayerError(self.chain_id, path, reason)


def layer_source(image_root: Path, chain_id: str, diff_id: str | None = None) -> LayerSource:
    """A layer of the image root ``<data-root>/image/<driver>``; its diff ID is read from
    layerdb when not given."""
    driver = image_root.name
    src = LayerSource(image_root / "layerdb", image_root.parent.parent / driver, driver,
                      chain_id, diff_id or "")
    if not is_image_id(chain_id):
        raise src.error("", "not a chain ID")
    if diff_id is None:
        src = LayerSource(src.layerdb, src.driver_root, driver, chain_id, _meta(src, "diff"))
    return src


def _meta(src: LayerSource, name: str) -> str:
    path = src.folder / name
    try:
        raw = read_optional(path)
    except OSError as exc:
        raise src.error(str(path), f"unreadable: {exc.strerror or exc}") from None
    if raw is None:
        why = f"{name} is missing" if src.folder.is_dir() else "layer is not in layerdb"
        raise src.error(str(path), why)
    return raw.decode("utf-8", "replace").strip()


def _open_failure(exc: OSError, name: str | bytes, dir_fd: int | None = None) -> str:
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            return "is a symlink (not followed)"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "is missing" if exc.errno == errno.ENOENT else "is not a directory"
    return f"cannot be opened: {exc.strerror or exc}"


def _open_layer_folder(src: LayerSource) -> int:
    """The driver folder holding this layer's files: ``vfs/dir/<cache-id>`` (the whole
    root file system) or ``overlay2/<cache-id>/diff`` (the layer's own files)."""
    if src.driver not in DRIVERS:
        raise src.error("", f"graph driver {src.driver!r} is not supported ({', '.join(DRIVERS)})")
    cache_id = _meta(src, "cache-id")
    if not cache_id or "/" in cache_id or "\0" in cache_id or cache_id in (".", ".."):
        raise src.error(str(src.folder / "cache-id"), f"not a folder name: {cache_id[:80]!r}")
    path = src.driver_root
    try:  # the driver's own folder may be reached through a symlink; nothing below it
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise src.error(str(path), f"cannot be opened: {exc.strerror or exc}") from None
    for part in ["dir", cache_id] if src.driver == "vfs" else [cache_id, "diff"]:
        path = path / part
        try:
            nxt = os.open(part, _DIR, dir_fd=fd)
        except OSError as exc:
            raise src.error(str(path), _open_failure(exc, part, fd)) from None
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _clean(name: bytes) -> list[bytes] | None:
    """Go's ``filepath.Join(root, name)``, lexically; ``None`` for a name that is absolute or
    climbs out of the layer's folder."""
    if name.startswith(b"/") or b"\0" in name:
        return None
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(part)
    return parts


class _Dirs:
    """Descriptors of the current folder chain below the layer's folder: members come folder
    by folder, so each folder is opened once, never through a symlink."""

    def __init__(self, root_fd: int) -> None:
        self.names: list[bytes] = []
        self.fds = [root_fd]

    def open(self, parts: list[bytes], src: LayerSource, member: str) -> int:
        common = 0
        while common < min(len(self.names), len(parts)) and self.names[common] == parts[common]:
            common += 1
        while len(self.names) > common:
            self.names.pop()
            os.close(self.fds.pop())
        for part in parts[common:]:
            try:
                fd = os.open(part, _DIR, dir_fd=self.fds[-1])
            except OSError as exc:
                shown = b"/".join([*self.names, part]).decode("utf-8", "surrogateescape")
                why = _open_failure(exc, part, self.fds[-1])
                raise src.error(member, f"folder {shown} {why}") from None
            self.names.append(part)
            self.fds.append(fd)
        return self.fds[-1]

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _b64(value: object, what: str) -> bytes:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value or "", validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not valid base64") from None


def _entries(src: LayerSource) -> Iterator[tuple[int, bytes, int, bytes]]:
    """``(type, name, size, payload)`` of each tar-split entry, read line by line (entries of
    unknown types come too: tar-split skips them). Raises ``LayerError``."""
    path = src.folder / TAR_SPLIT
    try:
        fd = os.open(path, _FILE)
    except OSError as exc:
        raise src.error(str(path), f"tar-split {_open_failure(exc, str(path))}") from None
    raw = os.fdopen(fd, "rb")
    line_no = 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise src.error(str(path), "tar-split is not a regular file")
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            while line := gz.readline(MAX_ENTRY + 1):
                line_no += 1
                if len(line) > MAX_ENTRY:
                    raise ValueError(f"longer than {MAX_ENTRY} bytes")
                if line.strip():
                    yield _entry(json.loads(line))
    except (OSError, EOFError, zlib.error) as exc:
        why = "it is truncated" if isinstance(exc, EOFError) else str(exc) or type(exc).__name__
        raise src.error(str(path), f"tar-split is not a readable gzip file: {why}") from None
    except (ValueError, RecursionError) as exc:
        raise src.error(str(path), f"tar-split entry {line_no} is invalid: {exc}") from None
    finally:
        raw.close()


def _entry(doc: object) -> tuple[int, bytes, int, bytes]:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    kind = doc.get("type")
    if type(kind) is not int:
        raise ValueError("type is not an integer")
    payload = _b64(doc.get("payload"), "payload")
    if kind != 1:
        return kind, b"", 0, payload
    raw = _b64(doc.get("name_raw"), "name_raw")
    name = doc.get("name") or ""
    if not isinstance(name, str):
        raise ValueError("name is not a string")
    size = doc.get("size", 0)
    if type(size) is not int or not 0 <= size < 1 << 63:
        raise ValueError("size is not a non-negative integer")
    if size and len(payload) != 8:
        raise ValueError("payload is not an 8-byte CRC-64")
    try:
        return 1, raw or name.encode(), size, payload
    except UnicodeEncodeError:
        raise ValueError("name is not valid UTF-8") from None


def layer_length(src: LayerSource) -> int:
    """The rebuilt tar's length (segments plus file sizes), from the tar-split: a cheap first
    pass that lets an archive announce a layer's size before streaming it (the driver's
    folder is opened too, so that a missing one fails before anything is written)."""
    os.close(_open_layer_folder(src))
    return sum(len(payload) if kind == 2 else size if kind == 1 else 0
               for kind, _, size, payload in _entries(src))


def _member(src: LayerSource, dirs: _Dirs, name: bytes, size: int, crc: bytes
            ) -> Iterator[bytes]:
    """One file's bytes from the driver's tree, checked against the tar-split's size and
    CRC while they stream. Raises ``LayerError`` naming the member."""
    shown = name.decode("utf-8", "surrogateescape")
    parts = _clean(name)
    if not parts:
        raise src.error(shown, "name is absolute or climbs out of the layer (refused)"
                        if parts is None else "names the layer's folder itself")
    parent = dirs.open(parts[:-1], src, shown)
    try:
        fd = os.open(parts[-1], _FILE, dir_fd=parent)
    except OSError as exc:
        raise src.error(shown, _open_failure(exc, parts[-1], parent)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise src.error(shown, "not a regular file")
        left, check = size, 0
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise src.error(shown, f"file is shorter than the tar-split says "
                                       f"({size - left} of {size} bytes)")
            check = crc64(chunk, check)
            left -= len(chunk)
            yield chunk
        if os.read(fd, 1):
            raise src.error(shown, f"file is longer than the tar-split says ({size} bytes)")
        if check.to_bytes(8, "big") != crc:
            raise src.error(shown, "file changed: its CRC-64 is not the tar-split's")
    except OSError as exc:
        raise src.error(shown, f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _assemble(src: LayerSource, problems: list[LayerProblem] | None) -> Iterator[bytes]:
    """The layer tar in chunks; the diff ID is checked after the last. With ``problems``, a
    member at fault is recorded and skipped (the stream is then wrong: no digest check).
    tar-split's reader also refuses a name given twice; that costs memory for every name of
    the layer, and no store holds such a layer (its packer refused it): the digest decides."""
    if not is_image_id(src.chain_id):
        raise src.error("", "not a chain ID")
    dirs = _Dirs(_open_layer_folder(src))
    sha = hashlib.sha256()
    buf = bytearray()

    def flush() -> bytes:
        out = bytes(buf)
        buf.clear()
        sha.update(out)
        return out

    try:
        for kind, name, size, payload in _entries(src):
            if kind == 2:
                buf += payload
            elif kind == 1:
                try:
                    for chunk in _member(src, dirs, name, size, payload) if size else ():
                        buf += chunk
                        if len(buf) >= CHUNK:
                            yield flush()
                except LayerError as exc:
                    if problems is None:
                        raise
                    problems.append(exc.problem)
            if len(buf) >= CHUNK:
                yield flush()
        if buf:
            yield flush()
        got = PREFIX + sha.hexdigest()
        if got != src.diff_id and not problems:
            raise src.error("", f"rebuilt tar is {got}, not the diff ID {src.diff_id}")
    finally:
        dirs.close()


def stream_layer(src: LayerSource) -> Iterator[bytes]:
    """The layer's exact tar in chunks of about ``CHUNK`` bytes; ``LayerError`` at the first
    fault (a digest fault only after the last chunk: what was sent must be discarded)."""
    return _assemble(src, None)


def write_layer(src: LayerSource, out: BinaryIO) -> int:
    """Write the layer's tar to ``out``; returns its length."""
    total = 0
    for chunk in stream_layer(src):
        out.write(chunk)
        total += len(chunk)
    return total


def check_layer(src: LayerSource) -> list[LayerProblem]:
    """Rebuild without writing; every missing or changed file of the layer, in tar order (for
    ``fsck --layers``). An unreadable tar-split or folder ends the layer's check there."""
    problems: list[LayerProblem] = []
    try:
        for _ in _assemble(src, problems):
            pass
    except LayerError as exc:
        problems.append(exc.problem)
    return problems


def check_layers(sources: Iterable[LayerSource], workers: int | None = None
                 ) -> list[LayerProblem]:
    """``check_layer`` over many layers, in worker processes (hashing and CRCs are CPU work);
    the problems come in the order of ``sources``."""
    items = list(sources)
    count = min(workers or os.cpu_count() or 1, len(items))
    # Forking while other threads run can leave a lock held in the child: stay in-process.
    if count < 2 or threading.active_count() > 1 \
            or "fork" not in multiprocessing.get_all_start_methods():
        return [p for src in items for p in check_layer(src)]
    with ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("fork")) as pool:
        return [p for found in pool.map(check_layer, items) for p in found]
