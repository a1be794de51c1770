"""What containerd's garbage collector keeps in one namespace (core/metadata/gc.go
``scanRoots`` and ``references``, pkg/gc ``Tricolor``), computed on decoded records.

Roots: image records (unless their ``containerd.io/gc.expire`` has passed), leases not
expired (their content, snapshots, ingests and images; a ``containerd.io/gc.flat`` lease
holds only those, not what they refer to), ingest records whose ``expireat`` is still ahead,
containers, blobs and snapshots labelled ``containerd.io/gc.root*``, and what sandboxes'
reference labels name. References: an image's target and its labels; a blob's labels
(``containerd.io/gc.ref.content*``, ``…gc.ref.snapshot.<snapshotter>``, ``…gc.ref.image*``);
a snapshot's parent and labels; a container's snapshot and labels; an ingest's expected
digest; and the back references (``containerd.io/gc.bref.*``) that tie a record to the
life of another. Conditional references (``containerd.io/gc.cond.*``) and collectors
registered by plugins are not followed: they only ever keep more.

Only labels are followed, as the collector does: a blob an image needs but no label leads
to is taken by the collector, and the check says so (``unprotected-blob``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from imagestore.containerd.meta import Namespace

CONTENT, SNAPSHOT, IMAGE, INGEST, CONTAINER = "content", "snapshot", "image", "ingest", "container"
FLAT = "+flat"  # a node reached through a flat lease: kept, its references not followed
Node = tuple[str, str]  # (type, key); a snapshot's key is "<snapshotter>/<key>"

GC_ROOT = "containerd.io/gc.root"
GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"
_REFS = (("containerd.io/gc.ref.content", CONTENT), ("containerd.io/gc.ref.image", IMAGE))
_SNAP_REF = "containerd.io/gc.ref.snapshot."
_BREFS = (("containerd.io/gc.bref.container", CONTAINER),
          ("containerd.io/gc.bref.content", CONTENT), ("containerd.io/gc.bref.image", IMAGE))
_SNAP_BREF = "containerd.io/gc.bref.snapshot."

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))\Z")


def parse_time(text: str) -> datetime | None:
    """Go's ``time.Parse(time.RFC3339, …)`` (fractions allowed), or ``None``."""
    m = _RFC3339.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micros = int((m.group(7) or "0").ljust(9, "0")[:6])
    try:
        value = datetime(year, month, day, hour, minute, second, micros, timezone.utc)
    except ValueError:
        return None
    if not m.group(8):
        sign = 1 if m.group(9) == "+" else -1
        value -= sign * timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
    return value


def expired(labels: dict[str, str], now: datetime) -> bool:
    """A ``containerd.io/gc.expire`` label that has passed (an unparsable one is ignored,
    as containerd ignores it)."""
    text = labels.get(GC_EXPIRE)
    when = parse_time(text) if text is not None else None
    return when is not None and now > when


def _named(key: str, prefix: str) -> bool:
    """containerd's rule: the prefix itself, or followed by '.' or '/' (a name)."""
    return key == prefix or (key.startswith(prefix) and key[len(prefix)] in "./")


def _snapshotter(key: str, prefix: str) -> str:
    return key[len(prefix):].split("/", 1)[0]


def label_refs(labels: dict[str, str]) -> Iterator[Node]:
    """The forward references a record's labels make."""
    for key, value in sorted(labels.items()):
        for prefix, kind in _REFS:
            if _named(key, prefix):
                yield kind, value
        if key.startswith(_SNAP_REF):
            yield SNAPSHOT, f"{_snapshotter(key, _SNAP_REF)}/{value}"


def label_brefs(labels: dict[str, str]) -> Iterator[Node]:
    """The records a record's back-reference labels tie it to."""
    for key, value in sorted(labels.items()):
        for prefix, kind in _BREFS:
            if _named(key, prefix):
                yield kind, value
        if key.startswith(_SNAP_BREF):
            yield SNAPSHOT, f"{_snapshotter(key, _SNAP_BREF)}/{value}"


def is_root(labels: dict[str, str]) -> bool:
    return any(k.startswith(GC_ROOT) for k in labels)


class Graph:
    """The namespace as the collector sees it."""

    def __init__(self, ns: Namespace, now: datetime | None = None) -> None:
        self.ns = ns
        self.now = now or datetime.now(timezone.utc)
        self.backrefs: dict[Node, list[Node]] = {}

    def _bref(self, target: Node, holder: Node) -> None:
        self.backrefs.setdefault(target, []).append(holder)

    def roots(self) -> list[Node]:
        ns, out = self.ns, []
        for lease in ns.lease_records.values():
            if expired(lease.labels, self.now):
                continue
            flat = FLAT if GC_FLAT in lease.labels else ""
            out += [(CONTENT + flat, d) for d in lease.content]
            out += [(SNAPSHOT + flat, f"{sn}/{k}") for sn, k in lease.snapshots]
            out += [(INGEST, r) for r in lease.ingests]
            out += [(IMAGE + flat, n) for n in lease.images]
        for name, image in ns.images.items():
            if not expired(image.labels, self.now):
                out.append((IMAGE, name))
            else:
                for target in label_brefs(image.labels):
                    self._bref(target, (IMAGE, name))
        for ref, ingest in ns.ingests.items():
            until = parse_time(ingest.expires) if ingest.expires else None
            if until is not None and until > self.now:
                out.append((INGEST, ref))
        for digest, blob in ns.blobs.items():
            for target in label_brefs(blob.labels):
                self._bref(target, (CONTENT, digest))
            if is_root(blob.labels):
                out.append((CONTENT, digest))
        for cid, container in ns.containers.items():
            out.append((CONTAINER, cid))
            for target in label_brefs(container.labels):
                self._bref(target, (CONTAINER, cid))
        for sn, records in ns.snapshots.items():
            for key, snap in records.items():
                for target in label_brefs(snap.labels):
                    self._bref(target, (SNAPSHOT, f"{sn}/{key}"))
                if is_root(snap.labels):
                    out.append((SNAPSHOT, f"{sn}/{key}"))
        for labels in ns.sandboxes.values():
            out += list(label_refs(labels))
        return out

    def references(self, node: Node) -> list[Node]:
        kind, key = node
        out = list(self.backrefs.get(node, ()))
        flat = kind.endswith(FLAT)
        base = kind.removesuffix(FLAT)
        ns = self.ns
        if kind == CONTENT:
            blob = ns.blobs.get(key)
            if blob is not None:
                out += label_refs(blob.labels)
        elif base == SNAPSHOT:
            sn, _, name = key.partition("/")
            snap = ns.snapshots.get(sn, {}).get(name)
            if snap is not None:
                if snap.parent:
                    out.append((kind, f"{sn}/{snap.parent}"))
                if not flat:
                    out += label_refs(snap.labels)
        elif base == IMAGE:
            image = ns.images.get(key)
            if image is not None:
                out.append((CONTENT + (FLAT if flat else ""), image.target.digest))
                if not flat:
                    out += label_refs(image.labels)
        elif kind == INGEST:
            ingest = ns.ingests.get(key)
            if ingest is not None and ingest.expected:
                out.append((CONTENT, ingest.expected))
        elif kind == CONTAINER:
            container = ns.containers.get(key)
            if container is not None:
                if container.snapshotter:
                    out.append((SNAPSHOT, f"{container.snapshotter}/{container.snapshot_key}"))
                out += label_refs(container.labels)
        return out

    def reachable(self) -> set[Node]:
        """Every node the collector marks (pkg/gc ``Tricolor``; flat marks stripped)."""
        grays = self.roots()
        seen = set(grays)
        marked: set[Node] = set()
        while grays:
            node = grays.pop()
            for ref in self.references(node):
                if ref not in seen:
                    seen.add(ref)
                    grays.append(ref)
            marked.add((node[0].removesuffix(FLAT), node[1]))
        return marked


def reachable(ns: Namespace, now: datetime | None = None) -> set[Node]:
    return Graph(ns, now).reachable()


__all__ = ["CONTAINER", "CONTENT", "IMAGE", "INGEST", "SNAPSHOT", "Graph", "Node", "expired",
           "is_root", "label_brefs", "label_refs", "parse_time", "reachable"]
