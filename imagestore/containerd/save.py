"""containerd's images as a ``docker save`` archive, written from the content store's blobs
without a daemon.

The archive is what Docker 25+ on containerd writes (moby daemon/containerd/image_exporter.go
``ExportImage`` calling containerd core/images/archive/exporter.go ``Export`` with
``WithPlatform``, ``WithSkipMissing`` and ``WithManifest(target, name)``): an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``) plus Docker's ``manifest.json``, whose
``Config`` and ``Layers`` are paths into ``blobs/``. Blobs go in as they are stored, so
compressed layers stay compressed: ``docker load`` decompresses them (Docker 20.10's tarexport
``loadLayer`` and Docker 25+'s alike) and checks them against the config's diff IDs.

What is written for an image, by its target:

* a manifest: that manifest, its config and its layers, all of which must be present;
* an index (a multi-platform image), with ``platform=None`` (``docker save`` with no
  ``--platform``): the index blob itself, unchanged (a containerd-backed Docker keeps the
  index digest as the image ID), every index nested in it and every platform manifest that is
  present (attestations included); a manifest's config and layers only when all of them are
  present, as ``WithSkipMissing`` does. ``index.json`` names the index. ``manifest.json``,
  which is all Docker 20.10 and a graph-driver Docker read, names one manifest: the image's
  ``best`` (the host platform's, ``images.Resolver``), whose config and layers must be present;
* an index with ``platform`` given (``docker save --platform``, moby ``getPushDescriptor``):
  only the manifest that platform picks, with its config and layers; ``index.json`` names
  that manifest, with the platform from the index.

Archive details follow containerd's exporter: members sorted by name, each once; blobs and
``oci-layout`` mode 0444, ``index.json`` and ``manifest.json`` 0644, folders 0755; every mtime
0 (Go's zero ``time.Time``); no owner names; JSON as Go's ``encoding/json`` writes it. The
output is therefore the same bytes for the same images, names and platform. Deliberately left
out: ``containerd.io/distribution.source`` labels copied into ``index.json`` annotations,
referrers, and the skipping of non-distributable (Windows foreign) layers.

Every blob is checked while it streams (1 MiB at a time, constant memory) against its digest
and its descriptor's size. Before the first byte, every blob is looked up (a missing one
raises ``MissingBlob``) and the indexes and manifests are read and checked; a blob whose bytes
turn out changed while it streams raises ``ChangedBlob`` after part of the archive went out.
``save_to_path`` writes into a temp file beside the target and renames it into place only on
success, so a failed save leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from imagestore.containerd import content as c
from imagestore.containerd import save_blobs as sb
from imagestore.containerd.images import Image, Manifest
from imagestore.containerd.layout import Layout
from imagestore.containerd.meta import Descriptor
from imagestore.moby.archive import SaveError, write_aside
from imagestore.moby.references import InvalidReference, NamedReference, parse_normalized_named
from imagestore.moby.save_go import go_string, tar_header

BlobUnusable, MissingBlob, ChangedBlob = sb.BlobUnusable, sb.MissingBlob, sb.ChangedBlob

_BLOCK = 512
_INDEX = "application/vnd.oci.image.index.v1+json"
_NAME = "io.containerd.image.name"  # containerd images.AnnotationImageName
_REF_NAME = "org.opencontainers.image.ref.name"  # ocispec.AnnotationRefName
_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'  # json.Marshal(ocispec.ImageLayout)

PlatformArg = str | c.Platform | None


@dataclass
class _Entry:
    """One item of ``manifest.json``: a manifest picked for ``docker load``."""

    config: str
    layers: list[str]
    tags: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    blobs: dict[str, sb.Blob] = field(default_factory=dict)
    index: list[str] = field(default_factory=list)  # index.json descriptors, as JSON
    entries: dict[str, _Entry] = field(default_factory=dict)  # by manifest digest
    needed_by: dict[str, str] = field(default_factory=dict)  # blob digest -> image label

    def add(self, blob: sb.Blob, label: str) -> None:
        self.blobs.setdefault(blob.digest, blob)
        self.needed_by.setdefault(blob.digest, label)


# -- JSON as Go's encoding/json writes ocispec types -----------------------------------------


def _strings_map(values: dict[str, str]) -> str:
    return "{" + ",".join(f"{go_string(k)}:{go_string(values[k])}" for k in sorted(values)) + "}"


def _descriptor_json(desc: Descriptor, annotations: dict[str, str],
                     platform: c.Platform | None) -> str:
    """``ocispec.Descriptor``: mediaType, digest, size, annotations, platform (omitempty)."""
    out = (f'{{"mediaType":{go_string(desc.media_type)},"digest":{go_string(desc.digest)},'
           f'"size":{desc.size}')
    if annotations:
        out += f',"annotations":{_strings_map(annotations)}'
    if platform is not None:
        out += (f',"platform":{{"architecture":{go_string(platform.architecture)},'
                f'"os":{go_string(platform.os)}')
        out += f',"variant":{go_string(platform.variant)}}}' if platform.variant else "}"
    return out + "}"


def _index_json(descriptors: list[str]) -> bytes:
    return (f'{{"schemaVersion":2,"mediaType":"{_INDEX}","manifests":['
            f'{",".join(descriptors)}]}}').encode()


def _manifest_json(entries: Sequence[_Entry]) -> bytes:
    """Docker's ``manifest.json`` as containerd's ``manifestsRecord`` marshals it."""

    def strings(items: list[str]) -> str:
        return "[" + ",".join(go_string(i) for i in items) + "]" if items else "null"

    return ("[" + ",".join(f'{{"Config":{go_string(e.config)},"RepoTags":{strings(e.tags)},'
                           f'"Layers":{strings(e.layers)}}}' for e in entries) + "]").encode()


# -- which names, which manifest -------------------------------------------------------------


def _names(names: Sequence[str]) -> list[NamedReference]:
    """The names to record, tagged (a bare name means ``:latest``, containerd's
    ``TagNameOnly``). A digest reference is not recorded: Docker exports a digest-named image
    without a name (moby ``ExportImage``), and ``docker load`` takes tags only; nor is CRI's
    ``sha256:<config>`` record, which is an ID, not a name."""
    out: list[NamedReference] = []
    for name in [names] if isinstance(names, str) else names:
        try:
            ref = parse_normalized_named(name)
        except InvalidReference as exc:
            raise SaveError(f"invalid reference {name!r}: {exc}") from None
        if ref.digest or (ref.familiar_name() == "sha256" and len(ref.tag or "") == 64):
            continue
        tagged = NamedReference(ref.domain, ref.path, ref.tag or "latest")
        if tagged not in out:
            out.append(tagged)
    return out


def _platform(value: PlatformArg) -> c.Platform | None:
    if value is None or isinstance(value, c.Platform):
        return None if value is None else c.normalize(value)
    try:
        return c.parse_platform(value)
    except ValueError as exc:
        raise SaveError(str(exc)) from None


def _label(image: Image, names: Sequence[NamedReference]) -> str:
    short = image.id[:19]
    return f"{names[0].familiar_string()} ({short})" if names else short


def _pick(image: Image, wanted: c.Platform | None, label: str) -> Manifest:
    """The manifest ``manifest.json`` names: ``best``, or the one ``wanted`` picks as
    ``images.Resolver`` picks ``best`` (exact platform first, a present one first)."""
    if wanted is None:
        if image.best is None:
            raise SaveError(f"cannot save {label}: it has no image manifest for the platform "
                            f"it was resolved for; name one with platform=")
        return image.best
    fits = [m for m in image.manifests if m.kind == "image" and m.platform is not None
            and c.matches(wanted, m.platform)]
    fits.sort(key=lambda m: (not m.available, c.rank(wanted, m.platform)
                             if m.platform else 9))
    if not fits:
        offered = ", ".join(sorted({str(m.platform) for m in image.manifests
                                    if m.kind == "image" and m.platform})) or "none"
        raise SaveError(f"cannot save {label}: no manifest for platform {wanted} "
                        f"(it has {offered})")
    return fits[0]


# -- the plan --------------------------------------------------------------------------------


def _add_manifest(layout: Layout, plan: _Plan, desc: sb.Blob, label: str, *,
                  required: bool) -> list[sb.Blob] | None:
    """A manifest and, when all are present, its config and layers (``WithSkipMissing``);
    ``required``: the manifest ``manifest.json`` names, every blob of which must be there.
    Returns the config and layers added, or ``None``."""
    if not required and not sb.present(layout, desc.digest):
        return None
    sb.check(layout, desc, label)
    doc = sb.document(layout, desc, label)
    plan.add(desc, label)
    children = sb.children(doc, desc.digest, label)
    if not required and not all(sb.present(layout, b.digest) for b in children):
        return None
    for blob in children:
        sb.check(layout, blob, label)
        plan.add(blob, label)
    return children


def _plan_image(layout: Layout, plan: _Plan, image: Image, names: list[NamedReference],
                wanted: c.Platform | None) -> None:
    label = _label(image, names)
    chosen = _pick(image, wanted, label)
    if not chosen.available:
        raise MissingBlob(chosen.digest, f"is missing from the content store (the "
                                         f"{chosen.platform or 'image'} manifest)", label)
    chosen_blob = sb.Blob(chosen.digest, chosen.size)
    if wanted is not None or image.target.digest == chosen.digest:
        # One manifest: the target itself, or (docker save --platform) the index entry
        # moby's getPushDescriptor picks, which carries the platform.
        target = image.target if image.target.digest == chosen.digest else \
            Descriptor(chosen.digest, chosen.media_type, chosen.size, chosen.annotations)
        platform = None if target is image.target else chosen.platform
        picked = _add_manifest(layout, plan, chosen_blob, label, required=True)
    else:
        target, platform, picked = image.target, None, None
        for index in image.indexes:
            blob = sb.Blob(index.digest, index.size)
            if index is image.target or sb.present(layout, index.digest):
                sb.check(layout, blob, label)
                sb.document(layout, blob, label)  # a changed index fails before any output
                plan.add(blob, label)
        for m in image.manifests:
            if m.media_type in c.MANIFESTS:
                got = _add_manifest(layout, plan, sb.Blob(m.digest, m.size), label,
                                    required=m is chosen)
                picked = got if m is chosen else picked
    if picked is None:  # cannot happen: the chosen manifest is required, and raised
        raise SaveError(f"cannot save {label}: manifest {chosen.digest} was not written")
    entry = plan.entries.setdefault(chosen.digest, _Entry(
        picked[0].member, [b.member for b in picked[1:]]))
    entry.tags += [t for t in (n.familiar_string() for n in names) if t not in entry.tags]
    # containerd's WithManifest: one index.json entry per name; none named: one without.
    kept = {k: v for k, v in target.annotations.items() if k not in (_NAME, _REF_NAME)}
    named: list[NamedReference | None] = [*names] or [None]
    for name in named:
        notes = kept if name is None else {**kept, _NAME: str(name), _REF_NAME: name.tag or ""}
        text = _descriptor_json(target, notes, platform)
        if text not in plan.index:
            plan.index.append(text)


def _plan(layout: Layout, images: Sequence[tuple[Image, Sequence[str]]],
          platform: PlatformArg) -> _Plan:
    wanted = _platform(platform)
    merged: dict[str, tuple[Image, list[NamedReference]]] = {}
    for image, names in images:
        refs = _names(names)
        if image.id in merged:
            merged[image.id][1].extend(r for r in refs if r not in merged[image.id][1])
        else:
            merged[image.id] = (image, refs)
    if not merged:
        raise SaveError("no image to save")
    plan = _Plan()
    for image, refs in merged.values():
        _plan_image(layout, plan, image, refs, wanted)
    return plan


# -- writing ---------------------------------------------------------------------------------


def _header(name: str, size: int, mode: int) -> bytes:
    """Go's archive/tar header as containerd's exporter gets it (USTAR, PAX only past
    8 GiB, mtime 0, no owner names), with the exporter's mode: ``save_go.tar_header`` writes
    moby's modes, so the mode field and the checksum of the last block are set again."""
    raw = bytearray(tar_header(name, size, 0, legacy=False))
    block = len(raw) - _BLOCK
    raw[block + 100 : block + 108] = b"%07o\0" % mode
    raw[block + 148 : block + 156] = b" " * 8
    raw[block + 148 : block + 156] = b"%06o\0 " % sum(raw[block:])
    return bytes(raw)


def _write(out: BinaryIO, header: bytes, chunks: Iterator[bytes] | bytes, size: int) -> int:
    out.write(header)
    for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
        out.write(chunk)
    pad = -size % _BLOCK
    out.write(b"\0" * pad)
    return len(header) + size + pad


def save(layout: Layout, images: Sequence[tuple[Image, Sequence[str]]], out: BinaryIO, *,
         platform: PlatformArg = None) -> int:
    """Write ``images`` (each with the names to record for it, full or familiar; digest
    names are left out) as one archive ``docker load`` takes (Docker 20.10 and 25+) to the
    binary stream ``out``; returns its length. See the module's docstring for what goes in
    for a multi-platform image and what ``platform`` (``"os/arch[/variant]"`` or a
    ``content.Platform``) changes.

    Raises ``SaveError`` for what cannot be saved (no image, a bad name, no manifest for the
    platform), ``MissingBlob`` before the first byte when a blob the archive needs is not
    there, ``ChangedBlob`` (also a ``DigestMismatch``) when a blob's bytes are not what its
    digest says: before the first byte for indexes and manifests, while streaming for
    configs and layers, leaving ``out`` incomplete (``save_to_path`` removes it)."""
    plan = _plan(layout, images, platform)
    members: list[tuple[str, int, sb.Blob | bytes]] = [
        ("index.json", 0o644, _index_json(plan.index)),
        ("manifest.json", 0o644, _manifest_json(list(plan.entries.values()))),
        ("oci-layout", 0o444, _LAYOUT)]
    members += [(b.member, 0o444, b) for b in plan.blobs.values()]
    members += [(f"blobs/{a}/", 0o755, b"") for a in
                {b.digest.partition(":")[0] for b in plan.blobs.values()}]
    members.append(("blobs/", 0o755, b""))
    total = 0
    for name, mode, body in sorted(members, key=lambda m: m[0]):  # writeTar sorts by name
        if isinstance(body, bytes):
            total += _write(out, _header(name, len(body), mode), body, len(body))
        else:
            total += _write(out, _header(name, body.size, mode), sb.stream_blob(
                layout, body.digest, body.size, label=plan.needed_by.get(body.digest, "")),
                body.size)
    out.write(b"\0" * (2 * _BLOCK))
    return total + 2 * _BLOCK


def save_to_path(layout: Layout, images: Sequence[tuple[Image, Sequence[str]]],
                 path: str | os.PathLike[str], *, platform: PlatformArg = None) -> int:
    """``save`` into a temp file beside ``path``, renamed onto it only when every blob
    checked out (``moby.archive.write_aside``, as the classic archive is written)."""
    return write_aside(Path(path), lambda out: save(layout, images, out, platform=platform))


__all__ = ["BlobUnusable", "ChangedBlob", "MissingBlob", "SaveError", "save", "save_to_path"]
