"""fsck for one namespace of containerd's image store, read-only.

``check(layout, namespace)`` reports, as ``CtdFinding`` records:

* every blob an image record needs (its target; every platform manifest an index names
  *and the namespace records* — Docker and Kubernetes pull one platform, so a platform with
  neither record nor file is normal; each manifest's config and layers) that is missing,
  not a regular file, of another size than its descriptor or record says, or whose content
  does not hash to its digest; and an index or manifest that cannot be parsed;
* what containerd's garbage collector would take (``check_gc``): blob records and snapshot
  records no root reaches, blob files no namespace records, and blobs an image needs whose
  record no ``gc.ref`` label reaches (the collector follows labels only; the image walk
  follows the JSON, so the two together tell the unprotected ones);
* unfinished ingests, and snapshot chains that are broken (``check_store``);
* a ``meta.db`` that cannot be read consistently, as one finding.

Nothing is written, anywhere: every file is opened read-only, never through a symlink,
and only regular files are opened at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imagestore.containerd import check_blobs as cb
from imagestore.containerd import check_gc as gc
from imagestore.containerd import check_store
from imagestore.containerd.content import INDEXES, MANIFESTS
from imagestore.containerd.layout import META, Layout
from imagestore.containerd.meta import Descriptor, Meta, Namespace, TornRead
from imagestore.containerd.meta import read as read_meta
from imagestore.errors import NoSuchNamespace
from imagestore.moby import bbolt

MAX_DEPTH = 8  # nested indexes deeper than this are not followed

# The kinds, stable strings.
MISSING_BLOB = "missing-blob"  # needed, but no file (or no record in the namespace)
BAD_BLOB = "bad-blob"  # a blob path that is not a regular file, or cannot be read
SIZE_MISMATCH = "size-mismatch"  # the file's size is not what a descriptor or record says
DIGEST_MISMATCH = "digest-mismatch"
BAD_DOCUMENT = "bad-document"  # an index or manifest that does not parse
BAD_RECORD = "bad-record"  # a meta.db record that cannot be right
UNREFERENCED_BLOB = "unreferenced-blob"  # the garbage collector would take it
UNPROTECTED_BLOB = "unprotected-blob"  # an image needs it, yet the collector would take it
UNREFERENCED_SNAPSHOT = check_store.UNREFERENCED_SNAPSHOT
INGEST = check_store.INGEST
BROKEN_SNAPSHOT_CHAIN = check_store.BROKEN_SNAPSHOT_CHAIN
TORN_READ = check_store.TORN_READ
KINDS = (MISSING_BLOB, BAD_BLOB, SIZE_MISMATCH, DIGEST_MISMATCH, BAD_DOCUMENT, BAD_RECORD,
         UNREFERENCED_BLOB, UNPROTECTED_BLOB, UNREFERENCED_SNAPSHOT, INGEST,
         BROKEN_SNAPSHOT_CHAIN, TORN_READ)


@dataclass(frozen=True)
class CtdFinding:
    """One thing wrong: ``kind`` (one of ``KINDS``), ``subject`` (a digest for a blob;
    ``<snapshotter>/<key>`` for a snapshot record; a path under the root, with
    ``#<name>`` for a record inside a bbolt file) and what is wrong, in words."""

    kind: str
    subject: str
    message: str


def check(layout: Layout, namespace: str, *, now: datetime | None = None) -> list[CtdFinding]:
    """Everything wrong with ``namespace`` (see the module's docstring), sorted by kind and
    subject. ``now``: the time leases and ingests expire against (default: now).
    ``NoSuchNamespace`` when ``meta.db`` reads but has no such namespace."""
    try:
        meta = read_meta(layout.meta)
    except (TornRead, bbolt.BoltError) as exc:
        return [CtdFinding(TORN_READ, str(META), str(exc))]
    return check_meta(layout, meta, namespace, now=now)


def check_meta(layout: Layout, meta: Meta, namespace: str, *,
               now: datetime | None = None) -> list[CtdFinding]:
    """``check`` on records already decoded (tests give records no bbolt file holds)."""
    ns = meta.namespaces.get(namespace)
    if ns is None:
        raise NoSuchNamespace(namespace, meta.names())
    out = [CtdFinding(BAD_RECORD, check_store.record(namespace, what), why)
           for what, why in ns.problems]
    walk = Walk(layout, ns)
    for name in sorted(ns.images):
        walk.image(name, ns.images[name].target)
    out += walk.findings
    out += walk.blob_findings()
    reach = gc.reachable(ns, now)
    out += _unreachable(meta, ns, walk, reach)
    out += [CtdFinding(*t) for t in check_store.ingests(layout, ns, reach)]
    out += [CtdFinding(*t) for t in check_store.snapshots(layout, ns)]
    merged: dict[tuple[str, str], list[str]] = {}
    for f in out:  # one finding per kind and subject, every distinct message kept
        messages = merged.setdefault((f.kind, f.subject), [])
        if f.message not in messages:
            messages.append(f.message)
    return [CtdFinding(kind, subject, "; ".join(messages))
            for (kind, subject), messages in sorted(merged.items())]


@dataclass
class Need:
    """A digest the image walk met: who named it, with which size, and whether it must be
    there (a platform an index names may be absent; a target, config or layer may not)."""

    claims: dict[int, list[str]] = field(default_factory=dict)
    required: bool = False


class Walk:
    """Image records down through indexes and manifests to configs and layers; each
    document read and parsed once."""

    def __init__(self, layout: Layout, ns: Namespace) -> None:
        self.ns = ns
        self.blobs = cb.Blobs(layout, ns)
        self.needs: dict[str, Need] = {}
        self.findings: list[CtdFinding] = []
        self._walked: set[str] = set()

    def image(self, name: str, target: Descriptor) -> None:
        if not _is_digest(target.digest):
            self.findings.append(CtdFinding(
                BAD_RECORD, check_store.record(self.ns.name, f"image {name}"),
                f"target {target.digest[:100]!r} is not a digest"))
            return
        self._visit(target, f"image {name}", 0, required=True)

    def _visit(self, desc: Descriptor, who: str, depth: int, *, required: bool) -> None:
        need = self.needs.setdefault(desc.digest, Need())
        need.claims.setdefault(desc.size, []).append(who)
        need.required |= required
        if desc.digest not in self.ns.blobs:
            return  # reported as missing when required; an absent platform is normal
        is_doc = desc.media_type in INDEXES or desc.media_type in MANIFESTS
        blob = self.blobs.examine(desc.digest, desc.size, keep=is_doc)
        if not is_doc or desc.digest in self._walked or blob.state != cb.OK:
            return
        self._walked.add(desc.digest)
        doc = self._parse(desc, blob)
        if doc is None:
            return
        here = f"{'index' if desc.media_type in INDEXES else 'manifest'} {desc.digest}"
        if desc.media_type in INDEXES:
            if depth >= MAX_DEPTH:
                self._bad(desc.digest, f"indexes nested deeper than {MAX_DEPTH}: not followed")
                return
            for i, child in self._children(desc.digest, doc.get("manifests"), "manifests"):
                self._visit(child, f"{here} (manifests[{i}])", depth + 1, required=False)
            return
        config = _descriptor(doc.get("config"))
        if config is None:
            self._bad(desc.digest, "its config is not a descriptor")
        else:
            self._visit(config, f"{here} (config)", depth + 1, required=True)
        for i, layer in self._children(desc.digest, doc.get("layers"), "layers"):
            self._visit(layer, f"{here} (layers[{i}])", depth + 1, required=True)

    def _parse(self, desc: Descriptor, blob: cb.Blob) -> dict[str, Any] | None:
        if blob.data is None:
            self._bad(desc.digest, f"{blob.size} bytes: too large to parse")
            return None
        try:
            value = json.loads(blob.data)
        except (ValueError, RecursionError) as exc:
            self._bad(desc.digest, f"not JSON ({type(exc).__name__})")
            return None
        if not isinstance(value, dict):
            self._bad(desc.digest, "not a JSON object")
            return None
        return value

    def _children(self, digest: str, entries: object, what: str
                  ) -> Iterator[tuple[int, Descriptor]]:
        if entries is None:
            return
        if not isinstance(entries, list):
            self._bad(digest, f"its {what} is not a list")
            return
        for i, entry in enumerate(entries):
            child = _descriptor(entry)
            if child is None:
                self._bad(digest, f"{what}[{i}] is not a descriptor")
            else:
                yield i, child

    def _bad(self, digest: str, why: str) -> None:
        self.findings.append(CtdFinding(BAD_DOCUMENT, digest, why))

    def blob_findings(self) -> list[CtdFinding]:
        """One finding at most per blob: what the walk needed, and every other blob the
        namespace records (each checked against its own record)."""
        out = []
        for digest in sorted(set(self.needs) | set(self.ns.blobs)):
            need = self.needs.get(digest)
            if need is None:
                blob = self.blobs.examine(digest)
            elif digest in self.ns.blobs:
                blob = self.blobs.examine(digest, next(iter(need.claims)))
            elif need.required:
                out.append(CtdFinding(MISSING_BLOB, digest,
                                      f"no record in namespace {self.ns.name}; needed by "
                                      f"{_who(need)}"))
                continue
            else:
                continue
            finding = _blob_finding(blob, need, self.ns.name)
            if finding is not None:
                out.append(finding)
        return out


def _blob_finding(blob: cb.Blob, need: Need | None, ns: str) -> CtdFinding | None:
    d = blob.digest
    by = f"; needed by {_who(need)}" if need is not None else ""
    rec = f"{blob.record_size} bytes" if (blob.record_size or 0) >= 0 else "an undecodable size"
    if blob.state == cb.NO_RECORD:
        return None
    if blob.state == cb.MISSING:
        return CtdFinding(MISSING_BLOB, d, f"recorded in {ns} ({rec}) but its file is gone{by}")
    if blob.state == cb.BAD:
        return CtdFinding(BAD_BLOB, d, blob.why + by)
    if blob.state == cb.BAD_DIGEST:
        return CtdFinding(BAD_RECORD, d, f"blob record: {blob.why}")
    claims = need.claims if need is not None else {}
    wrong = sorted(s for s in claims if s != blob.size)
    if blob.state == cb.SIZE or (blob.state == cb.OK and wrong):
        said = "; ".join(f"{', '.join(sorted(set(claims[s]))[:3])} says {s}" for s in wrong)
        if blob.record_size != blob.size:
            said = f"the record says {rec}" + (f"; {said}" if said else "")
        how = "not hashed" if blob.state == cb.SIZE else "its content matches its digest"
        return CtdFinding(SIZE_MISMATCH, d, f"the file has {blob.size} bytes ({how}); {said}")
    if blob.state == cb.MISMATCH:
        return CtdFinding(DIGEST_MISMATCH, d, blob.why + by)
    if blob.record_size != blob.size:
        return CtdFinding(BAD_RECORD, d, f"the record says {rec}; the blob has {blob.size} "
                                         f"and matches its digest")
    return None


def _unreachable(meta: Meta, ns: Namespace, walk: Walk, reach: set[gc.Node]
                 ) -> list[CtdFinding]:
    out = []
    for digest in sorted(ns.blobs):
        if (gc.CONTENT, digest) in reach:
            continue
        need = walk.needs.get(digest)
        if need is not None:
            out.append(CtdFinding(UNPROTECTED_BLOB, digest,
                                  f"needed by {_who(need)}, but no containerd.io/gc.ref "
                                  f"label leads to it: containerd's garbage collector would "
                                  f"remove it"))
            continue
        others = sorted(n for n, s in meta.namespaces.items() if n != ns.name and digest in s.blobs)
        fate = (f"the file stays while namespace {', '.join(others)} keeps its record"
                if others else "and the file with it")
        out.append(CtdFinding(UNREFERENCED_BLOB, digest,
                              f"no image, container, lease or gc.root label reaches it: "
                              f"containerd's garbage collector removes the record, {fate}"))
    recorded = {d for s in meta.namespaces.values() for d in s.blobs}
    for digest in sorted(walk.blobs.files() - recorded):
        out.append(CtdFinding(UNREFERENCED_BLOB, digest,
                              "no namespace records this file: containerd's content garbage "
                              "collector deletes it"))
    for sn in sorted(ns.snapshots):
        for key in sorted(ns.snapshots[sn]):
            if (gc.SNAPSHOT, f"{sn}/{key}") not in reach:
                out.append(CtdFinding(UNREFERENCED_SNAPSHOT, f"{sn}/{key}",
                                      "no image, container or lease reaches it: containerd's "
                                      "garbage collector removes it"))
    return out


def _who(need: Need) -> str:
    names = sorted({w for ws in need.claims.values() for w in ws})
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _is_digest(text: str) -> bool:
    algorithm, sep, hexpart = text.partition(":")
    return bool(sep) and algorithm.isascii() and algorithm.isalnum() and hexpart.isascii() \
        and hexpart.isalnum() and (hexpart.islower() or hexpart.isdigit())


def _descriptor(value: object) -> Descriptor | None:
    if not isinstance(value, dict):
        return None
    digest, media, size = value.get("digest"), value.get("mediaType"), value.get("size")
    if not isinstance(digest, str) or not _is_digest(digest) or not isinstance(size, int) \
            or isinstance(size, bool):
        return None
    return Descriptor(digest, media if isinstance(media, str) else "", size)


__all__ = ["BAD_BLOB", "BAD_DOCUMENT", "BAD_RECORD", "BROKEN_SNAPSHOT_CHAIN", "DIGEST_MISMATCH",
           "INGEST", "KINDS", "MISSING_BLOB", "SIZE_MISMATCH", "TORN_READ", "UNPROTECTED_BLOB",
           "UNREFERENCED_BLOB", "UNREFERENCED_SNAPSHOT", "CtdFinding", "NoSuchNamespace",
           "check", "check_meta"]
