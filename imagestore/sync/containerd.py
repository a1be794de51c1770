"""The sync of a containerd store: one namespace of a containerd root read into the index.

When the disk's signature (``ctdfresh``) moved, the namespace is read again whole and its
rows replaced in one transaction: containerd's own records are few beside their blobs, and a
manifest or config shared by many images is parsed once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable

from imagestore.containerd import images as ci
from imagestore.containerd import meta as cm
from imagestore.containerd import snapshotter
from imagestore.containerd.content import INDEXES, Platform
from imagestore.containerd.layout import Layout
from imagestore.errors import NoSuchNamespace
from imagestore.index import ctd
from imagestore.index.rows import image_row
from imagestore.index.writes import Writer
from imagestore.moby import bbolt
from imagestore.moby.containers import Container, containers_in
from imagestore.moby.problems import ProblemKind
from imagestore.moby.references import InvalidReference, parse_normalized_named
from imagestore.sync.ctdfresh import signature
from imagestore.sync.problems import Problem, now_text, recorded
from imagestore.sync.report import Progress, SyncReport


def read_namespace(layout: Layout, namespace: str) -> cm.Namespace:
    """The namespace's records; ``NoSuchNamespace`` lists the namespaces there are."""
    meta = cm.read(layout.meta, {namespace}, brief=True)
    if namespace not in meta.namespaces:
        raise NoSuchNamespace(namespace, meta.names())
    return meta.namespaces[namespace]


def snapshots(layout: Layout) -> dict[str, dict[str, snapshotter.Snapshot]]:
    out = {}
    for name in layout.snapshotters():
        try:
            out[name] = snapshotter.read(layout.snapshotter_db(name))[0]
        except bbolt.BoltError:
            out[name] = {}
    return out


def run(tx: Writer, layout: Layout, namespace: str, *, platform: Platform | None = None,
        progress: Progress | None = None) -> SyncReport:
    """Read the namespace and replace the store's rows with it (inside ``tx``)."""
    # A node's records are a few million small objects, none in a cycle: the cyclic
    # collector would walk them all again and again while they are read.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run(tx, layout, namespace, platform=platform, progress=progress)
    finally:
        if paused:
            gc.enable()


def _run(tx: Writer, layout: Layout, namespace: str, *, platform: Platform | None,
         progress: Progress | None) -> SyncReport:
    before = set(tx.image_ids())
    sig = signature(layout, namespace, platform)
    ns = read_namespace(layout, namespace)
    snaps = snapshots(layout)
    if progress:
        progress("images", 0, len(ns.images))
    found = ci.resolve(layout, ns, snaps, platform)
    if progress:
        progress("images", len(ns.images), len(ns.images))
    docker = containers_in(layout.docker_root / "containers") if layout.docker_root else None
    rows, problems = build(ns, found, snaps, docker)
    ctd.mark_kind(tx, namespace)
    ctd.replace(tx, rows, sig)
    now = {i.id for i in found}
    report = SyncReport(added=len(now - before), removed=len(before - now),
                        unchanged=len(now & before))
    report.read["meta.db"] = 1
    report.problems = recorded(tx)
    report.skipped = len(problems)
    tx.synced(True)
    return report


def build(ns: cm.Namespace, found: list[ci.Image],
          snaps: dict[str, dict[str, snapshotter.Snapshot]],
          docker_containers: list[Container] | None = None) -> tuple[ctd.Rows, list[Problem]]:
    """Every row of the store, from the namespace and its resolved images."""
    rows = ctd.Rows()
    problems = [Problem(f"meta.db/{what}", ProblemKind.BAD_METADATA, why)
                for what, why in ns.problems]
    for record in ns.images.values():
        rows.add("ctd_images", record.name, record.target.digest, record.target.media_type,
                 record.target.size, record.created, record.updated, ctd.dumps(record.labels),
                 ctd.dumps(record.target.annotations))
    configs: dict[str, tuple[bool, bytes | None]] = {}
    manifests_done: set[str] = set()
    layers: dict[str, tuple[str, str | None, int, int, int, str]] = {}
    for image in found:
        _image_rows(rows, image, configs, manifests_done, layers, problems)
    for digest, (present, raw) in sorted(configs.items()):
        rows.add("ctd_configs", digest, present, raw)
    folders = _snapshot_folders(ns, snaps)
    for chain, (diff, parent, own, total, depth, _) in sorted(layers.items()):
        rows.add("layers", chain, diff, parent, own, total, folders.get(chain, ""), depth)
    _snapshot_rows(rows, ns, snaps, layers, docker_containers)
    unique = {row[0]: row for row in rows.tables["tags"]}  # "app:1" and its full name
    rows.tables["tags"] = [unique[ref] for ref in sorted(unique)]
    stamp = now_text()
    for p in problems:
        rows.add("problems", p.path, p.kind.value, p.reason, stamp)
    return rows, problems


def _image_rows(rows: ctd.Rows, image: ci.Image, configs: dict[str, tuple[bool, bytes | None]],
                manifests_done: set[str],
                layers: dict[str, tuple[str, str | None, int, int, int, str]],
                problems: list[Problem]) -> None:
    t = image.target
    listed = image.index_entries
    rows.add("ctd_targets", image.id, t.digest, t.media_type, t.size,
             t.media_type in INDEXES, _present(image, t.digest),
             "; ".join(image.problems) or None,
             ctd.dumps(listed[t.digest]) if t.digest in listed else None)
    for index in image.indexes:
        if index.digest != t.digest:
            rows.add("ctd_targets", image.id, index.digest, index.media_type, index.size, True,
                     True, None,
                     ctd.dumps(listed[index.digest]) if index.digest in listed else None)
    for pos, m in enumerate(image.manifests):
        cfg = m.config
        rows.add("ctd_manifests", image.id, pos, m.digest, m.media_type, m.size,
                 str(m.platform) if m.platform else None, ctd.dumps(m.annotations), m.kind,
                 m.available, cfg.digest if cfg else None, cfg.media_type if cfg else None,
                 cfg.size if cfg else None, m is image.best, m.problem)
        if cfg is not None and cfg.digest not in configs:
            configs[cfg.digest] = (m.config_present, m.config_raw)
        if m.digest not in manifests_done:
            manifests_done.add(m.digest)
            for i, layer in enumerate(m.layers):
                rows.add("ctd_layers", m.digest, i, layer.digest, layer.media_type, layer.size,
                         layer.present, layer.diff_id, layer.chain_id, layer.unpacked)
            _chain_rows(m, layers)
        if m.problem and (m.available or m is image.best):
            problems.append(Problem(f"{image.id}/{m.digest}", ProblemKind.UNREADABLE,
                                    m.problem))
    for why in image.problems:
        problems.append(Problem(image.id, ProblemKind.BAD_METADATA, why))
    best = image.best
    cfg_json = best.config_json() if best else {}
    top = best.top_chain if best and best.layers and all(x.chain_id for x in best.layers) \
        else None
    rows.add("images", *image_row(
        image.id, created=_text(cfg_json.get("created")), os=_text(cfg_json.get("os")) or "",
        architecture=_text(cfg_json.get("architecture")) or "",
        variant=_text(cfg_json.get("variant")) or "", author=_text(cfg_json.get("author")) or "",
        comment=_text(cfg_json.get("comment")) or "",
        docker_version=_text(cfg_json.get("docker_version")) or "", chain_id=top,
        layer_count=len(best.layers) if best else 0,
        raw=(best.config_raw or b"") if best else b"", last_updated=image.last_tag_time,
        built_locally=image.parent is not None))
    if image.parent:
        rows.add("image_parents", image.id, image.parent)
    for entry in _tags(image):
        rows.add("tags", *entry)


def _present(image: ci.Image, digest: str) -> bool:
    return any(m.digest == digest and m.available for m in image.manifests) or \
        any(i.digest == digest for i in image.indexes)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _chain_rows(m: ci.Manifest, layers: dict[str, tuple[str, str | None, int, int, int, str]]
                ) -> None:
    total, parent = 0, None
    for depth, layer in enumerate(m.layers):
        if layer.chain_id is None or layer.diff_id is None:
            return
        own = layer.unpacked or 0
        total += own
        layers.setdefault(layer.chain_id, (layer.diff_id, parent, own, total, depth, ""))
        parent = layer.chain_id


def _snapshot_folders(ns: cm.Namespace, snaps: dict[str, dict[str, snapshotter.Snapshot]]
                      ) -> dict[str, str]:
    """Each committed snapshot key's folder under its snapshotter (``overlayfs/12``): where
    the layer's files are, as a classic layer's ``cache-id`` names its driver folder."""
    out: dict[str, str] = {}
    for name in sorted(ns.snapshots, key=lambda n: (n != "overlayfs", n)):
        own = snaps.get(name, {})
        for key, rec in ns.snapshots[name].items():
            s = own.get(rec.backend)
            if s is not None and s.kind == "committed":
                out.setdefault(key, f"{name}/{s.id}")
    return out


def _snapshot_rows(rows: ctd.Rows, ns: cm.Namespace,
                   snaps: dict[str, dict[str, snapshotter.Snapshot]],
                   layers: dict[str, tuple[str, str | None, int, int, int, str]],
                   docker_containers: list[Container] | None) -> None:
    for name, records in sorted(ns.snapshots.items()):
        own = snaps.get(name, {})
        for key, rec in sorted(records.items()):
            s = own.get(rec.backend)
            rows.add("ctd_snapshots", name, key, rec.parent, rec.backend,
                     s.id if s else None, s.kind if s else None, s.size if s else None,
                     s.inodes if s else None)
    every = dict(ns.containers)
    for docker in docker_containers or ():
        # Docker 29 makes containerd's container record only while one runs; its own
        # config names the image by ID (a target digest), its rootfs snapshot by its ID.
        every.setdefault(docker.id, cm.ContainerRecord(docker.id, docker.image, "", docker.id,
                                                       manifest=docker.manifest))
    for cid, container in sorted(every.items()):
        rows.add("ctd_containers", cid, container.image, container.snapshotter,
                 container.snapshot_key, container.manifest)
        rows.add("mounts", cid, container.snapshot_key, "",
                 _image_layer(ns, container, layers))


def _image_layer(ns: cm.Namespace, container: cm.ContainerRecord,
                 layers: dict[str, tuple[str, str | None, int, int, int, str]]) -> str | None:
    """The image layer under a container's snapshot (past Docker's ``-init`` layer)."""
    records = ns.snapshots.get(container.snapshotter) or next(
        (r for r in ns.snapshots.values() if container.snapshot_key in r), {})
    key: str | None = container.snapshot_key
    seen: set[str] = set()
    while key is not None and key not in seen:
        if key in layers:
            return key
        seen.add(key)
        rec = records.get(key)
        key = rec.parent if rec else None
    return None


def _tags(image: ci.Image) -> Iterable[tuple[str, str, str | None, str | None, str, bool]]:
    """The image's names as ``tags`` rows, in docker's familiar form (a CRI
    ``sha256:<config>`` record is an ID, not a name)."""
    for name in image.names:
        if ci.is_config_id(name):
            continue
        try:
            ref = parse_normalized_named(name)
        except InvalidReference:
            continue
        if ref.digest and ref.tag:
            ref = type(ref)(ref.domain, ref.path, None, ref.digest)
        if not ref.tag and not ref.digest:
            continue
        yield (ref.familiar_string(), ref.familiar_name(), ref.tag, ref.digest, image.id,
               False)
        if image.id.startswith("sha256:"):  # Docker 29's RepoDigests: each repo @ the target
            yield (f"{ref.familiar_name()}@{image.id}", ref.familiar_name(), None, image.id,
                   image.id, False)


__all__ = ["build", "read_namespace", "run", "snapshots"]

