"""A namespace's images as Docker 29's image service sees them (moby daemon/containerd:
image_list.go, image_manifest.go, image_snapshot.go): records grouped by target digest,
each target walked down to its platform manifests, configs, layers and unpacked snapshots.

An image here is a target digest (moby's ``RealTarget``): the ID Docker 29 shows. Its names
are its records' names; a ``moby-dangling@<digest>`` record names no one. Nothing is read
twice: a manifest or config shared by many images is parsed once per build.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.layout import Layout
from imagestore.containerd.meta import Descriptor, ImageRecord, Namespace
from imagestore.containerd.snapshotter import Snapshot

_CONFIG_ID = re.compile(r"sha256:[0-9a-f]{64}")
DANGLING_PREFIX = "moby-dangling@"  # moby daemon/containerd/soft_delete.go
PARENT_LABEL = "org.mobyproject.image.parent"
MAX_DEPTH = 8  # nested indexes deeper than this are not followed


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """moby's layer.CreateChainID for every prefix of ``diff_ids``."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else
                   "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def is_config_id(name: str) -> bool:
    """A CRI record named by its config digest (``sha256:<hex>``): an ID, not a name."""
    return _CONFIG_ID.fullmatch(name) is not None


def is_dangling(record: ImageRecord) -> bool:
    return record.name == DANGLING_PREFIX + record.target.digest


@dataclass
class Layer:
    digest: str
    media_type: str
    size: int
    present: bool
    diff_id: str | None
    chain_id: str | None
    unpacked: int | None  # the committed snapshot's own usage, None when not unpacked


@dataclass
class Manifest:
    digest: str
    media_type: str
    size: int
    platform: c.Platform | None
    annotations: dict[str, str]
    kind: str  # "image", "attestation", "unknown" (moby's ImageManifestKind)
    available: bool
    config: Descriptor | None = None
    config_raw: bytes | None = None
    config_present: bool = False
    layers: list[Layer] = field(default_factory=list)
    problem: str | None = None
    _config_doc: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def content_size(self) -> int:
        """Bytes of this manifest's blobs that are present (moby's Content size)."""
        if not self.available:
            return 0
        total = self.size
        if self.config is not None and self.config_present:
            total += self.config.size
        return total + sum(layer.size for layer in self.layers if layer.present)

    @property
    def unpacked(self) -> bool:
        return bool(self.layers) and all(layer.unpacked is not None for layer in self.layers)

    @property
    def unpacked_size(self) -> int:
        """The snapshots' usage along the chain (moby calculateSnapshotTotalUsage)."""
        return sum(layer.unpacked or 0 for layer in self.layers) if self.unpacked else 0

    @property
    def top_chain(self) -> str | None:
        return self.layers[-1].chain_id if self.layers else None

    def config_json(self) -> dict[str, Any]:
        """The config, parsed (once: a listing asks for it again and again)."""
        if self._config_doc is None:
            doc: dict[str, Any] = {}
            if self.config_raw is not None:
                try:
                    doc = c.document(self.config_raw)
                except ValueError:
                    doc = {}
            self._config_doc = doc
        return self._config_doc


@dataclass
class Image:
    """One target digest of the namespace and everything reached from it."""

    id: str
    target: Descriptor
    records: list[ImageRecord]
    manifests: list[Manifest]
    indexes: list[Descriptor]  # the index blobs walked (the target first when it is one)
    best: Manifest | None
    problems: list[str] = field(default_factory=list)
    # each index read, by digest: its ``manifests`` entries as written (platform,
    # annotations, urls…), in order; how Docker 29 walks and sizes a multi-platform image
    index_entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(r.name for r in self.records if not is_dangling(r))

    @property
    def dangling(self) -> bool:
        return not self.names

    @property
    def parent(self) -> str | None:
        for r in sorted(self.records, key=lambda r: r.name):
            if r.labels.get(PARENT_LABEL):
                return r.labels[PARENT_LABEL]
        return None

    @property
    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in self.records:
            out.update(r.labels)
        return out

    @property
    def last_tag_time(self) -> str | None:
        times = [r.updated for r in self.records if r.updated]
        return max(times) if times else None


class Resolver:
    """Walks targets of one namespace; manifests and configs are read once each."""

    def __init__(self, layout: Layout, ns: Namespace, snapshots: dict[str, dict[str, Snapshot]],
                 wanted: c.Platform | None = None) -> None:
        self.layout, self.ns = layout, ns
        self.snapshots = snapshots  # snapshotter -> backend name -> snapshot
        self.wanted = wanted or c.host_platform()
        self._docs: dict[str, dict[str, Any] | str] = {}
        self._raw: dict[str, bytes | None] = {}
        self._present: dict[str, bool] = {}
        self._files = layout.regular_blobs()  # one listing, not a stat per blob
        # Docker's own snapshotter first, where a chain is unpacked in several
        self._order = sorted(ns.snapshots, key=lambda n: (n != "overlayfs", n))
        self._chains: dict[tuple[str, str], str] = {}

    def present(self, digest: str) -> bool:
        """The namespace records the blob and its file is a regular file."""
        known = self._present.get(digest)
        if known is None:
            if digest not in self.ns.blobs:
                known = False
            elif digest.startswith("sha256:"):
                known = digest[7:] in self._files
            else:
                known = c.blob_size(self.layout, digest) is not None
            self._present[digest] = known
        return known

    def raw(self, digest: str) -> bytes | None:
        if digest not in self._raw:
            try:
                self._raw[digest] = c.read_blob(self.layout, digest) \
                    if digest in self.ns.blobs else None
            except c.BlobError:
                self._raw[digest] = None
        return self._raw[digest]

    def doc(self, digest: str) -> dict[str, Any] | str:
        """The parsed document, or why it cannot be had."""
        if digest not in self._docs:
            data = self.raw(digest)
            if data is None:
                self._docs[digest] = "missing" if not self.present(digest) else "unreadable"
            else:
                try:
                    self._docs[digest] = c.document(data)
                except ValueError:
                    self._docs[digest] = "not a JSON document"
        return self._docs[digest]

    def image(self, target: Descriptor, records: list[ImageRecord]) -> Image:
        image = Image(target.digest, target, records, [], [], None)
        self._walk(image, target, None, {}, 0)
        candidates = [m for m in image.manifests if m.kind == "image"]
        if target.media_type in c.MANIFESTS or (len(candidates) == 1 and \
                target.media_type not in c.INDEXES):
            image.best = candidates[0] if candidates else None
        else:
            fits = [m for m in candidates if m.platform is not None
                    and c.matches(self.wanted, m.platform)]
            fits.sort(key=lambda m: (not m.available, c.rank(self.wanted, m.platform)
                                     if m.platform else 9))
            image.best = fits[0] if fits else None
        return image

    def _walk(self, image: Image, desc: Descriptor, platform: c.Platform | None,
              annotations: dict[str, str], depth: int) -> None:
        if desc.media_type in c.INDEXES:
            image.indexes.append(desc)
            doc = self.doc(desc.digest)
            if isinstance(doc, str):
                if desc is image.target:
                    image.problems.append(f"index {desc.digest}: {doc}")
                return
            if depth >= MAX_DEPTH:
                image.problems.append(f"index {desc.digest}: nested too deep")
                return
            entries = doc.get("manifests")
            image.index_entries[desc.digest] = [e for e in entries if isinstance(e, dict)] \
                if isinstance(entries, list) else []
            for entry in doc.get("manifests") or []:
                child = _descriptor(entry)
                if child is None:
                    image.problems.append(f"index {desc.digest}: bad manifest entry")
                    continue
                plat = _platform(entry.get("platform"))
                notes = entry.get("annotations") if isinstance(entry.get("annotations"),
                                                               dict) else {}
                self._walk(image, child, plat, {str(k): str(v) for k, v in notes.items()},
                           depth + 1)
            return
        if desc.media_type in c.MANIFESTS or desc is image.target:
            image.manifests.append(self._manifest(desc, platform, annotations))

    def _manifest(self, desc: Descriptor, platform: c.Platform | None,
                  annotations: dict[str, str]) -> Manifest:
        kind = "attestation" if annotations.get("vnd.docker.reference.type") == c.ATTESTATION \
            else "unknown" if platform is not None and platform.os == "unknown" else "image"
        m = Manifest(desc.digest, desc.media_type, desc.size, platform, annotations, kind,
                     self.present(desc.digest))
        if desc.media_type not in c.MANIFESTS:
            m.kind, m.problem = "unknown", f"unsupported media type {desc.media_type}"
            return m
        doc = self.doc(desc.digest)
        if isinstance(doc, str):
            m.problem = f"manifest {desc.digest}: {doc}" if m.available or doc != "missing" \
                else None
            return m
        m.config = _descriptor(doc.get("config"))
        raw_layers = [d for d in (_descriptor(x) for x in doc.get("layers") or []) if d]
        if m.config is None or m.config.media_type not in c.CONFIGS:
            # an artifact: its blobs still count (content size, moby's IsPseudoImage)
            m.kind = "unknown" if m.kind == "image" else m.kind
            if m.config is not None:
                m.config_present = self.present(m.config.digest)
            m.layers = [Layer(d.digest, d.media_type, d.size, self.present(d.digest),
                              None, None, None) for d in raw_layers]
            return m
        if m.kind == "image" and raw_layers and not any(c.is_layer(d.media_type)
                                                        for d in raw_layers):
            m.kind = "unknown"  # moby IsPseudoImage
        m.config_present = self.present(m.config.digest)
        m.config_raw = self.raw(m.config.digest)
        cfg = m.config_json()
        found = cfg.get("rootfs")
        rootfs: dict[str, Any] = found if isinstance(found, dict) else {}
        diff_ids = [str(d) for d in (rootfs.get("diff_ids") or []) if isinstance(d, str)]
        chains = self._chain_ids(diff_ids)
        if m.platform is None and cfg:
            m.platform = c.Platform(str(cfg.get("os") or ""), str(cfg.get("architecture") or ""),
                                    str(cfg.get("variant") or ""))
        for i, layer in enumerate(raw_layers):
            blob = self.ns.blobs.get(layer.digest)
            diff = diff_ids[i] if i < len(diff_ids) else \
                (blob.labels.get("containerd.io/uncompressed") if blob else None)
            chain = chains[i] if i < len(chains) else None
            m.layers.append(Layer(layer.digest, layer.media_type, layer.size,
                                  self.present(layer.digest), diff, chain,
                                  self._usage(chain)))
        if m.config_raw is None:
            m.problem = f"config {m.config.digest}: " + \
                ("missing" if not m.config_present else "unreadable or changed")
        return m

    def _chain_ids(self, diff_ids: list[str]) -> list[str]:
        """``chain_ids``, each step computed once however many images share it."""
        out: list[str] = []
        for d in diff_ids:
            if not out:
                out.append(d)
                continue
            key = (out[-1], d)
            found = self._chains.get(key)
            if found is None:
                found = self._chains[key] = chain_ids([out[-1], d])[1]
            out.append(found)
        return out

    def _usage(self, chain: str | None) -> int | None:
        if chain is None:
            return None
        for name in self._order:
            record = self.ns.snapshots[name].get(chain)
            if record is None:
                continue
            snap = self.snapshots.get(name, {}).get(record.backend)
            if snap is not None and snap.kind == "committed":
                return snap.size
        return None


def _descriptor(value: object) -> Descriptor | None:
    if not isinstance(value, dict):
        return None
    digest, media, size = value.get("digest"), value.get("mediaType"), value.get("size")
    if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    notes = value.get("annotations")
    return Descriptor(digest, media if isinstance(media, str) else "", size,
                      {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict)
                      else {})


def _platform(value: object) -> c.Platform | None:
    if not isinstance(value, dict):
        return None
    return c.Platform(str(value.get("os") or ""), str(value.get("architecture") or ""),
                      str(value.get("variant") or ""))


def resolve(layout: Layout, ns: Namespace, snapshots: dict[str, dict[str, Snapshot]],
            wanted: c.Platform | None = None) -> list[Image]:
    """Every image of the namespace, one per target digest, in digest order."""
    by_target: dict[str, list[ImageRecord]] = {}
    for record in ns.images.values():
        by_target.setdefault(record.target.digest, []).append(record)
    resolver = Resolver(layout, ns, snapshots, wanted)
    out = []
    for digest in sorted(by_target):
        records = sorted(by_target[digest], key=lambda r: r.name)
        named = [r for r in records if not is_dangling(r)]
        out.append(resolver.image((named or records)[0].target, records))
    return out


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


__all__ = [
    "DANGLING_PREFIX",
    "PARENT_LABEL",
    "Image",
    "Layer",
    "Manifest",
    "Resolver",
    "chain_ids",
    "is_config_id",
    "is_dangling",
    "resolve",
]
