"""A containerd store's rows read back as the reader's own objects
(``imagestore.containerd``), so Docker 29's answers are computed the same way from the disk
and from the index; through any ``Reader``, a bare ``sqlite3`` one included (a warm command
line imports no SQLAlchemy)."""

from __future__ import annotations

import json
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.images import DANGLING_PREFIX, Image, Layer, Manifest
from imagestore.containerd.meta import ContainerRecord, Descriptor, ImageRecord
from imagestore.index.queries import Reader

KIND = "containerd"
SIGNATURE = "ctd.signature"  # the settings key of what the last sync saw on disk


TABLES = ("ctd_images", "ctd_targets", "ctd_manifests", "ctd_configs", "ctd_layers",
          "ctd_containers")


def load(q: Reader) -> tuple[list[Image], dict[str, ContainerRecord]]:
    """The store's images and containers as the reader made them (``q``: one snapshot)."""
    images_, targets, manifests, configs, layers, containers = (q.ctd_rows(t) for t in TABLES)
    records: dict[str, list[ImageRecord]] = {}
    for name, target, media, size, created, updated, labels, notes in images_:
        records.setdefault(target, []).append(ImageRecord(
            name, Descriptor(target, media, size, _obj(notes)), created, updated,
            _obj(labels)))
    raw = {digest: (bool(present), data) for digest, present, data in configs}
    by_manifest: dict[str, list[Layer]] = {}
    for manifest, _pos, digest, media, size, present, diff, chain, unpacked in layers:
        by_manifest.setdefault(manifest, []).append(
            Layer(digest, media, size, bool(present), diff, chain, unpacked))
    walked: dict[str, list[Descriptor]] = {}
    problems: dict[str, list[str]] = {}
    entries: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for image_id, digest, media, size, is_index, _present, problem, listed in targets:
        if is_index:
            walked.setdefault(image_id, []).append(Descriptor(digest, media, size))
        if problem:
            problems.setdefault(image_id, []).append(problem)
        if listed is not None:
            entries.setdefault(image_id, {})[digest] = json.loads(listed)
    plats: dict[str, list[tuple[Manifest, bool]]] = {}
    for (image_id, _pos, digest, media, size, platform, notes, kind, available, cdigest,
         cmedia, csize, best, problem) in manifests:
        present, data = raw.get(cdigest, (False, None)) if cdigest else (False, None)
        m = Manifest(digest, media, size, _platform(platform), _obj(notes), kind,
                     bool(available),
                     Descriptor(cdigest, cmedia or "", csize or 0) if cdigest else None,
                     bytes(data) if data is not None else None, present,
                     list(by_manifest.get(digest, [])), problem)
        plats.setdefault(image_id, []).append((m, bool(best)))
    out = []
    for target in sorted(records):
        recs = sorted(records[target], key=lambda r: r.name)
        mine = plats.get(target, [])
        best = next((m for m, is_best in mine if is_best), None)
        named = [r for r in recs if r.name != DANGLING_PREFIX + target]
        out.append(Image(target, (named or recs)[0].target, recs, [m for m, _ in mine],
                         walked.get(target, []), best, problems.get(target, []),
                         entries.get(target, {})))
    return out, {cid: ContainerRecord(cid, image, snapshotter, key, manifest=manifest)
                 for cid, image, snapshotter, key, manifest in containers}


def _obj(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _platform(text: str | None) -> c.Platform | None:
    if not text:
        return None
    parts = text.split("/")
    return c.Platform(parts[0], parts[1] if len(parts) > 1 else "",
                      parts[2] if len(parts) > 2 else "")


__all__ = ["KIND", "SIGNATURE", "TABLES", "load"]
