"""An image's filesystem from its layers' file lists: ``files``, ``which``, ``diff`` and
``waste``. The lists are read into the index on first need (``Store.read_files``), then
every answer comes from the index, without reading a byte of layer data.

The merge applies the layers as moby's ``archive.UnpackLayer`` does, bottom first: a
whiteout ``.wh.NAME`` removes ``NAME`` (and what is below it), an opaque marker
``.wh..wh..opq`` hides what lower layers hold in its folder, an entry replaces a lower one
of the same path (a folder over a folder keeps the lower folder's contents; anything else
over a folder removes them), and a hard link takes its target's size.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from imagestore.errors import ImageStoreError

if TYPE_CHECKING:
    from imagestore.store import Store
    from imagestore.sync.report import Progress


@dataclass(frozen=True)
class FileEntry:
    """One path of an image's merged filesystem, and the layer (diff ID) that brings it."""

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    link: str | None
    crc64: str | None
    layer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_read(store: Store, progress: Progress | None = None) -> None:
    """Read the file lists of the store's layers that were never read (first need)."""
    with store.index.read() as q:
        unread = q.unread_layers()
    if unread:
        store.read_files(progress=progress)


def image_layers(store: Store, image_id: str) -> list[str]:
    """The diff IDs of an image's layers, bottom first."""
    with store.index.read() as q:
        chain = q.image_chain(image_id)
        if chain is None:
            raise ImageStoreError(f"No such image: {image_id}")
        return [] if chain[0] is None else [d for _, d in q.chain_layers(chain[0])]


def _layer_rows(store: Store, diff_ids: Iterable[str]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    with store.index.read() as q:
        return [(d, q.layer_entries(d)) for d in diff_ids]


def _drop_below(files: dict[str, FileEntry], folder: str, *, itself: bool) -> None:
    if itself:
        files.pop(folder, None)
    if folder == "":
        files.clear()
        return
    prefix = folder + "/"
    for path in [p for p in files if p.startswith(prefix)]:
        del files[path]


def merge(layers: list[tuple[str, list[tuple[Any, ...]]]]) -> dict[str, FileEntry]:
    """The merged filesystem of layers given bottom first as (diff ID, ``FileRow``s)."""
    files: dict[str, FileEntry] = {}
    for diff_id, rows in layers:
        for row in rows:  # removals first: they hide the lower layers only
            if row[9] == "remove":
                _drop_below(files, row[10], itself=True)
            elif row[9] == "opaque":
                _drop_below(files, row[10], itself=False)
        for path, kind, size, mode, uid, gid, mtime, link, crc, whiteout, _ in rows:
            if whiteout is not None:
                continue
            lower = files.get(path)
            if lower is not None and lower.type == "dir" and kind != "dir":
                _drop_below(files, path, itself=False)
            files[path] = FileEntry(path, kind, size, mode, uid, gid, mtime, link, crc,
                                    diff_id)
    for path, entry in files.items():
        if entry.type == "hardlink" and entry.link in files:
            target = files[entry.link]
            files[path] = FileEntry(path, "hardlink", target.size, entry.mode, entry.uid,
                                    entry.gid, entry.mtime, entry.link, target.crc64,
                                    entry.layer)
    return files


def image_files(store: Store, image_id: str, progress: Progress | None = None
                ) -> list[FileEntry]:
    """An image's merged filesystem, one entry per path, sorted by path."""
    ensure_read(store, progress)
    merged = merge(_layer_rows(store, image_layers(store, image_id)))
    return [merged[p] for p in sorted(merged)]


def like_of(pattern: str) -> str:
    """A shell glob as a SQL LIKE pattern (escaped with ``!``) that every path it matches
    matches too (the glob itself is checked after). A glob without ``/`` names a file in
    any folder; one with ``/`` is a path from the root."""
    glob = pattern.lstrip("/")
    out = [] if "/" in glob else ["%"]
    i = 0
    while i < len(glob):
        c = glob[i]
        end = glob.find("]", i + 2) if c == "[" else -1
        if end > 0:  # a bracket expression is one character
            out.append("_")
            i = end + 1
            continue
        out.append("%" if c == "*" else "_" if c == "?" else "!" + c if c in "%_!" else c)
        i += 1
    return "".join(out)


def matches(path: str, pattern: str) -> bool:
    """``pattern`` (a shell glob) matches the path (without ``/``: its last name)."""
    glob = pattern.lstrip("/")
    if "/" not in glob:
        return fnmatch.fnmatchcase(path.rpartition("/")[2], glob)
    return fnmatch.fnmatchcase(path, glob)


def path_range(pattern: str) -> tuple[str | None, str | None]:
    """Where in the path index a glob's paths lie: ``(path, None)`` for a path without
    wildcards, ``(low, high)`` for a glob from the root with a literal prefix (every path it
    matches starts with the prefix), ``(None, None)`` when nothing narrows it (a file name
    in any folder, or a glob starting with a wildcard)."""
    glob = pattern.lstrip("/")
    if "/" not in glob:
        return None, None
    cut = min([glob.index(c) for c in "*?[" if c in glob], default=-1)
    if cut < 0:
        return glob, None
    prefix = glob[:cut]
    if not prefix:
        return None, None
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last < 0xE000:  # surrogates are no characters of a path
        last = 0xE000
    if last > 0x10FFFF:
        return None, None
    return prefix, prefix[:-1] + chr(last)


def _shaped(found: list[tuple[Any, ...]], tags: list[tuple[str, str, str]], pattern: str
            ) -> list[dict[str, Any]]:
    refs: dict[tuple[str, str], list[str]] = {}
    for store_name, image, ref in tags:
        refs.setdefault((store_name, image), []).append(ref)
    return [{"store": store_name, "image": image,
             "tags": sorted(refs.get((store_name, image), [])), "path": path,
             "type": kind, "size": size, "layer": layer}
            for store_name, image, path, kind, size, layer in found
            if matches(path, pattern)]


def which(store: Store, pattern: str, *, all_stores: bool = False,
          progress: Progress | None = None) -> list[dict[str, Any]]:
    """The images whose filesystem holds a path matching ``pattern`` (a path or a shell
    glob), each with its store and tags, the path, and the layer that brings it. Only the
    lists of this store's layers are read first; other stores' are as their last reading
    left them. The path index answers (``filelists.which_indexed``: the layers holding the
    path, then the images above them); the ``image_files`` view only when the pattern
    matches too many rows (``which_general``, the same answer)."""
    ensure_read(store, progress)
    low, high = path_range(pattern)
    with store.index.read() as q:
        answer = q.which_indexed(like_of(pattern), all_stores=all_stores, low=low, high=high,
                                 keep=lambda path: matches(path, pattern))
        if answer is None:
            answer = q.which_files(like_of(pattern), all_stores=all_stores)
    return _shaped(*answer, pattern)


def which_general(store: Store, pattern: str, *, all_stores: bool = False
                  ) -> list[dict[str, Any]]:
    """``which`` through the ``image_files`` view (every image merged in SQL), for the lists
    already read: the general path, against which the indexed one is checked."""
    with store.index.read() as q:
        return _shaped(*q.which_files(like_of(pattern), all_stores=all_stores), pattern)


_COMPARED = ("type", "size", "mode", "uid", "gid", "link", "crc64")


def diff(store: Store, first: str, second: str, progress: Progress | None = None
         ) -> dict[str, list[Any]]:
    """Paths added, removed and changed from image ``first`` to image ``second`` (changed:
    another type, size, mode, owner, link target or content CRC; times are not compared)."""
    a = {e.path: e for e in image_files(store, first, progress)}
    b = {e.path: e for e in image_files(store, second, progress)}
    changed = []
    for path in sorted(a.keys() & b.keys()):
        was, now = a[path], b[path]
        fields = [f for f in _COMPARED if getattr(was, f) != getattr(now, f)
                  and not (f == "size" and was.type == "dir")]
        if fields:
            changed.append({"path": path, "fields": fields, "before": was.to_dict(),
                            "after": now.to_dict()})
    return {"added": [b[p].to_dict() for p in sorted(b.keys() - a.keys())],
            "removed": [a[p].to_dict() for p in sorted(a.keys() - b.keys())],
            "changed": changed}


def waste(store: Store, image_id: str, progress: Progress | None = None) -> dict[str, Any]:
    """What dive calls wasted space: every path given by more than one layer (again, or
    removed by a whiteout), with the bytes of all its copies, and the image's efficiency
    (the sum of each path's smallest copy over the sum of all copies)."""
    ensure_read(store, progress)
    layers = _layer_rows(store, image_layers(store, image_id))
    return dive_efficiency(layers)


def dive_efficiency(layers: list[tuple[str, list[tuple[Any, ...]]]]) -> dict[str, Any]:
    """dive's ``filetree.Efficiency`` over per-layer trees: every leaf of each layer's tree
    (a whiteout stands for the path it removes, counting the bytes below it when it removed
    a folder, nothing when it removed a file; opaque markers are not leaves), per path the
    sum of its sizes and the smallest; paths seen twice or more are the inefficiencies."""
    seen: dict[str, list[int]] = {}  # path -> sizes, layer by layer
    for index, (_, rows) in enumerate(layers):
        present = {r[0] for r in rows if r[9] is None}
        parents = {p.rpartition("/")[0] for p in present} | {
            r[10].rpartition("/")[0] for r in rows if r[9] == "remove"}
        below = merge(layers[:index]) if any(r[9] == "remove" for r in rows) else {}
        for row in rows:
            if row[9] == "remove":
                gone = below.get(row[10])
                size = 0
                if gone is not None and gone.type == "dir":
                    prefix = row[10] + "/"
                    size = sum(e.size for p, e in below.items() if p.startswith(prefix))
                seen.setdefault(row[10], []).append(size)
            elif row[9] is None and row[0] not in parents:
                seen.setdefault(row[0], []).append(int(row[2]))
    wasted: list[tuple[int, str, int]] = []  # (bytes, path, copies)
    total = least = 0
    for path, sizes in seen.items():
        total += sum(sizes)
        least += min(sizes)
        if len(sizes) > 1:
            wasted.append((sum(sizes), path, len(sizes)))
    wasted.sort(key=lambda w: (-w[0], w[1]))
    return {"efficiency": 1.0 if total == 0 else least / total,
            "wasted_bytes": sum(w[0] for w in wasted),
            "paths": [{"path": p, "copies": n, "bytes": b} for b, p, n in wasted]}


__all__ = ["FileEntry", "diff", "dive_efficiency", "ensure_read", "image_files",
           "image_layers", "like_of", "matches", "merge", "path_range", "waste", "which",
           "which_general"]
