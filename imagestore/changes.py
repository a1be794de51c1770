"""What the index remembers of the disk, and how one sync finds what changed since the last.

Entries are grouped in buckets (a kind and the first characters of a name). Each bucket row
holds the digest of its entries' signatures and the signatures themselves, as a JSON object
that sqlite3 users can read with ``json_each``. A warm sync compares digests only; a bucket
whose digest moved is compared entry by entry. A cold sync of 100,000 images writes some
12,000 rows here instead of one per entry.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from imagestore import schema
from imagestore.db import IN_BATCH, ROW_BATCH, batches, bulk_insert
from imagestore.entries import (
    CONTENT,
    KINDS,
    LAYERS,
    METADATA,
    Digests,
    Root,
    Scan,
    bucket,
    digests,
    entry_signature,
    folder_signature,
    metadata_temp_files,
    scan,
    start_scan,
)
from imagestore.ingest import Problem
from imagestore.parallel import chunked_map

Progress = Callable[[str, int, int], None]

# The digest of a bucket that must be compared entry by entry (real digests are >= 0).
UNKNOWN = -1


def under(column: Any, kind: str) -> Any:
    """Rows whose key lies under ``kind`` (a range, so the primary key answers it)."""
    if kind.endswith("/"):
        return (column >= kind) & (column < kind[:-1] + "0")
    return column == kind


def split(path: str) -> tuple[str, str]:
    """An entry path as (kind, name)."""
    for kind in KINDS:
        if path.startswith(kind):
            return kind, path[len(kind):]
    raise ValueError(f"not an entry path: {path!r}")


def stored_digests(conn: Connection, kind: str) -> Digests:
    b = schema.entry_buckets
    return {r.prefix[len(kind):]: (r.digest, r.entries) for r in conn.execute(
        select(b.c.prefix, b.c.digest, b.c.entries).where(under(b.c.prefix, kind)))}


def stored_signatures(conn: Connection, kind: str, buckets: set[str] | None) -> dict[str, int]:
    """Name -> stored signature of the entries of one kind in these buckets (``None``: all)."""
    b = schema.entry_buckets
    query = select(b.c.signatures)
    out: dict[str, int] = {}
    if buckets is None:
        for text in conn.scalars(query.where(under(b.c.prefix, kind))):
            out.update(_load(text))
        return out
    for chunk in batches(sorted(kind + k for k in buckets), IN_BATCH):
        for text in conn.scalars(query.where(b.c.prefix.in_(chunk))):
            out.update(_load(text))
    return out


def save(conn: Connection, kind: str, now: dict[str, int], digests: Digests,
         replaced: Iterable[str]) -> None:
    """Replace the rows of the ``replaced`` buckets with what ``now`` holds of them (a bucket
    left empty gets no row); ``digests`` are those of ``now``, by bucket."""
    b = schema.entry_buckets
    for chunk in batches(sorted(kind + k for k in replaced), IN_BATCH):
        conn.execute(delete(b).where(b.c.prefix.in_(chunk)))
    # One bucket at a time, from the names in order: a cold sync's 12,000 objects need not
    # all be alive at once (``now`` comes from a sorted scan, which sorts again in one pass).
    rows: list[dict[str, Any]] = []
    for key, group in itertools.groupby(sorted(now), key=bucket):
        sigs = {n: now[n] for n in group}
        rows.append({"prefix": kind + key, "digest": digests[key][0], "entries": len(sigs),
                     "signatures": _dump(sigs)})
        if len(rows) == IN_BATCH:
            bulk_insert(conn, b, rows)
            rows = []
    bulk_insert(conn, b, rows)


def record(conn: Connection, root: Root, paths: Iterable[str]) -> None:
    """Store the current signature of entries the store itself just wrote or removed.

    Their buckets are marked unknown rather than summed again here (the next sync compares
    them entry by entry); a bucket with no row reads as empty, so the row stays, even with
    no entry left in it."""
    b = schema.entry_buckets
    for path in paths:
        kind, name = split(path)
        prefix = kind + bucket(name)
        sigs = _load(conn.scalar(select(b.c.signatures).where(b.c.prefix == prefix)))
        sig = entry_signature(root, kind, name)
        if sig is None:
            sigs.pop(name, None)
        else:
            sigs[name] = sig
        conn.execute(delete(b).where(b.c.prefix == prefix))
        conn.execute(insert(b).values(prefix=prefix, digest=UNKNOWN, entries=len(sigs),
                                      signatures=_dump(sigs)))


class Tracker:
    """What one sync finds changed on disk, and the problems it meets there (kept apart from
    the reading and writing in ``sync`` that acts on them)."""

    def __init__(self, conn: Connection, root: Root, *, full: bool = False,
                 progress: Progress | None = None, tidy: bool = False) -> None:
        self.conn = conn
        self.root = root
        self.full = full
        self.progress = progress
        self.tidy = tidy
        self.problems: dict[str, Problem] = {}
        # Problems recorded before this pass; a re-read entry's old one no longer applies.
        self.old_problems: dict[str, str] = dict(conn.execute(
            select(schema.problems.c.path, schema.problems.c.kind)).all())
        self.cleared: set[str] = set()
        self._started: dict[str, Callable[[], Scan]] = {}

    def tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, min(done, total), total)

    def clear(self, paths: Iterable[str]) -> None:
        """Forget the old problems of these entries (they are being read again)."""
        if self.old_problems:
            self.cleared.update(p for p in paths if p in self.old_problems)

    def note(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.problems[p.path] = p

    def problem_paths(self, kind: str) -> set[str]:
        return {p for p in self.old_problems if p.startswith(kind)}

    def start(self, kind: str) -> None:
        """Have the workers stat one kind's entries now, while this process does other work;
        ``diff`` collects the scan."""
        self._started[kind] = start_scan(self.root, kind, whole=True)

    def diff(self, kind: str, *, scanned: Callable[[Scan], None] | None = None
             ) -> tuple[set[str], set[str], Scan]:
        """(changed or new names, removed names, what is on disk) of one kind; the new
        signatures are written at once (same transaction).

        Layer folders are only ever added or removed (dockerd renames them into place), and
        either moves the signature of their parent folder: while that stays put they are
        not even listed. ``scanned`` is given their listing as soon as it is made."""
        if kind != LAYERS:
            started = self._started.pop(kind, None)
            return self._diff(kind, started() if started else scan(self.root, kind))
        key = "folder-signature:" + kind
        sig = folder_signature(self.root, kind, time.time_ns())
        s = schema.settings
        if not self.full and sig is not None and self.conn.scalar(
                select(s.c.value).where(s.c.key == key)) == str(sig):
            return set(), set(), Scan.skipped(self.root, kind)
        current = scan(self.root, kind)
        if scanned is not None:
            scanned(current)
        result = self._diff(kind, current)
        self.conn.execute(delete(s).where(s.c.key == key))
        # A leftover of an interrupted delete keeps the folder listed until it is removed.
        if sig is not None and not any(n.endswith("-removing") for n in current.others):
            self.conn.execute(insert(s).values(key=key, value=str(sig)))
        return result

    def _diff(self, kind: str, current: Scan) -> tuple[set[str], set[str], Scan]:
        """``diff`` once the entries are scanned. Buckets whose digest matches the stored one
        are not looked into, and buckets holding an entry with a problem always are (a tidy
        pass may have work there)."""
        self.clear(p for p, why in self.old_problems.items()
                   if why == "bad-name" and p.startswith(kind))
        self.note(Problem(kind + n, "bad-name", "not loaded: the file name is not UTF-8")
                  for n in current.not_text)
        known: Digests = {} if self.full else stored_digests(self.conn, kind)
        buckets = {k for k in current.digests.keys() | known.keys()
                   if current.digests.get(k) != known.get(k)}
        buckets.update(bucket(p[len(kind):]) for p in self.problem_paths(kind))
        if kind == LAYERS and self.tidy and any(n.endswith("-removing") for n in current.others):
            self.root.layerdb.remove_leftovers()
        if not buckets:
            return set(), set(), current
        # Past a quarter of the buckets, one pass over the kind beats picking them out.
        everything = 4 * len(buckets) > len(current.digests) + len(known)
        now = current.in_buckets(None if everything else buckets)
        stored = {} if self.full else stored_signatures(
            self.conn, kind, None if everything else buckets)
        changed = {n for n, sig in now.items() if stored.get(n) != sig}
        tidied = {bucket(n) for n in self._leftovers(kind, changed, now)}
        removed = stored.keys() - now.keys()
        del stored
        # The scan's digests stand, except where tidying just removed or rewrote entries.
        fresh = {k: d for k, d in current.digests.items()
                 if (everything or k in buckets) and k not in tidied}
        if tidied:
            fresh.update(digests((n, sig) for n, sig in now.items() if bucket(n) in tidied))
        replaced = known.keys() if everything else buckets & known.keys()
        save(self.conn, kind, now, fresh, replaced)
        # Callers only ask which names are on disk: the signatures (100,000s of ints) go.
        return changed, removed, dataclasses.replace(current, sigs=[])

    def _leftovers(self, kind: str, changed: set[str], current: dict[str, int]) -> set[str]:
        """Temp files of interrupted writes: removed when tidying, else recorded as problems
        (and removed by a later tidy pass). Creating one moved its folder's signature, so
        only changed entries and earlier finds are looked at: an unchanged root costs
        nothing here. Returns the entries whose signature tidying removed or changed."""
        imagedb = self.root.imagedb
        tidied: set[str] = set()
        if kind == CONTENT and self.tidy:
            seen = {p[len(CONTENT):] for p in self.problem_paths(CONTENT)}
            for name in [n for n in (changed | seen) & current.keys()
                         if imagedb.remove_temp_file(n)]:
                changed.discard(name)
                del current[name]
                tidied.add(name)
        elif kind == METADATA:
            nested: dict[str, list[str]] = {}  # earlier temp-file finds, by folder
            for path in self.problem_paths(METADATA):
                folder, slash, _ = path[len(METADATA):].partition("/")
                if slash:
                    nested.setdefault(folder, []).append(path)
            folders = sorted((changed | nested.keys()) & current.keys())
            start = 0
            for found in chunked_map(metadata_temp_files, self.root.base, folders):
                for name, temps in zip(folders[start : start + len(found)], found, strict=True):
                    self.clear(nested.get(name, ()))
                    if not temps:
                        continue
                    if self.tidy:
                        imagedb.remove_metadata_temp_files(name)
                        current[name] = entry_signature(self.root, kind, name) or current[name]
                        changed.add(name)
                        tidied.add(name)
                    else:
                        self.note(Problem(f"{METADATA}{name}/{t}", "temp-file",
                                          "temporary file left by an interrupted write")
                                  for t in temps)
                start += len(found)
        return tidied

    # -- bookkeeping ------------------------------------------------------------------------
    def save_problems(self) -> None:
        p = schema.problems
        stale = sorted((self.cleared | set(self.problems)) & self.old_problems.keys())
        for chunk in batches(stale, IN_BATCH):
            self.conn.execute(delete(p).where(p.c.path.in_(chunk)))
        found = now_text()
        rows = [{"path": x.path, "kind": x.kind, "reason": x.reason, "found_at": found}
                for x in self.problems.values()]
        for part in batches(rows, ROW_BATCH):
            bulk_insert(self.conn, p, part)


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dump(sigs: dict[str, int]) -> str:
    return json.dumps(sigs, separators=(",", ":"), sort_keys=True)


def _load(text: str | None) -> dict[str, int]:
    """Signatures of one bucket; anything unreadable counts as nothing stored (its entries
    are then read again, which is always safe)."""
    try:
        sigs = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(sigs, dict):
        return {}
    return {k: v for k, v in sigs.items() if type(v) is int}
