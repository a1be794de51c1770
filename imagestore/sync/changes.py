"""How one sync finds what changed on disk since the last: each kind's scan against the
signatures the index keeps, bucket by bucket; and how the store records its own writes."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import cast

from imagestore.index import Digests, Writer
from imagestore.moby.digest import is_hex64
from imagestore.moby.root import CONTENT, LAYERS, METADATA, Root, split_entry
from imagestore.sync import workers
from imagestore.sync.compact import all_hex64
from imagestore.sync.fresh import FOLDER_SIGNED, SCHEME_KEY, folder_key
from imagestore.sync.leftovers import note_metadata_temp_files
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.scan import Scan, scan, start_scan
from imagestore.sync.signatures import (
    BUCKET,
    MASK,
    SCHEME,
    bucket,
    entry_signature,
    folder_inode_signature,
    folder_signature,
    legacy_signature,
    share,
    unlistable,
)
from imagestore.sync.state import Pass

# (changed or new names, removed names, what is on disk)
Diff = tuple[set[str], set[str], Scan]




class Changes:
    """The changes of each kind in one pass; scans may be started early (``start``)."""

    def __init__(self, p: Pass) -> None:
        self.p = p
        self._started: dict[str, Callable[[], Scan]] = {}
        self._folders: dict[str, int | None] = {}  # folder signatures taken this pass
        # An index signed another way is compared the old way, once.
        self._scheme = p.tx.buckets.setting(SCHEME_KEY)
        self.legacy = not p.full and self._scheme != SCHEME and p.tx.buckets.any(CONTENT)

    def finish(self) -> None:
        """Note the scheme the index is signed with now (a write only when it changed: a
        warm sync writes nothing)."""
        if self._scheme != SCHEME:
            self.p.tx.buckets.set_setting(SCHEME_KEY, SCHEME)

    def start(self, kind: str) -> None:
        """Have the workers stat one kind's entries now, while this process does other work;
        ``diff`` collects the scan. A folder-signed kind that has not changed is not even
        listed."""
        if kind in self._started or (kind in FOLDER_SIGNED and self._unchanged(kind)):
            return
        self._started[kind] = start_scan(self.p.root, kind, whole=True)

    def start_early(self) -> None:
        """When a folder-signed kind moved in a large store (a pull), start the workers and
        hand them the images' scans before the layers are even listed: the listing of the
        layer folders, their reads and their writes then run beside them. An unchanged store
        keeps the metadata scan spread over every worker; a new index keeps them for the
        layer folders first."""
        p = self.p
        if p.full or self.legacy or all(self._unchanged(kind) for kind in FOLDER_SIGNED):
            return
        if p.tx.count_images() < workers.PARALLEL_MIN or not workers.start_workers():
            return
        self.start(CONTENT)
        self.start(METADATA)

    def _unchanged(self, kind: str) -> bool:
        """The kind's folder keeps the settled signature stored at the last listing."""
        if kind not in self._folders:
            self._folders[kind] = folder_signature(self.p.root, kind, time.time_ns())
        sig = self._folders[kind]
        return (not self.p.full and not self.legacy and sig is not None
                and self.p.tx.buckets.setting(folder_key(kind)) == str(sig))

    def diff(self, kind: str, *, scanned: Callable[[Scan], None] | None = None) -> Diff:
        """The changes of one kind; the new signatures are written at once (same
        transaction). ``scanned`` is given the listing as soon as it is made."""
        p = self.p
        if kind in FOLDER_SIGNED and self._unchanged(kind):
            return set(), set(), Scan.skipped(p.root, kind)
        started = self._started.pop(kind, None)
        p.report.listed.append(kind)
        if started:
            current = started()
        elif kind == LAYERS:
            current = layer_listing(p.root.base)
        else:
            current = scan(p.root, kind)
        if scanned is not None:
            scanned(current)
        result = self._diff(kind, current)
        if kind in FOLDER_SIGNED:
            sig = self._folders.get(kind)
            p.tx.buckets.set_setting(folder_key(kind), None if sig is None else str(sig))
        return result

    def _diff(self, kind: str, current: Scan) -> Diff:
        """``diff`` once the entries are scanned. Buckets whose digest matches the stored one
        are not looked into, and buckets holding an entry with a problem always are (its
        problem is looked at again)."""
        p = self.p
        p.problems.clear(p.problems.old_of_kind(kind, ProblemKind.BAD_NAME))
        p.problems.note(Problem(kind + n, ProblemKind.BAD_NAME,
                                "not loaded: the file name is not UTF-8")
                        for n in current.not_text)
        known: Digests = {} if p.full else p.tx.buckets.digests(kind)
        buckets = {k for k in current.digests.keys() | known.keys()
                   if current.digests.get(k) != known.get(k)}
        buckets.update(bucket(path[len(kind):]) for path in p.problems.old_paths(kind))
        if not buckets:
            return set(), set(), current
        # Past a quarter of the buckets, one pass over the kind beats picking them out.
        everything = 4 * len(buckets) > len(current.digests) + len(known)
        now = current.in_buckets(None) if everything else _in_buckets(current, buckets)
        stored: dict[str, int] = {}
        if not p.full:
            compared = len(known) if everything else len(buckets & known.keys())
            if compared:
                p.report.compared[kind] += compared
            stored = p.tx.buckets.signatures(kind, None if everything else buckets)
        changed = {n for n, sig in now.items() if stored.get(n) != sig}
        if self.legacy and kind in (CONTENT, METADATA):
            changed = {n for n in changed if n not in stored
                       or legacy_signature(p.root, kind, n) != stored[n]}
        if kind == METADATA:
            note_metadata_temp_files(p, changed, now.keys())
        removed = stored.keys() - now.keys()
        del stored
        fresh = {k: d for k, d in current.digests.items() if everything or k in buckets}
        replaced = known.keys() if everything else buckets & known.keys()
        p.tx.buckets.save(kind, _bucket_rows(now, fresh), replaced)
        # Callers only ask which names are on disk: the signatures (100,000s of ints) go.
        return changed, removed, dataclasses.replace(current, sigs=[])


def layer_listing(base: str) -> Scan:
    """The layer folders' ``scan``, made for a folder of 100,000s: the listing alone gives
    each folder's inode and type, every step is one pass in C over all the names where it
    can be, and each bucket's digest is one ``sum`` over a slice of the sorted names. Gives
    what ``scan`` gives."""
    folder = f"{base}/{LAYERS}"
    try:
        with os.scandir(folder) as listing:
            listed = {e.name: e.inode() if e.is_dir(follow_symlinks=False) else None
                      for e in listing}
    except (FileNotFoundError, NotADirectoryError):
        listed = {}
    except OSError as exc:
        raise unlistable(folder, exc) from None
    found = sorted(listed)
    others: list[str] = []
    # Every name 64 hex digits and every entry a folder, as dockerd leaves it: told at once.
    if None not in listed.values() and all_hex64(found) is not None:
        names = found
    else:
        names = [n for n in found if is_hex64(n) and listed[n] is not None]
        others = [n for n in found if not is_hex64(n) or listed[n] is None]
    inodes = cast("Callable[[str], int]", listed.__getitem__)  # names holds folders only
    sigs = list(map(folder_inode_signature, map(inodes, names)))
    shares = list(map(share, names, sigs))
    buckets: Digests = {}
    i, end = 0, len(names)
    while i < end:
        key = names[i][:BUCKET]
        j = bisect.bisect_left(names, key + "g", i)  # past the bucket's hex names
        buckets[key] = (sum(shares[i:j]) & MASK, j - i)
        i = j
    return Scan(names, sigs, buckets, [], others)


def _in_buckets(current: Scan, buckets: set[str]) -> dict[str, int]:
    """``Scan.in_buckets`` of a few buckets: each one's names found by bisection in the
    sorted listing, not by a pass over every name."""
    names, sigs = current.names, current.sigs
    out: dict[str, int] = {}
    for key in buckets:
        lo = bisect.bisect_left(names, key)
        hi = lo
        while hi < len(names) and names[hi][:BUCKET] == key:
            hi += 1
        out.update(zip(names[lo:hi], sigs[lo:hi], strict=True))
    return out


def _bucket_rows(now: dict[str, int], fresh: Digests
                 ) -> Iterator[tuple[str, int, dict[str, int]]]:
    """(key, digest, signatures) of each bucket, one at a time from the names in order."""
    for key, group in itertools.groupby(sorted(now), key=bucket):
        yield key, fresh[key][0], {n: now[n] for n in group}


def record(tx: Writer, root: Root, paths: Iterable[str]) -> None:
    """Store the current signature of entries the store itself just wrote or removed."""
    for path in paths:
        kind, name = split_entry(path)
        tx.buckets.record(kind, bucket(name), name, entry_signature(root, kind, name))


__all__ = ["Changes", "Diff", "record"]
