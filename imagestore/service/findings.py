"""What fsck finds beyond the sync's own rules. Each function takes what a rebuild from the
disk found and returns findings, each with a suggested action and whether ``fsck --repair``
may act on it (only on what nothing else refers to)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from imagestore.errors import ImageStoreError
from imagestore.moby.containers import containers_using
from imagestore.moby.digest import chain_id, is_image_id, is_text
from imagestore.moby.files import file_kind, read_regular
from imagestore.moby.image import Image
from imagestore.moby.imagedb import METADATA_KEYS
from imagestore.moby.layerdb import LAYER_FILES, MOUNT_FILES
from imagestore.moby.problems import ProblemKind
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root
from imagestore.sync import Problem
from imagestore.sync.scan import Scan, names

Contents = dict[str, set[tuple[Any, ...]]]


@dataclass(frozen=True)
class Finding:
    path: str
    check: ProblemKind
    message: str
    action: str
    repairable: bool = False
    subject: str = ""  # what a repair acts on, where the path does not say (an image ID)

    @classmethod
    def of(cls, kind: ProblemKind, path: str, message: str, *, action: str | None = None,
           repairable: bool | None = None, subject: str = "") -> Finding:
        return cls(path, kind, message, action or kind.action,
                   kind.repairable if repairable is None else repairable, subject)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "check": str(self.check), "message": self.message,
                "action": self.action}


def from_problems(problems: list[Problem], root: Root, truth: Contents) -> list[Finding]:
    """What the rebuild skipped. A content file whose layers are missing (a ``create`` that
    failed, as moby's leaves it) may go only when that is certain: no tag, no ``parent``
    file on disk (a child skipped by the rebuild still names it) and no container refers
    to it, and its top layer is absent from ``layerdb`` (a layer that is there but does not
    load is damage to mend, not a failed create)."""
    referred = {str(row[1]) for row in truth["tag"]} | named_parents(root) | \
        containers_using(root)
    out = []
    for p in problems:
        kind = p.kind if isinstance(p.kind, ProblemKind) else ProblemKind.INDEX
        if kind == ProblemKind.MISSING_LAYER and p.path.startswith(CONTENT):
            image_id = "sha256:" + p.path[len(CONTENT):]
            top = _top_layer(root, image_id)
            free = image_id not in referred and top is not None and not os.path.lexists(
                root.path / (LAYERS + top[7:]))
            why = ("nothing refers to it (checked: tags, parent files of every image, "
                   f"containers) and its layer {top} is absent: fsck --repair removes it"
                   ) if free else (
                "a tag, a child or a container refers to it, or its layer is there but does "
                "not load: pull or load its layers; never removed by --repair")
            out.append(Finding.of(kind, p.path, p.reason, repairable=free, action=why))
        else:
            out.append(Finding.of(kind, p.path, p.reason))
    return out


def named_parents(root: Root) -> set[str]:
    """Every image ID a ``parent`` file on disk names, whether or not its image loads."""
    out: set[str] = set()
    for name in names(root, METADATA):
        try:
            raw = read_regular(root.path / METADATA / name / "parent")
        except OSError:
            continue
        text = raw.decode("utf-8", "replace").strip()
        if is_image_id(text):
            out.add(text)
    return out


def _top_layer(root: Root, image_id: str) -> str | None:
    """The chain ID of an image's top layer, read from its content file."""
    try:
        raw = read_regular(root.path / CONTENT / image_id[7:])
        return chain_id(Image(image_id, raw).rootfs.diff_ids)
    except (OSError, ImageStoreError):
        return None


def leftovers(root: Root, content: set[str], layers: Scan, *, removing: bool = True
              ) -> list[Finding]:
    """Metadata of images with no content (``content``: the content folder's names), and
    layer folders of an interrupted delete (found in the ``layers`` scan) unless not
    ``removing`` (the graph driver's check reports those, and finishes them)."""
    findings = []
    for name in sorted(names(root, METADATA)):
        if is_text(name) and name not in content:
            findings.append(Finding.of(ProblemKind.ORPHAN_METADATA, METADATA + name,
                                       "metadata of an image with no content"))
    for name in sorted(layers.others):
        if removing and name.endswith("-removing") and is_text(name):
            findings.append(Finding.of(ProblemKind.TEMP_FILE, LAYERS + name,
                                       "layer folder of an interrupted delete"))
    return findings


def special_files(root: Root, scans: dict[str, Scan]) -> list[Finding]:
    """Metadata, layer and mount files that exist but are not regular files (a FIFO, a
    device, a folder, a symlink): the sync reads them as absent or empty. ``scans``: the
    metadata, layer and mount folders' scans."""
    findings = []
    for kind, files, problem in ((METADATA, METADATA_KEYS, ProblemKind.BAD_METADATA),
                                 (LAYERS, LAYER_FILES, ProblemKind.BAD_LAYER),
                                 (MOUNTS, MOUNT_FILES, ProblemKind.BAD_MOUNT)):
        for name in sorted(scans[kind].names):
            for file in files:
                path = f"{kind}{name}/{file}"
                try:
                    mode = os.lstat(root.path / path).st_mode
                except OSError:
                    continue
                if not stat.S_ISREG(mode):
                    findings.append(Finding.of(problem, path,
                                               f"{file} is {file_kind(mode)}, not a regular file"))
    return findings


def dangling_tags(content: set[str], truth: Contents) -> list[Finding]:
    """References in ``repositories.json`` to an image with no content file at all (one
    that is there but does not load is reported for itself)."""
    return [Finding.of(ProblemKind.DANGLING_TAG, f"{REPOSITORIES}#{ref}",
                       f"names {image_id}, which is not in the store", subject=image_id)
            for ref, image_id in sorted(truth["tag"]) if image_id[7:] not in content]


def links(truth: Contents, configs: dict[str, bytes]) -> list[Finding]:
    """Parent links, layer chains and unreferenced layers, on the verified state."""
    findings = []
    for child, parent in sorted(truth["parent link"], key=str):
        if parent not in configs:
            findings.append(Finding.of(ProblemKind.PARENT, METADATA + child[7:] + "/parent",
                                       f"names {parent}, which is not in the store"))
    layers = {str(r[0]): r for r in truth["layer"]}
    used: set[str] = set()
    for image_id, raw in sorted(configs.items()):
        diff_ids = Image(image_id, raw).rootfs.diff_ids
        # Every prefix's chain ID, aligned with the diff IDs ("" is one to Go's decoder).
        chains = [chain_id(diff_ids[: i + 1]) or "" for i in range(len(diff_ids))]
        used.update(chains)
        for i, (chain, diff) in enumerate(zip(chains, diff_ids, strict=True)):
            layer = layers.get(chain)
            if layer is None or layer[1] != diff or layer[2] != (chains[i - 1] if i else None):
                findings.append(Finding.of(ProblemKind.LAYER_CHAIN, CONTENT + image_id[7:],
                                           f"layer {i} ({chain}) is missing or inconsistent"))
                break
    mounted = {r[1] for r in truth["mount"] if r[1]}
    parents = {r[2] for r in truth["layer"]}
    for chain in sorted(layers):
        if chain not in used and chain not in mounted and chain not in parents:
            findings.append(Finding.of(ProblemKind.UNREFERENCED_LAYER, LAYERS + chain[7:],
                                       "no image and no container uses this layer"))
    return findings


__all__ = ["Finding", "dangling_tags", "from_problems", "leftovers", "links", "named_parents",
           "special_files"]
