"""``docker save`` archives written without a daemon, in the engine's two layouts.

The archive is laid out as moby's tarexport lays out its temp folder and tars it: members in
the order of a sorted walk, Go's USTAR headers (PAX only for a member over 8 GiB), each file's
mtime as the engine stamps it. Everything streams: a layer's length is known from its
tar-split before its header is written (``tarsplit.layer_length``), then its bytes are rebuilt
straight into the archive, so no layer is ever held in memory or put in a temp file.

``LEGACY`` is Docker 24 and earlier (one folder per v1 layer, headers as Docker 20.10 writes
them); ``OCI`` is Docker 25 and later (``blobs/sha256``, ``index.json``, ``oci-layout``, headers
as moby's master writes them). Both carry ``manifest.json``, which is what ``docker load``
reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imagestore.errors import ImageStoreError
from imagestore.moby import save_go
from imagestore.moby.digest import PREFIX, chain_ids, hex_of, normalize_id
from imagestore.moby.files import owned_temp, remove_abandoned_temps
from imagestore.moby.image import Image
from imagestore.moby.imagedb import ImageDB
from imagestore.moby.references import (
    InvalidReference,
    NamedReference,
    parse_normalized_named,
    parse_repositories,
)
from imagestore.moby.save_go import created_seconds, go_string, tar_header, v1_ids
from imagestore.moby.tarsplit import LayerError, LayerSource, layer_length, layer_source
from imagestore.moby.tarsplit import stream_layer as _stream_layer

OCI = "oci"
LEGACY = "legacy"
LAYOUTS = (OCI, LEGACY)
_BLOCK = 512
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_INDEX = "application/vnd.oci.image.index.v1+json"


class SaveError(ImageStoreError):
    """An archive that cannot be written (the images, not a layer: that is ``LayerError``)."""


@dataclass(frozen=True)
class SaveImage:
    """One image to save, as plain data: its config bytes, the tags to record (any form
    docker accepts; digests are left out, as docker does), its layers bottom first as
    ``(diff ID, chain ID)``, and its parent (recorded only when it is saved too)."""

    image_id: str
    config: bytes
    repo_tags: Sequence[str]
    layers: Sequence[tuple[str, str]]
    parent: str | None = None


@dataclass
class _Member:
    name: str  # a folder's ends with "/"
    mtime: int
    data: bytes = b""
    layer: LayerSource | None = None
    size: int = -1
    link: str = ""

    @property
    def length(self) -> int:
        return self.size if self.layer is not None else len(self.data)


# -- the plan: every member, in the order docker's walk writes them ----------------------------


@dataclass(frozen=True)
class _Tag:
    ref: NamedReference

    @property
    def familiar(self) -> str:
        return self.ref.familiar_string()

    @property
    def full(self) -> str:
        return f"{self.ref.domain}/{self.ref.path}:{self.ref.tag}"


def _tags(names: Iterable[str]) -> list[_Tag]:
    out: list[_Tag] = []
    for name in names:
        try:
            ref = parse_normalized_named(name)
        except InvalidReference as exc:
            raise SaveError(f"invalid reference {name!r}: {exc}") from None
        if ref.digest:
            continue  # docker records tags only
        tag = _Tag(NamedReference(ref.domain, ref.path, ref.tag or "latest"))
        if tag not in out:
            out.append(tag)
    return out


def _merged(images: Iterable[SaveImage]) -> list[tuple[SaveImage, list[_Tag]]]:
    """One entry per image (tags of repeats joined), refusing what docker refuses."""
    seen: dict[str, tuple[SaveImage, list[_Tag]]] = {}
    for img in images:
        if not img.layers:
            raise SaveError(f"cannot save {img.image_id}: empty export - not implemented")
        if PREFIX + hashlib.sha256(img.config).hexdigest() != img.image_id:
            raise SaveError(f"config bytes do not hash to the image ID {img.image_id}")
        if img.image_id in seen:
            seen[img.image_id][1].extend(t for t in _tags(img.repo_tags)
                                         if t not in seen[img.image_id][1])
        else:
            seen[img.image_id] = (img, _tags(img.repo_tags))
    if not seen:
        raise SaveError("no image to save")
    return list(seen.values())


def _json_list(items: Iterable[str]) -> str:
    return "[" + ",".join(go_string(i) for i in items) + "]"


def _manifest_json(images: list[tuple[SaveImage, list[_Tag]]], config_paths: list[str],
                   layer_paths: list[list[str]]) -> bytes:
    ids = {img.image_id for img, _ in images}
    items = []
    for (img, tags), config, layers in zip(images, config_paths, layer_paths, strict=True):
        repo_tags = _json_list(t.familiar for t in tags) if tags else "null"
        item = f'{{"Config":{go_string(config)},"RepoTags":{repo_tags},"Layers":' \
               f"{_json_list(layers)}"
        if img.parent in ids and img.parent != img.image_id:
            item += f',"Parent":{go_string(img.parent or "")}'
        items.append(item + "}")
    return ("[" + ",".join(items) + "]\n").encode()


def _repositories(images: list[tuple[SaveImage, list[_Tag]]], tops: list[str]) -> bytes | None:
    repos: dict[str, dict[str, str]] = {}
    for (_, tags), top in zip(images, tops, strict=True):
        for tag in tags:
            repos.setdefault(tag.ref.familiar_name(), {})[tag.ref.tag or ""] = top
    if not repos:
        return None
    body = ",".join(go_string(repo) + ":{" + ",".join(
        f"{go_string(t)}:{go_string(i)}" for t, i in sorted(repos[repo].items())) + "}"
        for repo in sorted(repos))
    return ("{" + body + "}\n").encode()


def _layer(root: Path, diff_id: str, chain_id: str, name: str, mtime: int) -> _Member:
    src = layer_source(root, chain_id, diff_id)
    return _Member(name, mtime, layer=src, size=layer_length(src))


def _legacy_plan(images: list[tuple[SaveImage, list[_Tag]]], root: Path, now: int
                 ) -> list[_Member]:
    members: list[_Member] = []
    saved: set[str] = set()
    first_copy: dict[str, str] = {}  # diff ID -> v1 ID holding its layer.tar
    config_paths, layer_paths, tops = [], [], []
    for img, _ in images:
        created = created_seconds(img.config)
        chains = [chain for _, chain in img.layers]
        layers = v1_ids(img.config, chains, save_go.LEGACY)
        for (diff, chain), (v1_id, _, v1_json) in zip(img.layers, layers, strict=True):
            if v1_id in saved:
                continue
            saved.add(v1_id)
            # A repeated layer is a symlink; the engine stamps only first copies' files.
            when = now if diff in first_copy else created
            members += [_Member(f"{v1_id}/", when), _Member(f"{v1_id}/VERSION", when, b"1.0"),
                        _Member(f"{v1_id}/json", when, v1_json)]
            if diff in first_copy:
                link = f"../{first_copy[diff]}/layer.tar"
                members.append(_Member(f"{v1_id}/layer.tar", when, link=link))
            else:
                members.append(_layer(root, diff, chain, f"{v1_id}/layer.tar", when))
                first_copy[diff] = v1_id
        config_paths.append(f"{hex_of(img.image_id)}.json")
        members.append(_Member(config_paths[-1], created, img.config))
        layer_paths.append([f"{v1_id}/layer.tar" for v1_id, _, _ in layers])
        tops.append(layers[-1][0])
    members.append(_Member("manifest.json", 0, _manifest_json(images, config_paths,
                                                              layer_paths)))
    repositories = _repositories(images, tops)
    if repositories is not None:
        members.append(_Member("repositories", 0, repositories))
    return members


def _descriptor(media_type: str, digest: str, size: int, annotations: str = "") -> str:
    extra = f',"annotations":{annotations}' if annotations else ""
    return f'{{"mediaType":"{media_type}","digest":"{digest}","size":{size}{extra}}}'


def _oci_plan(images: list[tuple[SaveImage, list[_Tag]]], root: Path) -> list[_Member]:
    blobs: dict[str, _Member] = {}
    index: list[str] = []
    config_paths, layer_paths, tops = [], [], []
    blobs_mtime = 0
    for img, tags in images:
        created = created_seconds(img.config)
        chains = [chain for _, chain in img.layers]
        layer_descriptors = []
        for (diff, chain), (_, _, v1_json) in zip(
                img.layers, v1_ids(img.config, chains, save_go.CURRENT), strict=True):
            # The engine still writes each layer's v1 config as a blob nothing refers to.
            v1_hex = hashlib.sha256(v1_json).hexdigest()
            blobs.setdefault(v1_hex, _Member(f"blobs/sha256/{v1_hex}", created, v1_json))
            if hex_of(diff) not in blobs:
                blobs[hex_of(diff)] = _layer(root, diff, chain, f"blobs/sha256/{hex_of(diff)}",
                                             created)
            layer_descriptors.append(_descriptor(_LAYER, diff, blobs[hex_of(diff)].length))
        config_hex = hex_of(img.image_id)
        blobs.setdefault(config_hex, _Member(f"blobs/sha256/{config_hex}", created, img.config))
        manifest = (f'{{"schemaVersion":2,"mediaType":"{_MANIFEST}","config":'
                    f"{_descriptor(_CONFIG, img.image_id, len(img.config))},"
                    f'"layers":[{",".join(layer_descriptors)}]}}').encode()
        manifest_hex = hashlib.sha256(manifest).hexdigest()
        blobs[manifest_hex] = _Member(f"blobs/sha256/{manifest_hex}", 0, manifest)
        named: list[_Tag | None] = [*tags] or [None]
        for tag in named:
            notes = "" if tag is None else (
                f'{{"io.containerd.image.name":{go_string(tag.full)},'
                f'"org.opencontainers.image.ref.name":{go_string(tag.ref.tag or "")}}}')
            index.append(_descriptor(_MANIFEST, PREFIX + manifest_hex, len(manifest), notes))
        config_paths.append(f"blobs/sha256/{config_hex}")
        layer_paths.append([f"blobs/sha256/{hex_of(diff)}" for diff, _ in img.layers])
        tops.append(hex_of(img.layers[-1][0]))
        blobs_mtime = created  # the last image's stamp stays on blobs/
    members = [_Member("blobs/", blobs_mtime), _Member("blobs/sha256/", 0), *blobs.values()]
    members.append(_Member("index.json", 0, (f'{{"schemaVersion":2,"mediaType":"{_INDEX}",'
                                             f'"manifests":[{",".join(index)}]}}').encode()))
    members.append(_Member("manifest.json", 0, _manifest_json(images, config_paths,
                                                              layer_paths)))
    members.append(_Member("oci-layout", 0, b'{"imageLayoutVersion": "1.0.0"}'))
    repositories = _repositories(images, tops)
    if repositories is not None:
        members.append(_Member("repositories", 0, repositories))
    return members


def _walk_order(member: _Member) -> list[str]:
    return member.name.rstrip("/").split("/")


# -- writing -------------------------------------------------------------------------------


def save_to(images: Iterable[SaveImage], out: BinaryIO, root: Path, *, layout: str = OCI,
            now: int | None = None) -> int:
    """Write the archive of ``images`` (layers from the image root ``root``) to ``out``, a
    stream; returns its length. Every tar-split is read before the first byte goes out; a
    layer that turns out wrong while it streams raises ``LayerError`` (the stream is then
    incomplete: ``save_to_path`` removes it). ``now`` stamps the legacy layout's repeated
    layers (the engine leaves them with the time of the save)."""
    if layout not in LAYOUTS:
        raise SaveError(f"unknown archive layout {layout!r} (one of {', '.join(LAYOUTS)})")
    merged = _merged(images)
    stamp = int(time.time()) if now is None else now
    plan = _legacy_plan(merged, root, stamp) if layout == LEGACY else _oci_plan(merged, root)
    plan.sort(key=_walk_order)
    total = 0
    for member in plan:
        header = tar_header(member.name, member.length, member.mtime, link=member.link,
                            legacy=layout == LEGACY)
        out.write(header)
        written = 0
        if member.layer is not None:
            for chunk in _stream_layer(member.layer):
                written += len(chunk)
                if written > member.size:
                    break
                out.write(chunk)
            if written != member.size:
                raise LayerError(member.layer.chain_id, str(member.layer.folder),
                                 "tar-split changed while the archive was written")
        elif not member.link:
            out.write(member.data)
            written = len(member.data)
        pad = -written % _BLOCK
        out.write(b"\0" * pad)
        total += len(header) + written + pad
    out.write(b"\0" * (2 * _BLOCK))
    return total + 2 * _BLOCK


def save_to_path(images: Iterable[SaveImage], target: Path, root: Path, *,
                 layout: str = OCI, now: int | None = None) -> int:
    """``save_to`` into a temp file beside ``target``, renamed into place once every layer
    checked out (``write_aside``)."""
    return write_aside(Path(target), lambda out: save_to(images, out, root, layout=layout,
                                                         now=now))


def write_aside(target: Path, write: Callable[[BinaryIO], int]) -> int:
    """``write`` an archive into a temp file beside ``target``, fsynced and renamed into
    place only when it returned (mode 0600, as ``docker save -o`` leaves it); on any failure
    nothing is left behind and ``target`` is as it was. A save killed outright cannot remove
    its temp file: the next save to the same target removes the ones whose writer is gone
    (``files.remove_abandoned_temps``), with a warning."""
    removed = remove_abandoned_temps(target)
    if removed:
        warnings.warn(f"removed {len(removed)} temp file(s) a save to {target} that never "
                      f"finished left behind ({sum(size for _, size in removed)} bytes): "
                      f"{', '.join(path.name for path, _ in removed)}", stacklevel=4)
    try:
        fd, tmp = owned_temp(target)
    except OSError as exc:
        raise SaveError(f"cannot write {target}: {exc.strerror or exc}") from None
    lock = os.dup(fd)  # the temp stays locked, as its writer's, until it is renamed
    try:
        with os.fdopen(fd, "wb") as out:
            total = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise SaveError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    finally:
        os.close(lock)
    return total


# -- images from an image root, without the index --------------------------------------------


def tags_in_root(root: Path, image_id: str) -> list[str]:
    """The tags ``repositories.json`` gives the image (digest references left out)."""
    try:
        raw = (root / "repositories.json").read_bytes()
        refs, _ = parse_repositories(raw)
    except (OSError, ValueError):
        return []
    return [r.ref for r in refs if r.image_id == image_id and r.tag is not None
            and not r.misfiled]  # docker finds a misfiled one by no name


def image_from_root(root: Path, image_id: str, repo_tags: Sequence[str] = ()) -> SaveImage:
    """A ``SaveImage`` read from the image root ``<data-root>/image/<driver>``: the config
    (verified against its ID), its layers' chain IDs, its parent. Raises ``ImageNotFound``,
    ``DigestMismatch`` or ``InvalidImageConfig``."""
    db = ImageDB(root / "imagedb", create=False)
    config = db.get(image_id)
    diff_ids = Image.from_raw(image_id, config).rootfs.diff_ids
    raw_parent = db.get_metadata(image_id, "parent")
    parent = normalize_id(raw_parent.decode("utf-8", "replace").strip()) if raw_parent else None
    layers = tuple(zip(diff_ids, chain_ids(diff_ids), strict=True))
    return SaveImage(image_id, config, tuple(repo_tags), layers, parent)
