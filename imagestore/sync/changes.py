"""How one sync finds what changed on disk since the last: each kind's scan against the
signatures the index keeps, bucket by bucket; and how the store records its own writes."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator

from imagestore.index import Digests, Writer
from imagestore.moby.root import CONTENT, LAYERS, METADATA, Root, split_entry
from imagestore.sync.leftovers import note_metadata_temp_files
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.scan import Scan, scan, start_scan
from imagestore.sync.signatures import (
    SCHEME,
    bucket,
    entry_signature,
    folder_signature,
    legacy_signature,
)
from imagestore.sync.state import Pass

# (changed or new names, removed names, what is on disk)
Diff = tuple[set[str], set[str], Scan]


# Kinds whose entries are only ever renamed into place or removed: their folder signs them.
FOLDER_SIGNED = (LAYERS, CONTENT)
SCHEME_KEY = "signature-scheme"


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
        if kind in FOLDER_SIGNED and self._unchanged(kind):
            return
        self._started[kind] = start_scan(self.p.root, kind, whole=True)

    def _unchanged(self, kind: str) -> bool:
        """The kind's folder keeps the settled signature stored at the last listing."""
        if kind not in self._folders:
            self._folders[kind] = folder_signature(self.p.root, kind, time.time_ns())
        sig = self._folders[kind]
        return (not self.p.full and not self.legacy and sig is not None
                and self.p.tx.buckets.setting(_folder_key(kind)) == str(sig))

    def diff(self, kind: str, *, scanned: Callable[[Scan], None] | None = None) -> Diff:
        """The changes of one kind; the new signatures are written at once (same
        transaction). ``scanned`` is given the listing as soon as it is made."""
        p = self.p
        if kind in FOLDER_SIGNED and self._unchanged(kind):
            return set(), set(), Scan.skipped(p.root, kind)
        started = self._started.pop(kind, None)
        p.report.listed.append(kind)
        current = started() if started else scan(p.root, kind)
        if scanned is not None:
            scanned(current)
        result = self._diff(kind, current)
        if kind in FOLDER_SIGNED:
            sig = self._folders.get(kind)
            p.tx.buckets.set_setting(_folder_key(kind), None if sig is None else str(sig))
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
        now = current.in_buckets(None if everything else buckets)
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


def _folder_key(kind: str) -> str:
    return "folder-signature:" + kind


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
