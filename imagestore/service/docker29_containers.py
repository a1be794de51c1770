"""The containers Docker 29's containerd image service counts per image: moby's container
store (daemon/container ``memoryStore.List``, newest first), each container tied to the
platform manifest it was created from (``ImageManifest`` in ``config.v2.json``; image_list.go
counts ``c.ImageManifest.Digest == target.Digest``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagestore.containerd.images import Image
from imagestore.moby.containers import containers_in
from imagestore.moby.gotime import unix_ns
from imagestore.service.docker29_model import Matcher, best_present
from imagestore.service.docker29_refs import Lookup


@dataclass(frozen=True)
class ContainerRef:
    """A container as the engine's container store holds it: ``image`` is the image ID (or
    name) it was created from, ``manifest`` the platform manifest's digest it runs
    (``ImageManifest``; found from ``image`` when not given), ``created`` RFC 3339."""

    id: str
    image: str
    manifest: str | None = None
    created: str | None = None


def docker_containers(data_root: str | os.PathLike[str]) -> list[ContainerRef]:
    """The containers of a Docker data-root (``containers/<id>/config.v2.json``, read as
    ``moby.containers`` reads them), newest first: the engine's container store, in
    containerd mode too (containerd's own container records appear only once a container
    starts)."""
    found = [ContainerRef(c.id, c.image, c.manifest, _created(c))
             for c in containers_in(Path(data_root) / "containers") or ()]
    found.sort(key=lambda ref: -(unix_ns(ref.created) or 0))
    return found


def _created(item: object) -> str | None:
    created = getattr(item, "created", None)
    if isinstance(created, str):
        return created
    for what, when in getattr(item, "times", ()) or ():  # moby.containers.Container
        if what == "created" and hasattr(when, "isoformat"):
            return str(when.isoformat().replace("+00:00", "Z"))
    return None


def container_refs(containers: Mapping[str, Any] | Iterable[Any], images: list[Image],
                   matcher: Matcher) -> dict[str, list[str]]:
    """Container IDs by the manifest digest they run, newest container first when every
    container's creation time is known (else in the order given). Takes ``ContainerRef``,
    moby's ``Container`` (an image ID) or containerd's ``ContainerRecord`` (an image name);
    without a manifest, the one the engine picks at create: the image's best present one."""
    items = list(containers.values() if isinstance(containers, Mapping) else containers)
    lookup: Lookup | None = None
    refs: list[tuple[str, str, str | None]] = []
    for item in items:
        cid, image_ref = getattr(item, "id", None), getattr(item, "image", None)
        if not isinstance(cid, str) or not isinstance(image_ref, str) or not image_ref:
            continue
        manifest = getattr(item, "manifest", None) or getattr(item, "image_manifest", None)
        if not isinstance(manifest, str):
            lookup = lookup or Lookup(images)
            try:
                image, record = lookup.resolve(image_ref)
            except (ValueError, LookupError):
                continue
            found = best_present(image, record.target, matcher)
            if found is None:
                continue
            manifest = found.digest
        refs.append((cid, manifest, _created(item)))
    if all(created for _, _, created in refs):
        refs.sort(key=lambda r: -(unix_ns(r[2]) or 0))
    out: dict[str, list[str]] = {}
    for cid, manifest, _ in refs:
        out.setdefault(manifest, []).append(cid)
    return out


__all__ = ["ContainerRef", "container_refs", "docker_containers"]
