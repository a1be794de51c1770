"""``GET /images/json`` of Docker Engine 29 on its containerd image store, API 1.55: moby
daemon/containerd/image_list.go (``Images``, ``imageSummary``, ``singlePlatformImage``,
``computeSharedSize``) and daemon/server/router/image/image_routes.go ``getImagesJSON``
(empty lists for no tags, ``Manifests`` only when asked)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.images import PARENT_LABEL, Image, is_dangling
from imagestore.containerd.meta import ImageRecord
from imagestore.moby.gotime import parse_time, unix_seconds
from imagestore.service.docker29_containers import container_refs
from imagestore.service.docker29_filters import normalize, setup
from imagestore.service.docker29_model import (
    Matcher,
    Summary,
    descriptor_json,
    summarize,
    usage_of,
)
from imagestore.service.docker29_refs import (
    is_digest,
    parse_named,
    parse_normalized,
    with_digest,
)

JSON = dict[str, Any]


def unix(created: str) -> int:
    """``Time.Unix()`` of a config's ``created`` ("" for none: 0, moby's unset field)."""
    if not created:
        return 0
    try:
        return unix_seconds(parse_time(created))
    except ValueError:
        return 0


def _parents(records: Iterable[ImageRecord]) -> set[str]:
    """Targets named by some record's parent label: intermediate images of the classic
    builder, hidden (when dangling) unless ``all``."""
    return {r.labels[PARENT_LABEL] for r in records
            if r.labels.get(PARENT_LABEL) and is_digest(r.labels[PARENT_LABEL])}


def _row(image: Image, record: ImageRecord, tags: list[str], summary: Summary) -> JSON:
    """``imageSummary``: from the best manifest (``singlePlatformImage``), or a bare row when
    the image has no image manifest at all; keys in ``image.Summary``'s order."""
    target = record.target
    best = summary.best
    if best is None:
        return {"Containers": -1, "Created": 0, "Id": target.digest, "Labels": None,
                "ParentId": "", "Descriptor": descriptor_json(target),
                "Manifests": [v.summary() for v in summary.views],
                "RepoDigests": [target.digest], "RepoTags": tags, "SharedSize": -1,
                "Size": summary.total}
    digests: list[str] = []
    ref = parse_named(record.name)
    if ref is not None:
        digests.append(with_digest(ref, target.digest))
    elif not is_dangling(record):
        tags = [*tags, record.name]  # a name containerd took but that does not parse
    labels = best.config["config"]["Labels"]
    return {"Containers": summary.containers, "Created": unix(best.config["created"]),
            "Id": target.digest, "Labels": dict(labels) if labels is not None else {},
            "ParentId": record.labels.get(PARENT_LABEL, ""),
            "Descriptor": descriptor_json(target),
            "Manifests": [v.summary() for v in summary.views], "RepoDigests": digests,
            "RepoTags": tags, "SharedSize": -1, "Size": summary.total}


def _shared_sizes(summaries: list[Summary], usage: Mapping[str, int]) -> list[int]:
    """``computeSharedSize``: per image, the snapshots (by chain ID) and blobs that other
    listed images also use."""
    layers: dict[str, int] = {}
    blobs: dict[str, int] = {}
    for s in summaries:
        for chain in s.chains:
            layers[chain] = layers.get(chain, 0) + 1
        for digest in {d for d, _ in s.blobs}:
            blobs[digest] = blobs.get(digest, 0) + 1
    out = []
    for s in summaries:
        shared = sum(usage.get(chain, 0) for chain in s.chains if layers[chain] != 1)
        seen: set[str] = set()
        for digest, size in s.blobs:
            if blobs[digest] != 1 and digest not in seen:
                seen.add(digest)
                shared += size
        out.append(shared)
    return out


def list_rows(images: list[Image], containers: Mapping[str, Any] | Iterable[Any] = (), *,
              all: bool = False,  # the API's name for it
              filters: Mapping[str, Any] | str | None = None, digests: bool = True,
              manifests: bool = False, shared_size: bool = False,
              host: c.Platform | None = None, now: datetime | None = None) -> list[JSON]:
    """The body of ``GET /images/json`` at API 1.55, newest ``Created`` first (within one
    second the engine's order is a map's; here by ID). ``filters``: the query's JSON text
    or its mapping (docker-py's form too); an invalid one raises an ``ImageStoreError``
    worded as the engine's. ``digests`` is accepted and ignored, as the engine ignores it
    (``RepoDigests`` is always there). ``host`` is the engine's platform (this machine's
    by default), ``now`` the moment ``until`` counts back from."""
    del digests
    matcher = Matcher(host if host is not None else c.host_platform())
    accept = setup(normalize(filters), images, matcher, now)
    records = sorted(((r, image) for image in images for r in image.records),
                     key=lambda p: p[0].name.encode("utf-8", "surrogateescape"))
    hidden = set() if all else _parents(r for r, _ in records)
    chosen: dict[str, tuple[ImageRecord, Image]] = {}
    tags: dict[str, list[str]] = {}
    for record, image in records:
        digest = record.target.digest
        dangling = is_dangling(record)
        if (dangling and digest in hidden) or not accept(record, image):
            continue
        if dangling:
            chosen.setdefault(digest, (record, image))
            continue
        chosen[digest] = (record, image)  # the last named record in listing order wins
        ref = parse_normalized(record.name)
        if ref is not None:
            tags.setdefault(digest, []).append(ref.familiar_string())
    usage = usage_of(images)
    refs = container_refs(containers, images, matcher)
    rows: list[JSON] = []
    summaries: list[Summary] = []
    for digest, (record, image) in chosen.items():
        summary = summarize(image, record.target, usage, refs, matcher)
        row = _row(image, record, list(tags.get(digest, [])), summary)
        if not manifests:
            del row["Manifests"]
        elif not row["Manifests"]:
            del row["Manifests"]  # omitempty
        rows.append(row)
        summaries.append(summary)
    if shared_size:
        for row, shared in zip(rows, _shared_sizes(summaries, usage), strict=True):
            row["SharedSize"] = shared
    rows.sort(key=lambda r: (-r["Created"], r["Id"]))
    return rows


__all__ = ["list_rows", "unix"]
