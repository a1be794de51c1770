"""A layer's tar rebuilt from ``layerdb/sha256/<chain>/tar-split.json.gz`` and the graph
driver's files, byte for byte, as moby's ``layer.TarStream`` does (vbatts/tar-split's
``WriteOutputTarStream``): ``docker load`` accepts a layer only when its sha256 is the diff ID.

Everything streams: the tar-split is read block by block, files up to ``CHUNK`` at once and
larger ones in chunks of it, so memory stays flat whatever the layer's size. The driver's tree
is someone else's data: a name is cleaned lexically (as Go's ``filepath.Join``) and refused if
it climbs out or is absolute, every component is opened relative to its parent without
following a symlink, and a member is opened once (``O_NOFOLLOW``, ``O_NONBLOCK``: never a
FIFO's wait), checked by ``fstat`` to be a regular file, and read from that descriptor.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import multiprocessing
import os
import queue
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
from imagestore.moby.tarsplit_entries import Entry, InvalidEntry, clean_name, read_entries

DRIVERS = ("vfs", "overlay2")
TAR_SPLIT = "tar-split.json.gz"
CHUNK = 1 << 20  # file reads and output chunks; a file up to this size is read at once
_INLINE = 8 << 20  # a layer's first bytes are hashed inline: a thread costs more
_QUEUED = 4  # chunks waiting for the hashing thread

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


def _shown_name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


class _Dirs:
    """Descriptors of the current folder chain below the layer's folder: members come folder
    by folder, so each folder is opened once, never through a symlink. ``key`` is the raw
    folder part of the last name resolved: a next name in the same one (the usual case) with
    a plain last component cleans to the same chain, so it is not cleaned again."""

    def __init__(self, root_fd: int) -> None:
        self.names: list[bytes] = []
        self.fds = [root_fd]
        self.key: bytes | None = None

    def parent(self, name: bytes, src: LayerSource) -> tuple[int, bytes]:
        """The open folder holding ``name`` and the name within it."""
        folder, _, base = name.rpartition(b"/")
        plain = base not in (b"", b".", b"..") and b"\0" not in base
        if plain and folder == self.key and not name.startswith(b"/"):
            return self.fds[-1], base
        parts = clean_name(name)
        if not parts:
            raise src.error(_shown_name(name), "name is absolute or climbs out of the layer "
                            "(refused)" if parts is None else "names the layer's folder itself")
        self.key = None
        self._enter(parts[:-1], src, name)
        self.key = folder if plain else None  # then parts[:-1] is the folder's own chain
        return self.fds[-1], parts[-1]

    def _enter(self, parts: list[bytes], src: LayerSource, member: bytes) -> None:
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
                shown = _shown_name(b"/".join([*self.names, part]))
                why = _open_failure(exc, part, self.fds[-1])
                raise src.error(_shown_name(member), f"folder {shown} {why}") from None
            self.names.append(part)
            self.fds.append(fd)

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _entries(src: LayerSource, decode: bool = True) -> Iterator[Entry]:
    """Each tar-split entry (``tarsplit_entries.read_entries``). Raises ``LayerError``."""
    path = src.folder / TAR_SPLIT
    try:
        fd = os.open(path, _FILE)
    except OSError as exc:
        raise src.error(str(path), f"tar-split {_open_failure(exc, str(path))}") from None
    raw = os.fdopen(fd, "rb")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise src.error(str(path), "tar-split is not a regular file")
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield from read_entries(gz.read, decode)
    except (OSError, EOFError, zlib.error) as exc:
        why = "it is truncated" if isinstance(exc, EOFError) else str(exc) or type(exc).__name__
        raise src.error(str(path), f"tar-split is not a readable gzip file: {why}") from None
    except InvalidEntry as exc:
        raise src.error(str(path), f"tar-split entry {exc.line} is invalid: {exc.why}") from None
    finally:
        raw.close()


def layer_length(src: LayerSource) -> int:
    """The rebuilt tar's length (segments plus file sizes), from the tar-split: a cheap first
    pass that lets an archive announce a layer's size before streaming it (the driver's
    folder is opened too, so that a missing one fails before anything is written)."""
    os.close(_open_layer_folder(src))
    return sum(size for kind, _, size, _ in _entries(src, decode=False) if kind in (1, 2))


def _open_member(src: LayerSource, dirs: _Dirs, name: bytes) -> int:
    """The member's file, opened once without following a symlink or blocking on a FIFO,
    checked to be a regular file."""
    parent, base = dirs.parent(name, src)
    try:
        fd = os.open(base, _FILE, dir_fd=parent)
    except OSError as exc:
        raise src.error(_shown_name(name), _open_failure(exc, base, parent)) from None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        raise src.error(_shown_name(name), "not a regular file")
    except BaseException:
        os.close(fd)
        raise


def _misfit(src: LayerSource, name: bytes, size: int, got: int) -> LayerError:
    return src.error(_shown_name(name), f"file is shorter than the tar-split says "
                                        f"({got} of {size} bytes)" if got < size else
                     f"file is longer than the tar-split says ({size} bytes)")


def _small_member(src: LayerSource, dirs: _Dirs, name: bytes, size: int, crc: bytes) -> bytes:
    """A file of at most ``CHUNK`` bytes, read in one call (one more byte asked, to see a
    longer file) and checked against the tar-split's size and CRC."""
    fd = _open_member(src, dirs, name)
    try:
        data = os.read(fd, size + 1)
        while len(data) < size and (more := os.read(fd, size + 1 - len(data))):
            data += more  # a short read that is not the end: rare
    except OSError as exc:
        raise src.error(_shown_name(name), f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise _misfit(src, name, size, len(data))
    if crc64(data, 0).to_bytes(8, "big") != crc:
        raise src.error(_shown_name(name), "file changed: its CRC-64 is not the tar-split's")
    return data


def _member(src: LayerSource, dirs: _Dirs, name: bytes, size: int, crc: bytes
            ) -> Iterator[bytes]:
    """A larger file's bytes in chunks, checked against the tar-split's size and CRC while
    they stream. Raises ``LayerError`` naming the member."""
    fd = _open_member(src, dirs, name)
    try:
        left, check = size, 0
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise _misfit(src, name, size, size - left)
            check = crc64(chunk, check)
            left -= len(chunk)
            yield chunk
        if os.read(fd, 1):
            raise _misfit(src, name, size, size + 1)
        if check.to_bytes(8, "big") != crc:
            raise src.error(_shown_name(name), "file changed: its CRC-64 is not the tar-split's")
    except OSError as exc:
        raise src.error(_shown_name(name), f"unreadable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


class _Digest:
    """The stream's sha256, computed in a second thread once the stream is large enough to
    be worth one (hashlib releases the GIL on large updates) while this thread reads and
    checks the next files; at most ``_QUEUED`` chunks wait, so memory stays bounded."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.inline = _INLINE
        self.queue: queue.Queue[bytes | None] = queue.Queue(_QUEUED)
        self.thread: threading.Thread | None = None

    def update(self, chunk: bytes) -> None:
        if self.thread is not None:
            self.queue.put(chunk)
        elif self.inline > 0:
            self.inline -= len(chunk)
            self.sha.update(chunk)
        else:
            self.thread = threading.Thread(target=self._run, name="layer-sha256", daemon=True)
            self.thread.start()
            self.queue.put(chunk)

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.sha.update(chunk)

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        self.thread = None

    def hexdigest(self) -> str:
        self.close()
        return self.sha.hexdigest()


def _assemble(src: LayerSource, problems: list[LayerProblem] | None) -> Iterator[bytes]:
    """The layer tar in chunks (segments and small files joined to about ``CHUNK`` bytes, a
    larger file's chunks as read); the diff ID is checked after the last. With ``problems``,
    a member at fault is recorded and skipped (the stream is then wrong: no digest check).
    tar-split's reader also refuses a name given twice; that costs memory for every name of
    the layer, and no store holds such a layer (its packer refused it): the digest decides."""
    if not is_image_id(src.chain_id):
        raise src.error("", "not a chain ID")
    dirs = _Dirs(_open_layer_folder(src))
    digest = _Digest()
    pieces: list[bytes] = []
    pending = 0

    def flush() -> bytes:
        nonlocal pending
        out = b"".join(pieces)
        pieces.clear()
        pending = 0
        digest.update(out)
        return out

    try:
        for kind, name, size, payload in _entries(src):
            if kind == 2:
                pieces.append(payload)
                pending += len(payload)
            elif kind == 1 and size:
                try:
                    if size <= CHUNK:
                        pieces.append(_small_member(src, dirs, name, size, payload))
                        pending += size
                    else:
                        if pieces:
                            yield flush()
                        for chunk in _member(src, dirs, name, size, payload):
                            digest.update(chunk)
                            yield chunk
                except LayerError as exc:
                    if problems is None:
                        raise
                    problems.append(exc.problem)
            if pending >= CHUNK:
                yield flush()
        if pieces:
            yield flush()
        got = PREFIX + digest.hexdigest()
        if got != src.diff_id and not problems:
            raise src.error("", f"rebuilt tar is {got}, not the diff ID {src.diff_id}")
    finally:
        digest.close()
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
