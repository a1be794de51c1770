"""Where things are under a root, and cheap signatures that tell whether they changed.

An entry is one thing the index mirrors: a content file, an image's metadata folder, a layer
folder, a container mount, ``repositories.json``. Its signature is a 63-bit number mixed from
``lstat`` results (type, size, mtime, ctime, inode; a layer folder's inode alone), stable
across runs and Python versions.

A folder that exists but cannot be listed stops the sync with a clear error: taking it for
empty would drop every image it holds from the index.
"""

from __future__ import annotations

import bisect
import functools
import os
import stat
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagestore.digest import is_hex64, is_text, printable
from imagestore.errors import ImageStoreError
from imagestore.fs import METADATA_KEYS, TEMP_PREFIX, ImageDB
from imagestore.layers import MOUNT_FILES, LayerDB
from imagestore.parallel import started_call, started_map

CONTENT = "imagedb/content/sha256/"
METADATA = "imagedb/metadata/sha256/"
LAYERS = "layerdb/sha256/"
MOUNTS = "layerdb/mounts/"
REPOSITORIES = "repositories.json"
KINDS = (CONTENT, METADATA, LAYERS, MOUNTS, REPOSITORIES)

_MASK = (1 << 63) - 1
_MISSING = 0x5DEECE66D
_ODD = 0x9E3779B97F4A7C15
BUCKET = 3
SETTLED_NS = 2_000_000_000


@dataclass(frozen=True)
class Root:
    """An image root on disk: ``<data-root>/image/<driver>``."""

    path: Path

    @property
    def base(self) -> str:
        return str(self.path)

    @property
    def imagedb(self) -> ImageDB:
        return ImageDB(self.path / "imagedb", create=False)

    @property
    def layerdb(self) -> LayerDB:
        return LayerDB(self.path / "layerdb")

    @property
    def repositories(self) -> Path:
        return self.path / REPOSITORIES


def find_root(path: str | os.PathLike[str]) -> Path:
    """The image root for ``path``: the folder itself, or ``image/<driver>`` of a data-root."""
    root = Path(path)
    if not root.is_dir():
        raise ImageStoreError(f"root {str(root)!r} is not a directory")
    if (root / "imagedb").is_dir() or (root / "layerdb").is_dir():
        return root
    drivers = sorted(p for p in (root / "image").glob("*") if (p / "imagedb").is_dir())
    if len(drivers) == 1:
        return drivers[0]
    if len(drivers) > 1:
        names = ", ".join(p.name for p in drivers)
        raise ImageStoreError(f"{root} holds several image roots ({names}): pick one of image/*")
    raise ImageStoreError(f"{root} is not a Docker image root (no imagedb/ or layerdb/)")


def signature(st: os.stat_result) -> int:
    """A number that moves when the entry is rewritten, replaced (new inode) or retyped."""
    h = (st.st_mtime_ns * 0x9E3779B97F4A7C15) ^ (st.st_ctime_ns * 0xC2B2AE3D27D4EB4F)
    h ^= (st.st_ino * 0x165667B19E3779F9) ^ (st.st_size * 0x27D4EB2F165667C5)
    return (h ^ stat.S_IFMT(st.st_mode)) & _MASK


def bucket(name: str) -> str:
    """The group an entry's signature is summed into: its name's first characters (about 25
    entries a bucket at 100,000 images)."""
    return name[:BUCKET]


def share(name: str, sig: int) -> int:
    """An entry's share of its bucket's digest: moves when either its name or its signature
    does, and is the same in every process (no salted ``hash``)."""
    return ((zlib.crc32(name.encode(), sig & 0xFFFFFFFF) << 31) ^ sig) * _ODD & _MASK


Digests = dict[str, tuple[int, int]]  # bucket -> (sum of shares mod 2**63, entries)


def add_digests(into: Digests, more: Digests) -> None:
    for b, (digest, count) in more.items():
        old, n = into.get(b, (0, 0))
        into[b] = ((old + digest) & _MASK, n + count)


def digests(pairs: Iterable[tuple[str, int]]) -> Digests:
    out: Digests = {}
    for name, sig in pairs:
        b = name[:BUCKET]
        old, n = out.get(b, (0, 0))
        out[b] = ((old + share(name, sig)) & _MASK, n + 1)
    return out


@dataclass
class Scan:
    """Every entry of one kind on disk now: names (sorted), their signatures, and the digest
    of each bucket. Only buckets whose digest moved are ever looked at name by name."""

    names: list[str]
    sigs: list[int]
    digests: Digests
    not_text: list[str]  # names that are not UTF-8, printable: never entries
    others: list[str]  # the rest of the listing that holds no entry
    unlisted: Callable[[str], bool] | None = None  # the folder was not listed: ask the disk

    @classmethod
    def skipped(cls, root: Root, kind: str) -> Scan:
        """A folder known not to have changed: nothing listed, membership asked one by one."""
        return cls([], [], {}, [], [],
                   lambda name: entry_signature(root, kind, name) is not None)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if self.unlisted is not None:
            return self.unlisted(name)
        i = bisect.bisect_left(self.names, name)
        return i < len(self.names) and self.names[i] == name

    def in_buckets(self, buckets: set[str] | None) -> dict[str, int]:
        """Name -> signature of the entries in these buckets (``None``: all of them)."""
        if buckets is None:
            return dict(zip(self.names, self.sigs, strict=True))
        return {n: s for n, s in zip(self.names, self.sigs, strict=True)
                if n[:BUCKET] in buckets}


def names(root: Root, kind: str) -> list[str]:
    """Candidate entries of one kind (the raw listing: ``signatures`` weeds out the rest)."""
    folder = f"{root.base}/{kind}"
    if kind == REPOSITORIES:
        return [""]
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise _unlistable(folder, exc) from None


def signatures(kind: str, base: str, names: Sequence[str]) -> tuple[list[int | None], Digests]:
    """The current signature of each named entry (``None``: not an entry) and the digests of
    what was found, by bucket; runs in workers. Paths are resolved from an open folder."""
    folder = base if kind == REPOSITORIES else f"{base}/{kind}"
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return [None] * len(names), {}
    except OSError as exc:
        raise _unlistable(folder, exc) from None
    try:
        sigs = [_signature_at(fd, kind, name) for name in names]
    finally:
        os.close(fd)
    return sigs, digests((n, s) for n, s in zip(names, sigs, strict=True) if s is not None)


def layer_folders(base: str) -> dict[str, int | None]:
    """Name -> signature of each layer folder (``None``: no layer folder), from the listing
    alone: it gives a folder's inode without a stat, and dockerd writes a layer folder
    elsewhere and renames it into place, never editing it, so a new inode is the only change
    a layer folder sees."""
    out: dict[str, int | None] = {}
    try:
        with os.scandir(f"{base}/{LAYERS}") as listing:
            for e in listing:
                ok = is_hex64(e.name) and e.is_dir(follow_symlinks=False)
                out[e.name] = _folder_signature(e.inode()) if ok else None
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise _unlistable(f"{base}/{LAYERS}", exc) from None
    return out


def _unlistable(folder: str, exc: OSError) -> ImageStoreError:
    return ImageStoreError(f"cannot list {folder.rstrip('/')}: {exc.strerror or exc}")


def folder_signature(root: Root, kind: str, now_ns: int) -> int | None:
    """The signature of a kind's folder itself, or ``None`` while it cannot be trusted yet:
    a folder changed within ``SETTLED_NS`` of ``now_ns`` may change again within the same
    (coarse) timestamp tick and keep its mtime, as git's "racy" files do."""
    try:
        st = os.lstat(f"{root.base}/{kind}")
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_mtime_ns > now_ns - SETTLED_NS:
        return None
    return signature(st)


def scan(root: Root, kind: str) -> Scan:
    """Every entry of one kind, with its signature.

    One ``lstat`` per content file; for a metadata folder, the folder and each of its files
    (other tools rewrite those in place); layer folders come from the listing alone
    (``layer_folders``). A large root is stat-ed by worker processes. ``sync --full``
    re-reads everything regardless.
    """
    return start_scan(root, kind)()


def start_scan(root: Root, kind: str, *, whole: bool = False) -> Callable[[], Scan]:
    """``scan``, with the stat-ing handed to the workers now; call the result for the Scan.

    ``whole``: one worker lists the folder too, and what it found waits packed small (the
    names in one bytes object, the signatures in an array) until called for: the syncing
    process may be at its largest meanwhile, and many small objects would fragment its heap
    for the rest of the pass."""
    if whole and kind in (CONTENT, METADATA):
        return functools.partial(_unpacked, started_call(whole_scan, root.base, kind))
    if kind == LAYERS:
        listed = layer_folders(root.base)
        found = sorted(listed)
        sigs = [listed[n] for n in found]
        parts: Iterable[tuple[list[int | None], Digests]] = [
            (sigs, digests((n, s) for n, s in zip(found, sigs, strict=True) if s is not None))]
        return functools.partial(_collect, found, parts, [])
    found, not_text = _text_names(kind, sorted(names(root, kind)))
    started = started_map(functools.partial(signatures, kind), root.base, found)
    return functools.partial(_collect, found, started, not_text)


def _text_names(kind: str, found: list[str]) -> tuple[list[str], list[str]]:
    """The names that can be entries, and the others printed (names that are not UTF-8 are
    never entries; outside content and mounts only hex names are, see ``_signature_at``)."""
    if kind not in (CONTENT, MOUNTS):
        return found, []
    not_text = [printable(n) for n in found if not is_text(n)]
    return ([n for n in found if is_text(n)] if not_text else found), not_text


# A whole scan, packed into a few large objects (small ones that outlive the layers' chains
# would pin the heap those leave): names that are 64 hex digits as 32 raw bytes each (zero
# bytes in place of the others, listed by position), signatures, the buckets' keys (one
# string), digests and sizes, then names that are not text and names that hold no entry.
Packed = tuple[bytes, dict[int, str], "array[int]", str, "array[int]", "array[int]",
               list[str], list[str]]
_ODD_NAME = bytes(32)


def whole_scan(base: str, kind: str) -> Packed:
    """A content or metadata scan start to end, packed; runs in a worker."""
    found, not_text = _text_names(kind, sorted(names(Root(Path(base)), kind)))
    sigs, buckets = signatures(kind, base, found)
    kept = [n for n, sig in zip(found, sigs, strict=True) if sig is not None]
    odd = {i: n for i, n in enumerate(kept) if not is_hex64(n)}
    raw = b"".join(_ODD_NAME if i in odd else bytes.fromhex(n) for i, n in enumerate(kept))
    others = [n for n, sig in zip(found, sigs, strict=True) if sig is None]
    return (raw, odd, array("q", [sig for sig in sigs if sig is not None]),
            "\0".join(buckets), array("q", [d for d, _ in buckets.values()]),
            array("q", [n for _, n in buckets.values()]), not_text, others)


def _unpacked(started: Callable[[], Packed]) -> Scan:
    raw, odd, sigs, keys, sums, sizes, not_text, others = started()
    kept: list[str] = []
    step = 32 * 4096  # a piece at a time: no second copy of every name at once
    for start in range(0, len(raw), step):
        text = raw[start : start + step].hex()
        kept.extend(text[i : i + 64] for i in range(0, len(text), 64))
    del raw
    for i, name in odd.items():
        kept[i] = name
    buckets = dict(zip(keys.split("\0"), zip(sums, sizes, strict=True), strict=True)) \
        if keys else {}
    return Scan(kept, list(sigs), buckets, not_text, others)


def _collect(found: list[str], parts: Iterable[tuple[list[int | None], Digests]],
             not_text: list[str]) -> Scan:
    kept: list[str] = []
    sigs: list[int] = []
    others: list[str] = []
    buckets: Digests = {}
    start = 0
    for chunk, part in parts:
        for name, sig in zip(found[start : start + len(chunk)], chunk, strict=True):
            if sig is not None:
                kept.append(name)
                sigs.append(sig)
            else:
                others.append(name)
        add_digests(buckets, part)
        start += len(chunk)
    return Scan(kept, sigs, buckets, not_text, others)


def metadata_temp_files(base: str, names: Sequence[str]) -> list[list[str]]:
    """Temp files an interrupted write left in each named metadata folder; runs in workers."""
    out = []
    for name in names:
        try:
            found = os.listdir(f"{base}/{METADATA}{name}")
        except (FileNotFoundError, NotADirectoryError):
            found = []
        out.append([printable(n) for n in found if n.startswith(TEMP_PREFIX)])
    return out


def entry_signature(root: Root, kind: str, name: str) -> int | None:
    """The signature ``scan`` would give one entry now; ``None`` when it is gone."""
    sigs, _ = signatures(kind, root.base, [name])
    return sigs[0]


def _signature_at(fd: int, kind: str, name: str) -> int | None:
    """``None`` for what is not an entry of that kind: absent, or a name or file type that
    the kind does not hold (layer and metadata folders are 64-hex directories)."""
    if kind in (METADATA, LAYERS) and not is_hex64(name):
        return None
    if kind == MOUNTS and name.startswith("."):
        return None
    try:
        st = os.lstat(REPOSITORIES if kind == REPOSITORIES else name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if kind in (METADATA, MOUNTS):
        if not stat.S_ISDIR(st.st_mode):
            return None
        h = 17
        for file in METADATA_KEYS if kind == METADATA else MOUNT_FILES:
            try:
                part = signature(os.lstat(f"{name}/{file}", dir_fd=fd))
            except FileNotFoundError:
                part = _MISSING
            except NotADirectoryError:
                return None
            h = (h * 1000003 ^ part) & _MASK
        return (h * 1000003 ^ signature(st)) & _MASK
    if kind == LAYERS:
        return _folder_signature(st.st_ino) if stat.S_ISDIR(st.st_mode) else None
    return signature(st)


def _folder_signature(inode: int) -> int:
    return (inode * 0x165667B19E3779F9 ^ stat.S_IFDIR) & _MASK
