"""The parts of the namespace check beside blobs: unfinished ingests (the content store's
``ingest/`` folders and the namespace's ingest records) and snapshot chains (the
namespace's snapshot records against each snapshotter's own ``metadata.db``).

Each finding is a (kind, subject, message) triple; ``check`` makes them ``CtdFinding``s.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from imagestore.containerd import check_gc as gc
from imagestore.containerd import snapshotter
from imagestore.containerd.check_blobs import what
from imagestore.containerd.layout import CONTENT, META, SNAPSHOTTER_PREFIX, Layout
from imagestore.containerd.meta import TRIES, Namespace
from imagestore.moby import bbolt

INGEST = "ingest"
BROKEN_SNAPSHOT_CHAIN = "broken-snapshot-chain"
TORN_READ = "torn-read"
UNREFERENCED_SNAPSHOT = "unreferenced-snapshot"
SMALL = 4096  # an ingest's ref, total or updatedat file is a line of text

Triple = tuple[str, str, str]


def record(namespace: str, what_: str) -> str:
    """The subject naming a record of ``meta.db``: ``…/meta.db#<ns>/<what>``."""
    return f"{META}#{namespace}/{what_}"


def _small(path: Path) -> str | None:
    """A small text file's content, or ``None`` when it is absent, not a regular file,
    too long or unreadable (never followed through a symlink, never blocking)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL:
            return None
        return os.read(fd, SMALL).decode("utf-8", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _data_size(path: Path) -> str:
    try:
        info = os.lstat(path)
    except OSError:
        return "no data"
    if not stat.S_ISREG(info.st_mode):
        return f"data is {what(info.st_mode)}"
    return f"{info.st_size} bytes"


def ingests(layout: Layout, ns: Namespace, reach: set[gc.Node]) -> list[Triple]:
    """Every unfinished write of the namespace: each ``ingest/<sha256(ref)>`` folder whose
    ``ref`` names the namespace (or that has no readable ``ref``: it may be anyone's), with
    its record if the namespace has one, and each ingest record with no folder."""
    out: list[Triple] = []
    by_backend = {r.backend: r for r in ns.ingests.values() if r.backend}
    found: set[str] = set()
    try:
        names = sorted(os.listdir(layout.ingest))
    except OSError:
        names = []
    prefix = f"{ns.name}/"
    for name in names:
        path = layout.ingest / name
        subject = str(CONTENT / "ingest" / name)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            out.append((INGEST, subject, f"{what(mode)} among the ingest folders"))
            continue
        ref = _small(path / "ref")
        if ref is None:
            out.append((INGEST, subject, "unfinished write with no readable ref file (its "
                                         "namespace is unknown)"))
            continue
        if not ref.startswith(prefix):
            continue
        found.add(ref)
        total = _small(path / "total")
        size = _data_size(path / "data")
        written = f"{size} of {total}" if total and total.isdigit() else f"{size}, total unknown"
        notes = [f"unfinished write {ref.split('/', 2)[-1]!r}: {written}"]
        updated = _small(path / "updatedat")
        if updated:
            notes.append(f"last written {updated[:40]}")
        if hashlib.sha256(ref.encode()).hexdigest() != name:
            notes.append("the folder's name is not the hash of its ref")
        rec = by_backend.get(ref)
        if rec is None:
            notes.append("no ingest record in the namespace: containerd's content garbage "
                         "collector aborts it")
        else:
            notes.append(_record_note(rec.ref, rec.expected, rec.expires, reach))
        out.append((INGEST, subject, "; ".join(notes)))
    for ref in sorted(ns.ingests):
        rec = ns.ingests[ref]
        if rec.backend in found:
            continue
        out.append((INGEST, record(ns.name, f"content/ingests/{ref}"),
                    "ingest record with no data folder; "
                    + _record_note(ref, rec.expected, rec.expires, reach)))
    return out


def _record_note(ref: str, expected: str | None, expires: str | None,
                 reach: set[gc.Node]) -> str:
    note = f"recorded as {ref!r}" + (f", expecting {expected}" if expected else "")
    if (gc.INGEST, ref) in reach:
        return note + f", kept until {expires}" if expires else note
    return note + (f", expired {expires}" if expires else ", with no expiry") + \
        ": containerd's garbage collector removes the record"


def _read_snapshotter(path: Path) -> tuple[dict[str, snapshotter.Snapshot] | None, str]:
    why = ""
    for _ in range(TRIES):
        try:
            before = bbolt.txid(path)
            snaps, txid = snapshotter.read(path)
            if before == txid == bbolt.txid(path):
                return snaps, ""
            why = f"transaction {before} changed while reading"
        except bbolt.BoltError as exc:
            why = str(exc)
    return None, why


def snapshots(layout: Layout, ns: Namespace) -> list[Triple]:
    """Broken chains: a record whose parent key is not in the namespace, whose backend
    snapshot is not in its snapshotter's ``metadata.db`` or is chained to another parent
    there; a backend snapshot of the namespace whose parent is gone; and backend snapshots
    of the namespace no record names (the snapshotter's collector removes them)."""
    out: list[Triple] = []
    prefix = f"{ns.name}/"
    for sn in sorted(set(ns.snapshots) | set(layout.snapshotters())):
        records = ns.snapshots.get(sn, {})
        db = layout.snapshotter_db(sn)
        db_subject = f"{SNAPSHOTTER_PREFIX}{sn}/metadata.db"
        backends: dict[str, snapshotter.Snapshot] | None = None
        if os.path.lexists(db):
            backends, why = _read_snapshotter(db)
            if backends is None:
                out.append((TORN_READ, db_subject, why))
        elif records:
            out.append((BROKEN_SNAPSHOT_CHAIN, db_subject,
                        f"missing: the namespace's {len(records)} {sn} snapshot records have "
                        f"no backend"))
        for key in sorted(records):
            snap = records[key]
            subject = f"{sn}/{key}"
            parent = records.get(snap.parent) if snap.parent else None
            if snap.parent and parent is None:
                out.append((BROKEN_SNAPSHOT_CHAIN, subject,
                            f"its parent {snap.parent!r} is not a snapshot of the namespace"))
                continue
            if backends is None:
                continue
            backend = backends.get(snap.backend)
            if backend is None:
                out.append((BROKEN_SNAPSHOT_CHAIN, subject,
                            f"its backend snapshot {snap.backend!r} is not in {db_subject}"))
            elif (parent.backend if parent else None) != backend.parent \
                    and (backend.parent is None or backend.parent in backends):
                out.append((BROKEN_SNAPSHOT_CHAIN, subject,
                            f"its parent is {snap.parent or 'none'} (backend "
                            f"{parent.backend if parent else 'none'!s}) but {db_subject} "
                            f"chains {snap.backend!r} to {backend.parent or 'none'}"))
        if backends is None:
            continue
        named = {r.backend: f"{sn}/{k}" for k, r in records.items()}
        for name in sorted(n for n in backends if n.startswith(prefix)):
            backend = backends[name]
            if backend.parent and backend.parent not in backends:
                whose = f" (the backend of {named[name]})" if name in named else ""
                out.append((BROKEN_SNAPSHOT_CHAIN, f"{db_subject}#{name}",
                            f"its parent {backend.parent!r} is not in {db_subject}{whose}"))
            if name not in named:
                out.append((UNREFERENCED_SNAPSHOT, f"{db_subject}#{name}",
                            f"no {sn} snapshot record of the namespace names this {backend.kind} "
                            f"snapshot: the snapshotter's garbage collector removes it"))
    return out


__all__ = ["BROKEN_SNAPSHOT_CHAIN", "INGEST", "TORN_READ", "UNREFERENCED_SNAPSHOT", "Triple",
           "ingests", "record", "snapshots"]
