"""What the command line asks beyond moby's interface: a REF resolved as docker resolves
it, untagging, docker-style listings, inspect documents and the parent forest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagestore.cli.humanize import rfc3339
from imagestore.errors import ImageNotFound, ImageStoreError
from imagestore.index import listing
from imagestore.moby.daemon import check_writable
from imagestore.moby.digest import normalize_id
from imagestore.moby.files import MAX_FILE_SIZE, atomic_write, read_optional
from imagestore.moby.references import BadReferences, normalize_reference, without_image
from imagestore.moby.root import REPOSITORIES
from imagestore.store import Store, image_id_of
from imagestore.sync import record

Row = dict[str, Any]


def resolve(store: Store, ref: str) -> str:
    """A REF as docker resolves it: full ID, then a name from repositories.json, then a
    unique ID prefix."""
    if not isinstance(ref, str) or not ref or len(ref) > 4096 or "\x00" in ref:
        raise ImageNotFound(f"No such image: {str(ref)[:100]!r}")
    full = normalize_id(ref)
    if full is not None and full in store:
        return full
    with store.index.read() as q:
        target = q.tag_target(normalize_reference(ref))
        if target is not None:
            if not q.has_image(target):
                raise ImageNotFound(f"reference {ref} names a missing image: {target}")
            return target
    return store.search(ref)


def untag(store: Store, image_id: str) -> list[str]:
    """Remove every reference to the image from ``repositories.json``; the removed refs.

    Not part of moby's image store (the daemon untags before it deletes), but a root whose
    reference store names a deleted image confuses the engine, so ``rm`` does it."""
    image_id = image_id_of(image_id)
    path = store.root.repositories
    check_writable(store.root.path, readonly=store.readonly, force=store.force,
                   what="untag an image")
    with store.index.write() as tx:
        raw = read_optional(path, limit=MAX_FILE_SIZE)
        if raw is None:
            return []
        try:
            rewritten, removed = without_image(raw, image_id)
        except BadReferences:
            raise ImageStoreError(f"{path} is corrupt; not rewriting it") from None
        if not removed:
            return []
        atomic_write(path, rewritten)
        tx.delete_tags_of(image_id)
        record(tx, store.root, [REPOSITORIES])
        return removed


# -- docker images ---------------------------------------------------------------------------
def image_rows(store: Store, *, all_images: bool = False, dangling: bool = False) -> list[Row]:
    """The rows ``docker images`` prints: one per tag; untagged heads; ``-a`` adds the rest.

    An image is "tagged" when any reference names it; ``dangling`` means untagged heads."""
    images, tag_rows = listing.listed_images(store.index, all_images=all_images,
                                             dangling=dangling)
    refs: dict[str, list[tuple[str | None, str | None]]] = {}
    for image_id, repository, tag in tag_rows:
        refs.setdefault(image_id, []).append((repository, tag))
    rows: list[Row] = []
    for image_id, created, parent_id, size, head in images:
        names = refs.get(image_id, [])
        if dangling and (names or not head):
            continue
        if not names and not head and not all_images:
            continue
        base = {"id": image_id, "repository": None, "tag": None, "created": rfc3339(created),
                "size": int(size or 0), "parent": parent_id}
        if not names:  # most rows: one, untagged
            rows.append(base)
            continue
        tagged: list[tuple[str | None, str | None]] = [
            (repo, tag) for repo, tag in names if tag is not None]
        if not tagged:  # digest-only references show as repo <none>
            tagged = sorted({(repo, None) for repo, _ in names})
        rows.extend({**base, "repository": repo, "tag": tag} for repo, tag in tagged)
    rows.sort(key=lambda r: (r["created"] or "", r["repository"] or "", r["tag"] or ""),
              reverse=True)
    return rows


# -- docker image inspect --------------------------------------------------------------------
def inspect(store: Store, image_id: str) -> Row:
    image = store.get(image_id)
    with store.index.read() as q:
        last_updated, built_locally = q.image_meta(image.id) or (None, False)
        tags, size = q.refs_of(image.id), q.image_size(image.id) or 0
    return {
        "id": image.id,
        "repo_tags": tags,
        "parent": image.parent,
        "children": store.children(image_id),
        "created": rfc3339(image.created_text),
        "author": image.author,
        "comment": image.comment,
        "docker_version": image.docker_version,
        "os": image.os,
        "os_version": image.os_version,
        "os_features": image.os_features,
        "architecture": image.architecture,
        "variant": image.variant,
        "size": size,
        "chain_id": image.chain_id,
        "rootfs": {"type": image.rootfs.type, "diff_ids": image.rootfs.diff_ids},
        "history": image.history,
        "config": image.config,
        "container_config": image.container_config,
        "last_updated": rfc3339(last_updated),
        "built_locally": built_locally,
    }


# -- the parent forest -----------------------------------------------------------------------
@dataclass
class Node:
    id: str
    tags: list[str]
    children: list[Node]

    def to_dict(self) -> Row:
        return {"id": self.id, "tags": self.tags, "children": [c.to_dict() for c in self.children]}


def forest(store: Store) -> list[Node]:
    """Roots (images whose parent is absent from the store) with their descendants."""
    ids, edges, ref_rows = listing.graph(store.index)
    refs: dict[str, list[str]] = {}
    for image_id, ref in ref_rows:
        refs.setdefault(image_id, []).append(ref)
    nodes = {i: Node(i, refs.get(i, []), []) for i in ids}
    has_parent = set()
    for child, parent in sorted(edges):
        if parent in nodes and child in nodes:
            nodes[parent].children.append(nodes[child])
            has_parent.add(child)
    return [nodes[i] for i in ids if i not in has_parent]


def draw_forest(roots: list[Node]) -> list[str]:
    """Text drawing. A chain of only children stays in one column (so 20+ deep chains stay
    readable); only a branch point indents, with ├── / └── before each branch."""
    lines: list[str] = []

    def label(node: Node) -> str:
        short = node.id.split(":", 1)[1][:12]
        return f"{short}  {', '.join(node.tags)}" if node.tags else short

    def walk(node: Node, first: str, rest: str) -> None:
        # Iterative down single-child chains: recursion depth grows only at branches.
        lines.append(first + label(node))
        while len(node.children) == 1:
            node = node.children[0]
            lines.append(rest + label(node))
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            walk(child, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "))

    for i, root in enumerate(roots):
        if i:
            lines.append("")  # a blank line between trees: a root never reads as a child
        walk(root, "", "")
    return lines


__all__ = ["Node", "draw_forest", "forest", "image_rows", "inspect", "resolve", "untag"]
