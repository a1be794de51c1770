"""The listings docker shows, and what imagestore adds to them: ``docker images`` rows in
docker's order, ``docker image inspect`` in snake_case with the index's extra knowledge
(children, chain ID), and the parent forest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from imagestore.errors import InvalidImageConfig
from imagestore.moby.gotime import ZERO_UNIX, parse_time, rfc3339, unix_seconds
from imagestore.moby.image import parse_config
from imagestore.moby.references import full_name, split_reference, tags_and_digests
from imagestore.reading import Reading

Row = dict[str, Any]


@lru_cache(maxsize=4096)
def _day_start(day: str) -> int:
    return unix_seconds(parse_time(day + "T00:00:00Z"))


def _created_key(created: str | None) -> tuple[int, int]:
    """docker sorts ``docker images`` by ``Created``, whole Unix seconds, newest first (moby
    daemon/images/images.go: ``sort.Sort(sort.Reverse(byCreated(images)))``). Its sort is
    not stable and the images come from a map, so images of one second come in any order;
    ours are then newest nanosecond first (``created`` is RFC 3339 in UTC, ``Z``)."""
    if not created:
        return ZERO_UNIX, 0
    fraction = created[20:-1] if created[19:20] == "." else ""
    try:
        if (len(created) >= 20 and created[10] == "T" and created[-1] == "Z"
                and created[19] in ".Z" and created[11:19:3].isdigit()
                and created[12:19:3].isdigit() and created[13:17:3] == "::"):
            seconds = (_day_start(created[:10]) + int(created[11:13]) * 3600
                       + int(created[14:16]) * 60 + int(created[17:19]))
        else:
            seconds = unix_seconds(parse_time(created))
    except InvalidImageConfig:
        return ZERO_UNIX, 0
    return seconds, int(fraction[:9].ljust(9, "0")) if fraction.isdigit() else 0


def _shown(names: list[tuple[str, str, str | None]]) -> list[tuple[str | None, str | None]]:
    """(repository, tag) of an image's rows, from its references in the store's order."""
    tags: dict[str, list[str]] = {}
    for _, repository, tag in names:
        if tag is not None:
            tags.setdefault(repository, []).append(tag)
    shown: list[tuple[str | None, str | None]] = [
        (repo, tag) for repo, repo_tags in tags.items() for tag in repo_tags]
    shown += dict.fromkeys((repo, None) for _, repo, tag in names
                           if tag is None and repo not in tags)
    return shown


def image_rows(store: Reading, *, all_images: bool = False, dangling: bool = False) -> list[Row]:
    """The rows ``docker images`` prints, in its order.

    Images are listed as moby 20.10 lists them (daemon/images/images.go ``Images``): every
    image with a reference, and one without only when it is a head (or with ``-a``);
    ``dangling`` (docker's ``--filter dangling=true``) takes heads without a tag. Newest
    first by creation second; images of the same second newest instant first, then by ID
    (docker leaves that order to chance). An image's rows are docker/cli's
    (cli/command/formatter/image.go ``imageFormatTaggedAndDigest``): its tags in the
    reference store's order (``References`` sorts by the normalised name), one row per tag
    grouped by repository, then one row with tag ``<none>`` per repository that only holds
    digests of it; an image without references is one ``<none>`` row."""
    with store.index.read() as q:
        images, tag_rows = q.listed_images(all_images=all_images and not dangling,
                                           dangling=False)
    full: dict[str, str] = {}
    refs: dict[str, list[tuple[str, str, str | None]]] = {}
    for image_id, repository, tag in tag_rows:
        name = full.get(repository)
        if name is None:
            name = full[repository] = full_name(repository)
        # The repository's place among the image's references: only the separator after the
        # name matters, as names hold neither ':' (after the domain) nor '@'.
        key = f"{name}:{tag}" if tag is not None else f"{name}@"
        refs.setdefault(image_id, []).append((key, repository, tag))
    listed: list[tuple[tuple[int, int], str, Row, list[tuple[str | None, str | None]]]] = []
    untagged: list[tuple[str | None, str | None]] = [(None, None)]
    for image_id, created, parent_id, size, head in images:
        mine = refs.get(image_id)
        if dangling and (not head or any(tag is not None for _, _, tag in mine or ())):
            continue
        when = rfc3339(created)
        row = {"id": image_id, "repository": None, "tag": None, "created": when,
               "size": int(size or 0), "parent": parent_id}
        # Most images (intermediates, with -a) have no reference: one <none> row.
        shown = (_shown(sorted(mine)) if mine else None) or untagged
        listed.append((_created_key(when), image_id, row, shown))
    listed.sort(key=lambda item: item[1])
    listed.sort(key=lambda item: item[0], reverse=True)
    return [{**row, "repository": repo, "tag": tag}
            for _, _, row, shown in listed for repo, tag in shown]


# -- docker image inspect --------------------------------------------------------------------
def _last_history_comment(history: list[Any]) -> str:
    """``History[len-1].Comment`` as Go decodes it: keys match case-insensitively and the
    last match wins (the parsed config keeps keys in that order); null or absent is ""."""
    entry = history[-1] if history else None
    value: Any = None
    if isinstance(entry, dict):
        for key, item in entry.items():
            if key.lower() == "comment":
                value = item
    return value if isinstance(value, str) else ""


def inspect(store: Reading, image_id: str) -> Row:
    """``docker image inspect`` (moby 20.10, daemon/images/image_inspect.go ``LookupImage``)
    in snake_case (the engine's own JSON is ``service.inspect.image_attrs``), plus what
    the index knows beyond it (children, chain ID, history...).

    ``comment`` is the config's, else the last history entry's; ``repo_tags`` and
    ``repo_digests`` are in the reference store's order (sorted by the normalised name);
    ``virtual_size`` is ``size``, as the engine reports it. The README lists what is left
    out and why."""
    image = store.get(image_id)
    with store.index.read() as q:
        last_updated, built_locally = q.image_meta(image.id) or (None, False)
        refs, size = q.refs_of(image.id), q.image_size(image.id) or 0
    tags, digests = tags_and_digests(refs)
    container = parse_config(image.raw).get("container")
    return {
        "id": image.id,
        "repo_tags": tags,
        "repo_digests": digests,
        "parent": image.parent,
        "children": store.children(image_id),
        "created": rfc3339(image.created_text),
        "container": container if isinstance(container, str) else "",
        "author": image.author,
        "comment": image.comment or _last_history_comment(image.history),
        "docker_version": image.docker_version,
        "os": image.os,
        "os_version": image.os_version,
        "os_features": image.os_features,
        "architecture": image.architecture,
        "variant": image.variant,
        "size": size,
        "virtual_size": size,
        "chain_id": image.chain_id,
        "rootfs": {"type": image.rootfs.type, "diff_ids": image.rootfs.diff_ids},
        "history": image.history,
        "config": image.config,
        "container_config": image.container_config,
        "last_updated": rfc3339(last_updated),
        "built_locally": built_locally,
    }


# -- the parent forest -----------------------------------------------------------------------
# No walk here recurses: a parent chain may be thousands of images deep.
@dataclass
class TreeNode:
    id: str
    tags: list[str]
    children: list[TreeNode]

    def to_dict(self) -> Row:
        """``{"id", "tags", "children": [...]}``, nested, built with an explicit stack."""
        out: Row = {"id": self.id, "tags": self.tags, "children": []}
        stack = [(self, out)]
        while stack:
            node, into = stack.pop()
            for child in node.children:
                entry: Row = {"id": child.id, "tags": child.tags, "children": []}
                into["children"].append(entry)
                stack.append((child, entry))
        return out


def forest(store: Reading) -> list[TreeNode]:
    """Every image exactly once: roots (images whose parent is absent from the store) with
    their descendants, children and roots by ID.

    The index should hold no parent cycle, but a forest drawn from a damaged store still
    shows every image: images that no root reaches hang, through their parents, on a cycle;
    the smallest ID of each such cycle is shown as a root (its link to its parent, the
    cycle's last step, is not drawn) with everything below it. A child with two parent links
    is drawn under the smallest parent ID."""
    with store.index.read() as q:
        ids, edges, ref_rows = q.graph()
    refs: dict[str, list[str]] = {}
    for image_id, ref in ref_rows:
        refs.setdefault(image_id, []).append(ref)
    nodes = {i: TreeNode(i, refs.get(i, []), []) for i in ids}
    parent_of: dict[str, str] = {}
    for child, parent in sorted(edges):
        if parent in nodes and child in nodes and child not in parent_of:
            nodes[parent].children.append(nodes[child])
            parent_of[child] = parent
    roots = [i for i in ids if i not in parent_of]
    reached: set[str] = set()

    def reach(root: str) -> None:
        stack = [nodes[root]]
        while stack:
            node = stack.pop()
            if node.id not in reached:
                reached.add(node.id)
                stack.extend(node.children)

    for root in roots:
        reach(root)
    if len(reached) < len(nodes):
        for start in ids:
            if start in reached:
                continue
            # No root above it: its parents lead into a cycle, whose smallest ID becomes a root.
            seen: set[str] = set()
            node_id = start
            while node_id not in seen:
                seen.add(node_id)
                node_id = parent_of[node_id]
            cycle, step = [node_id], parent_of[node_id]
            while step != node_id:
                cycle.append(step)
                step = parent_of[step]
            root = min(cycle)
            above = nodes[parent_of.pop(root)]
            above.children = [c for c in above.children if c.id != root]
            roots.append(root)
            reach(root)
        roots.sort()
    return [nodes[i] for i in roots]


__all__ = ["Row", "TreeNode", "forest", "image_rows", "inspect"]


# -- docker images from the engine's rows (a containerd store; --digests) ----------------------
def formatted(repo_tags: list[str], repo_digests: list[str], *, digests: bool
              ) -> list[tuple[str | None, str | None, str | None]]:
    """(repository, tag, digest) of one image's rows as docker/cli prints them
    (cli/command/formatter/image.go ``imageFormatTaggedAndDigest``): one row per tag (per
    digest of its repository with ``digests``), then the repositories that only hold
    digests; an image with neither is one ``<none>`` row. docker/cli walks Go maps here:
    this keeps the references' own order."""
    tags: dict[str, list[str]] = {}
    by_repo: dict[str, list[str]] = {}
    for ref in repo_tags:
        repo, tag, _ = split_reference(ref)
        if tag is not None:
            tags.setdefault(repo, []).append(tag)
    for ref in repo_digests:
        repo, _, digest = split_reference(ref)
        if digest is not None:
            by_repo.setdefault(repo, []).append(digest)
    if not tags and not by_repo:
        return [(None, None, None)]
    out: list[tuple[str | None, str | None, str | None]] = []
    for repo, repo_tags_ in tags.items():
        mine = by_repo.pop(repo, [])  # never a row of its own
        for tag in repo_tags_:
            out += [(repo, tag, d) for d in mine] if digests and mine else [(repo, tag, None)]
    for repo, repo_digests_ in by_repo.items():
        out += [(repo, None, d) for d in repo_digests_] if digests else [(repo, None, None)]
    return out


def engine_rows(api_rows: list[Row], *, digests: bool = False) -> list[Row]:
    """``docker images`` rows (as ``image_rows`` gives them, with ``digest``) from the
    engine's ``GET /images/json`` rows, in their order."""
    out = []
    for r in api_rows:
        created = datetime.fromtimestamp(int(r.get("Created") or 0), timezone.utc)
        base = {"id": r["Id"], "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "size": int(r.get("Size") or 0), "parent": r.get("ParentId") or None}
        for repo, tag, digest in formatted(list(r.get("RepoTags") or []),
                                           list(r.get("RepoDigests") or []), digests=digests):
            out.append({**base, "repository": repo, "tag": tag, "digest": digest})
    return out


def listed(store: Reading, *, all_images: bool = False,
           filters: dict[str, list[str]] | None = None, digests: bool = False) -> list[Row]:
    """``imagestore ls``: the rows ``docker images`` prints with these options, from either
    kind of store (a containerd store's from Docker 29's own rows)."""
    filters = {k: list(v) for k, v in (filters or {}).items()}
    rows_of = getattr(getattr(store, "images", None), "rows", None)
    if getattr(store, "kind", "moby") != "moby" and rows_of is not None:
        return engine_rows(rows_of(all=all_images, filters=filters), digests=digests)
    plain_dangling = filters == {"dangling": ["true"]}
    rows = image_rows(store, all_images=all_images or (bool(filters) and not plain_dangling),
                      dangling=plain_dangling)
    if filters and not plain_dangling:
        from imagestore.service.selection import select_images

        kept = set(select_images(store, all=all_images, filters=filters))
        rows = [r for r in rows if r["id"] in kept]
    if not digests:
        return rows
    out: list[Row] = []
    with store.index.read() as q:
        for image_id in dict.fromkeys(r["id"] for r in rows):
            first = next(r for r in rows if r["id"] == image_id)
            tags, digests_ = tags_and_digests(q.refs_of(image_id))
            out += [{**first, "repository": repo, "tag": tag, "digest": digest}
                    for repo, tag, digest in formatted(tags, digests_, digests=True)]
    return out


def described(store: Reading, ref: str) -> Row:
    """``imagestore inspect REF``: a classic store's image in snake_case (``inspect``); a
    containerd store's as Docker 29 inspects it (``GET /images/{name}/json``)."""
    images = getattr(store, "images", None)
    if getattr(store, "kind", "moby") != "moby" and images is not None:
        return dict(images.get(ref).attrs)
    return inspect(store, store.resolve(ref))
