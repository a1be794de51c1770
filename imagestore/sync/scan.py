"""Listing one kind of entry and signing every entry of it, in worker processes when the
root is large.

A folder that exists but cannot be listed stops the sync with a clear error: taking it for
empty would drop every image it holds from the index.
"""

from __future__ import annotations

import bisect
import functools
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from imagestore.index import Digests
from imagestore.moby.digest import is_hex64, is_text, printable
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root
from imagestore.sync.compact import PackedScan, pack_scan, unpack_scan
from imagestore.sync.signatures import (
    BUCKET,
    add_digests,
    digests,
    entry_signature,
    folder_inode_signature,
    listed_signature,
    signatures,
    unlistable,
)
from imagestore.sync.workers import started_call, started_map


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
        raise unlistable(folder, exc) from None


def listed(base: str, kind: str) -> dict[str, int | None]:
    """Name -> signature of each layer folder or content file (``None``: not an entry), from
    the listing alone: it gives each one's inode and type without a stat."""
    out: dict[str, int | None] = {}
    try:
        with os.scandir(f"{base}/{kind}") as listing:
            for e in listing:
                if kind == LAYERS:
                    ok = is_hex64(e.name) and e.is_dir(follow_symlinks=False)
                    out[e.name] = folder_inode_signature(e.inode()) if ok else None
                else:
                    out[e.name] = listed_signature(e.inode(), _file_type(e))
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise unlistable(f"{base}/{kind}", exc) from None
    return out


def _file_type(entry: os.DirEntry[str]) -> int:
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)


def scan(root: Root, kind: str) -> Scan:
    """Every entry of one kind, with its signature."""
    return start_scan(root, kind)()


def start_scan(root: Root, kind: str, *, whole: bool = False) -> Callable[[], Scan]:
    """``scan``, with the stat-ing handed to the workers now; call the result for the Scan.

    ``whole``: one worker lists the folder too, and what it found waits packed small until
    called for: the syncing process may be at its largest meanwhile."""
    if whole and kind in (CONTENT, METADATA):
        return functools.partial(_unpacked, started_call(whole_scan, root.base, kind))
    if kind in (LAYERS, CONTENT):
        return functools.partial(_from_listing, root.base, kind)
    found, not_text = _text_names(kind, sorted(names(root, kind)))
    started = started_map(functools.partial(signatures, kind), root.base, found)
    return functools.partial(_collect, found, started, not_text)


def _text_names(kind: str, found: list[str]) -> tuple[list[str], list[str]]:
    """The names that can be entries, and the others printed (names that are not UTF-8 are
    never entries; outside content and mounts only hex names are)."""
    if kind not in (CONTENT, MOUNTS):
        return found, []
    not_text = [printable(n) for n in found if not is_text(n)]
    return ([n for n in found if is_text(n)] if not_text else found), not_text


def _from_listing(base: str, kind: str) -> Scan:
    signed = listed(base, kind)
    found, not_text = _text_names(kind, sorted(signed))
    sigs = [signed[n] for n in found]
    part = (sigs, digests((n, s) for n, s in zip(found, sigs, strict=True) if s is not None))
    return _collect(found, [part], not_text)


def whole_scan(base: str, kind: str) -> PackedScan:
    """A content or metadata scan start to end, packed; runs in a worker."""
    if kind == CONTENT:
        signed = listed(base, kind)
        found, not_text = _text_names(kind, sorted(signed))
        sigs: list[int | None] = [signed[n] for n in found]
        buckets = digests((n, s) for n, s in zip(found, sigs, strict=True) if s is not None)
    else:
        found, not_text = _text_names(kind, sorted(names(Root(Path(base)), kind)))
        sigs, buckets = signatures(kind, base, found)
    kept = [n for n, sig in zip(found, sigs, strict=True) if sig is not None]
    others = [n for n, sig in zip(found, sigs, strict=True) if sig is None]
    return pack_scan(kept, [sig for sig in sigs if sig is not None], buckets, not_text, others)


def _unpacked(started: Callable[[], PackedScan]) -> Scan:
    return Scan(*unpack_scan(started()))


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


__all__ = ["Scan", "listed", "names", "scan", "start_scan", "whole_scan"]
