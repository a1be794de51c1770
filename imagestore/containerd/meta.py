"""``meta.db``, containerd's metadata (core/metadata: images.go ``readImage``, content.go,
snapshot.go, containers.go, leases.go), read beside a live containerd.

containerd holds an flock on the file and commits in place; this reader takes no lock and
never waits. bbolt never overwrites pages the current meta page reaches until a later
commit, so a read is consistent when the meta's transaction ID is the same before and after
it; otherwise (or when the read tears and fails to parse) it is tried again, and after a
few tries fails with ``TornRead``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from imagestore.containerd.decode import DecodeError, rfc3339, varint
from imagestore.errors import ImageStoreError
from imagestore.moby import bbolt

TRIES = 5
PATIENCE = 3.0  # seconds of retries before a torn read is an error


class TornRead(ImageStoreError):
    """``meta.db`` changed under every attempt to read it (or cannot be read)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: could not read a consistent copy ({why})")
        self.path = path


@dataclass(frozen=True)
class Descriptor:
    digest: str
    media_type: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """One record of ``v1/<ns>/images``: a name and its target."""

    name: str
    target: Descriptor
    created: str | None  # RFC 3339 with nanoseconds, UTC
    updated: str | None
    labels: dict[str, str]


@dataclass(frozen=True)
class BlobRecord:
    """A blob of the namespace. A node holds tens of thousands: their creation time and
    labels are decoded when asked for, not when ``meta.db`` is read."""

    digest: str
    size: int
    created_at: bytes | None  # Go's binary time
    label_values: dict[str, str] | bbolt.Bucket  # decoded, or the labels bucket as read

    @property
    def created(self) -> str | None:
        return rfc3339(self.created_at)

    @property
    def labels(self) -> dict[str, str]:
        found = self.label_values
        return _kv(found) if isinstance(found, bbolt.Bucket) else found


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot of the namespace (``v1/<ns>/snapshots/<snapshotter>/<key>``)."""

    snapshotter: str
    key: str
    backend: str  # its name in the snapshotter's own metadata.db
    parent: str | None
    labels: dict[str, str]


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    image: str
    snapshotter: str
    snapshot_key: str
    labels: dict[str, str] = field(default_factory=dict)
    manifest: str | None = None  # the platform manifest it runs, when Docker's config says


@dataclass(frozen=True)
class IngestRecord:
    ref: str
    expected: str | None
    backend: str = ""  # the content store's ref, "<ns>/<n>/<ref>" (its ingest folder)
    expires: str | None = None  # ``expireat``, RFC 3339 UTC; None: none (or unreadable)


@dataclass(frozen=True)
class LeaseRecord:
    """A lease and what it holds (``v1/<ns>/leases/<id>``); snapshots as (snapshotter, key)."""

    id: str
    labels: dict[str, str]
    content: tuple[str, ...] = ()
    snapshots: tuple[tuple[str, str], ...] = ()
    ingests: tuple[str, ...] = ()
    images: tuple[str, ...] = ()


@dataclass
class Namespace:
    name: str
    images: dict[str, ImageRecord] = field(default_factory=dict)
    blobs: dict[str, BlobRecord] = field(default_factory=dict)
    snapshots: dict[str, dict[str, SnapshotRecord]] = field(default_factory=dict)
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    ingests: dict[str, IngestRecord] = field(default_factory=dict)
    leases: list[str] = field(default_factory=list)
    lease_records: dict[str, LeaseRecord] = field(default_factory=dict)
    sandboxes: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> labels (2.x)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


@dataclass
class Meta:
    path: Path
    txid: int
    version: int | None
    namespaces: dict[str, Namespace]  # those read (all, unless some were asked for)
    present: list[str] = field(default_factory=list)  # every namespace of the file

    def names(self) -> list[str]:
        return sorted(self.present or self.namespaces)


def read(path: Path, namespaces: set[str] | None = None, *, brief: bool = False) -> Meta:
    """The whole of ``meta.db`` (only ``namespaces`` when given: the others are listed,
    empty), read consistently: tried again, with a growing pause, while containerd commits
    under the read (a busy node commits dozens of times a second), for up to ``PATIENCE``
    seconds and ``TRIES`` tries at least. ``brief``: what a sync keeps only (no blob or
    snapshot labels, no snapshot children, leases, ingests or sandboxes)."""
    skip = _skipper(namespaces, brief) if namespaces is not None or brief else None
    why = "no attempt"
    deadline = time.monotonic() + PATIENCE
    attempt = 0
    while attempt < TRIES or time.monotonic() < deadline:
        try:
            before = bbolt.txid(path)
            tree, txid = bbolt.read_with_txid(path, skip)
            after = bbolt.txid(path)
        except bbolt.BoltError as exc:
            why = str(exc)
            if not path.is_file():
                raise TornRead(path, "no such file") from None
        else:
            if before == txid == after:
                return _decode(path, txid, tree, namespaces)
            why = f"transaction {before} became {after} while reading"
        attempt += 1
        time.sleep(min(0.005 * attempt, 0.05))
    raise TornRead(path, why)


_BRIEF_NS = frozenset({b"leases", b"sandboxes"})


def _skipper(namespaces: set[str] | None, brief: bool) -> bbolt.Skip:
    wanted = None if namespaces is None else {n.encode() for n in namespaces}

    def skip(path: tuple[bytes, ...]) -> bool:
        depth = len(path)
        if depth < 2 or path[0] != b"v1":
            return False
        if depth == 2:
            return wanted is not None and path[1] not in wanted
        if not brief:
            return False
        part = path[2]
        if depth == 3:
            return part in _BRIEF_NS
        if part == b"content":
            return path[3] == b"ingests" or (depth == 6 and path[5] == b"labels")
        return part == b"snapshots" and depth == 6 and path[5] in (b"labels", b"children")

    return skip


def namespace_names(meta: Meta) -> list[str]:
    return meta.names()


def _s(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _kv(bucket: bbolt.Bucket | None) -> dict[str, str]:
    if bucket is None:
        return {}
    return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
            for k, v in bucket.plain().items()}


def _int(value: bytes | None) -> int:
    if not value:
        return 0
    try:
        return varint(value)
    except DecodeError:
        return -1


def _decode(path: Path, txid: int, tree: bbolt.Bucket, wanted: set[str] | None) -> Meta:
    top = tree.bucket(b"v1")
    if top is None:
        return Meta(path, txid, None, {})
    version = _int(top.value(b"version")) if top.value(b"version") else None
    spaces: dict[str, Namespace] = {}
    present = []
    for key, bucket in top.buckets().items():
        name = key.decode("utf-8", "replace")
        present.append(name)
        if wanted is not None and name not in wanted:
            continue
        spaces[name] = _namespace(name, bucket)
    return Meta(path, txid, version, spaces, sorted(present))


def _namespace(name: str, b: bbolt.Bucket) -> Namespace:
    ns = Namespace(name)
    for key, rec in (b.bucket(b"images") or bbolt.Bucket()).buckets().items():
        image_name = key.decode("utf-8", "replace")
        target = rec.bucket(b"target")
        digest = _s(target.value(b"digest")) if target else None
        if target is None or not digest:
            ns.problems.append((f"image {image_name}", "record has no target digest"))
            continue
        ns.images[image_name] = ImageRecord(
            image_name,
            Descriptor(digest, _s(target.value(b"mediatype")) or "",
                       _int(target.value(b"size")), _kv(rec.bucket(b"annotations"))),
            rfc3339(rec.value(b"createdat")), rfc3339(rec.value(b"updatedat")),
            _kv(rec.bucket(b"labels")))
    content = b.bucket(b"content")
    if content is not None:
        for key, rec in (content.bucket(b"blob") or bbolt.Bucket()).buckets().items():
            digest = key.decode("utf-8", "replace")
            ns.blobs[digest] = BlobRecord(digest, _int(rec.value(b"size")),
                                          rec.value(b"createdat"),
                                          rec.bucket(b"labels") or {})
        for key, rec in (content.bucket(b"ingests") or bbolt.Bucket()).buckets().items():
            ref = key.decode("utf-8", "replace")
            ns.ingests[ref] = IngestRecord(ref, _s(rec.value(b"expected")),
                                           _s(rec.value(b"ref")) or "",
                                           rfc3339(rec.value(b"expireat")))
    for sn_key, sn in (b.bucket(b"snapshots") or bbolt.Bucket()).buckets().items():
        snapshotter = sn_key.decode("utf-8", "replace")
        records = ns.snapshots.setdefault(snapshotter, {})
        for key, rec in sn.buckets().items():
            skey = key.decode("utf-8", "replace")
            records[skey] = SnapshotRecord(snapshotter, skey, _s(rec.value(b"name")) or "",
                                           _s(rec.value(b"parent")),
                                           _kv(rec.bucket(b"labels")))
    for key, rec in (b.bucket(b"containers") or bbolt.Bucket()).buckets().items():
        cid = key.decode("utf-8", "replace")
        ns.containers[cid] = ContainerRecord(cid, _s(rec.value(b"image")) or "",
                                             _s(rec.value(b"snapshotter")) or "",
                                             _s(rec.value(b"snapshotKey")) or "",
                                             _kv(rec.bucket(b"labels")))
    ns.leases = sorted(k.decode("utf-8", "replace")
                       for k in (b.bucket(b"leases") or bbolt.Bucket()).buckets())
    for key, rec in (b.bucket(b"leases") or bbolt.Bucket()).buckets().items():
        ns.lease_records[key.decode("utf-8", "replace")] = _lease(key, rec)
    for key, rec in (b.bucket(b"sandboxes") or bbolt.Bucket()).buckets().items():
        ns.sandboxes[key.decode("utf-8", "replace")] = _kv(rec.bucket(b"labels"))
    return ns


def _keys(bucket: bbolt.Bucket | None) -> tuple[str, ...]:
    return tuple(sorted(k.decode("utf-8", "replace") for k in bucket or ()))


def _lease(key: bytes, rec: bbolt.Bucket) -> LeaseRecord:
    snaps = rec.bucket(b"snapshots") or bbolt.Bucket()
    return LeaseRecord(key.decode("utf-8", "replace"), _kv(rec.bucket(b"labels")),
                       _keys(rec.bucket(b"content")),
                       tuple((sn.decode("utf-8", "replace"), k)
                             for sn, bucket in sorted(snaps.buckets().items())
                             for k in _keys(bucket)),
                       _keys(rec.bucket(b"ingests")), _keys(rec.bucket(b"images")))


def summary(meta: Meta) -> list[dict[str, object]]:
    """Each namespace with what it holds (``imagestore namespaces``): image records, images
    (distinct targets, as Docker 29 counts them), blobs, snapshots, containers, leases."""
    return [{"namespace": name, "records": len(ns.images),
             "images": len({r.target.digest for r in ns.images.values()}),
             "blobs": len(ns.blobs),
             "snapshots": sum(len(s) for s in ns.snapshots.values()),
             "containers": len(ns.containers), "leases": len(ns.leases)}
            for name, ns in sorted(meta.namespaces.items())]


__all__ = ["BlobRecord", "ContainerRecord", "Descriptor", "ImageRecord", "IngestRecord",
           "LeaseRecord", "Meta", "Namespace", "SnapshotRecord", "TornRead", "namespace_names",
           "read", "summary"]
