"""``GET /images/{name}/json`` and ``GET /images/{name}/history`` of Docker Engine 29 on its
containerd image store, API 1.55: moby daemon/containerd/image_inspect.go (``ImageInspect``,
``collectRepoTagsAndDigests``, ``size``), image_history.go (``ImageHistory``,
``getParentsByBuilderLabel``), and daemon/server/router/image/image_routes.go
``getImagesByName`` at 1.55 (``Parent`` and ``DockerVersion`` only when set, no
``GraphDriver``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from imagestore.containerd import content as c
from imagestore.containerd.images import PARENT_LABEL, Image, chain_ids, is_dangling
from imagestore.containerd.meta import Descriptor, ImageRecord
from imagestore.errors import ImageStoreError
from imagestore.moby.gotime import go_time, unix_ns
from imagestore.service.docker29_containers import container_refs
from imagestore.service.docker29_list import unix
from imagestore.service.docker29_model import (
    Matcher,
    best_present,
    descriptor_json,
    encode_config,
    go_config,
    index_entries,
    platform_json,
    summarize,
    usage_of,
)
from imagestore.service.docker29_refs import (
    Lookup,
    NoSuchImage,
    familiar_name,
    is_digest,
    parse_named,
    record_tags,
    with_digest,
)

JSON = dict[str, Any]
EPOCH = "1970-01-01T00:00:00Z"  # time.Unix(0, 0): LastTagTime when no record was updated
MISSING = "<missing>"


def _host(host: c.Platform | None) -> Matcher:
    return Matcher(host if host is not None else c.host_platform())


def _record(image: Image, name: str | None) -> ImageRecord:
    """The record a lookup resolves to: ``name``'s, else the first in listing order (what
    ``resolveImage`` returns for an ID)."""
    records = sorted(image.records, key=lambda r: r.name.encode("utf-8", "surrogateescape"))
    for record in records:
        if record.name == name:
            return record
    return records[0]


def tags_and_digests(records: Iterable[ImageRecord]) -> tuple[list[str], list[str]]:
    """``collectRepoTagsAndDigests``: every name's familiar form, and ``repo@digest`` for
    each (a name that is a digest already is its own), duplicates dropped."""
    tags: list[str] = []
    digests: list[str] = []
    for record in sorted(records, key=lambda r: r.name.encode("utf-8", "surrogateescape")):
        if is_dangling(record):
            continue
        ref = parse_named(record.name)
        if ref is None:
            tags.append(record.name)
            continue
        tags.append(ref.familiar_string())
        digests.append(ref.familiar_string() if ref.digest
                       else with_digest(ref, record.target.digest))
    return list(dict.fromkeys(tags)), list(dict.fromkeys(digests))


def last_tag_time(records: Iterable[ImageRecord]) -> str:
    """The latest ``updatedat`` of the records, as Go marshals it (epoch when none)."""
    times = [r.updated for r in records if r.updated and (unix_ns(r.updated) or 0) > 0]
    return max(times, key=lambda t: unix_ns(t) or 0) if times else EPOCH


def _packed_size(image: Image, target: Descriptor, matcher: Matcher) -> int:
    """``size``: the target, then at each index only the preferred entry (platform-less
    entries last), down to config and layers; descriptors' sizes, present or not."""
    by_digest = {m.digest: m for m in image.manifests}

    def walk(media_type: str, digest: str, size: int, depth: int) -> int:
        total = size
        if media_type in c.INDEXES and depth < 8:
            entries = index_entries(image, digest)
            if not entries:
                return total
            best = entries[0]
            for entry in entries[1:]:
                if _less(matcher, entry, best):
                    best = entry
            bsize = best.get("size")
            total += walk(str(best.get("mediaType") or ""), str(best.get("digest") or ""),
                          bsize if type(bsize) is int else 0, depth + 1)
        elif media_type in c.MANIFESTS:
            m = by_digest.get(digest)
            if m is not None and m.available and m.config is not None:
                total += m.config.size + sum(layer.size for layer in m.layers)
        return total

    return walk(target.media_type, target.digest, target.size, 0)


def _less(matcher: Matcher, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``LimitManifests``' stable sort: entries without a platform go last."""
    pa, pb = a.get("platform"), b.get("platform")
    if not isinstance(pa, dict):
        return False
    if not isinstance(pb, dict):
        return True
    return matcher.less(pa, pb)


def inspect(image: Image, images: list[Image],
            containers: Mapping[str, Any] | Iterable[Any] = (), *, manifests: bool = False,
            name: str | None = None, host: c.Platform | None = None) -> JSON:
    """The body of ``GET /images/{id}/json`` at API 1.55 (``manifests=1`` adds
    ``Manifests``). ``name``: the record the request named (its target's annotations make
    ``Descriptor``); by ID the first record in listing order answers."""
    matcher = _host(host)
    record = _record(image, name)
    target = record.target
    usage = usage_of(images)
    summary = summarize(image, target, usage, container_refs(containers, images, matcher),
                        matcher)
    tags, digests = tags_and_digests(image.records)
    out: JSON = {"Id": target.digest, "RepoTags": tags, "RepoDigests": digests}
    cfg = summary.best.config if summary.best is not None else go_config(None)
    history = cfg["history"] or []
    if history and history[-1]["comment"]:
        out["Comment"] = history[-1]["comment"]
    if cfg["created"]:
        try:
            out["Created"] = go_time(cfg["created"])
        except ValueError:
            raise ImageStoreError(f"failed to read image config: parsing time "
                                  f"{cfg['created']!r}") from None
    if cfg["author"]:
        out["Author"] = cfg["author"]
    out["Config"] = encode_config(cfg["config"])
    out["Architecture"] = cfg["architecture"]
    if cfg["variant"]:
        out["Variant"] = cfg["variant"]
    out["Os"] = cfg["os"]
    if cfg["os.version"]:
        out["OsVersion"] = cfg["os.version"]
    out["Size"] = _packed_size(image, target, matcher)
    rootfs: JSON = {}
    if cfg["rootfs"]["type"]:
        rootfs["Type"] = cfg["rootfs"]["type"]
    if cfg["rootfs"]["diff_ids"]:
        rootfs["Layers"] = list(cfg["rootfs"]["diff_ids"])
    out["RootFS"] = rootfs
    out["Metadata"] = {"LastTagTime": last_tag_time(image.records)}
    out["Descriptor"] = descriptor_json(target)
    if manifests and summary.views:
        out["Manifests"] = [v.summary() for v in summary.views]
    parent = _parent(image.records)
    if parent:
        out["Parent"] = parent
    return out


def _parent(records: Iterable[ImageRecord]) -> str:
    """``getImageLabelByDigest``: the parent label of the target's records (the first one
    found when they disagree)."""
    for record in sorted(records, key=lambda r: r.name.encode("utf-8", "surrogateescape")):
        if record.labels.get(PARENT_LABEL):
            return record.labels[PARENT_LABEL]
    return ""


def history(image: Image, images: list[Image], *, name: str | None = None,
            host: c.Platform | None = None) -> list[JSON]:
    """The body of ``GET /images/{id}/history``: the best present manifest's config history,
    newest first, each layer step with its snapshot's own usage; entries walk the classic
    builder's parent labels for their ``Id`` and ``Tags`` (``<missing>`` past them)."""
    matcher = _host(host)
    record = _record(image, name)
    best = best_present(image, record.target, matcher)
    if best is None:
        raise NoSuchImage(f"image with reference {familiar_name(record)} was found but does "
                          f"not provide any platform")
    if best.config_raw is None:
        what = best.config.digest if best.config is not None else best.digest
        raise ImageStoreError(f"failed to read config content: {what}: not found")
    cfg = go_config(best.config_raw)
    usage = usage_of(images)
    sizes = [usage.get(chain, 0) for chain in chain_ids(cfg["rootfs"]["diff_ids"] or [])]
    out: list[JSON] = []
    for h in cfg["history"] or []:
        size = 0
        if not h["empty_layer"]:
            if not sizes:
                raise ImageStoreError("unable to find the size of the layer")
            size = sizes.pop(0)
        out.insert(0, {"Comment": h["comment"], "Created": unix(h["created"]),
                       "CreatedBy": h["created_by"], "Id": MISSING, "Size": size,
                       "Tags": None})
    lookup = Lookup(images)
    current = record
    for entry in out:
        entry["Id"] = current.target.digest
        tags = record_tags(r for r, _ in lookup.with_target(current.target.digest))
        entry["Tags"] = tags or None
        parent = current.labels.get(PARENT_LABEL, "")
        parents = [r for r, _ in lookup.with_target(parent)] if is_digest(parent) else []
        found = False
        for candidate in parents:
            if not found or PARENT_LABEL in candidate.labels:
                current, found = candidate, True
        if not found:
            break
    return out


__all__ = ["history", "inspect", "last_tag_time", "platform_json", "tags_and_digests"]
