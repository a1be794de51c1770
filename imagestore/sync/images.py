"""The images step of a sync: content files and metadata folders into the index, each image
restored only if moby would restore it (valid config, digest, layer present)."""

from __future__ import annotations

import functools
from collections.abc import Collection

from imagestore.index import row_chain, row_id
from imagestore.moby.digest import PREFIX
from imagestore.moby.root import CONTENT, METADATA
from imagestore.sync.changes import Changes
from imagestore.sync.cycles import Linked
from imagestore.sync.layers import LayerChange, LoadableLayers
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.read import ImageRead, read_image, read_images, read_metadata
from imagestore.sync.state import Pass
from imagestore.sync.workers import chunked_map

# Configs travel back from the workers this many at a time: a chunk in flight holds every
# config's bytes twice (pickled and not); smaller chunks cost more in hand-offs than they
# save in memory (docs/performance.md).
IMAGE_CHUNK = 250


def accept(p: Pass, loadable: LoadableLayers, result: ImageRead) -> bool:
    """Record the problems of a read; True when its row may enter the index.

    An image that is not restored has only the one problem that stopped it: its metadata is
    not looked at (as in moby), so an incremental sync and a rebuild agree."""
    chain = None if result.row is None else row_chain(result.row)
    if chain is not None and chain not in loadable:
        p.problems.note([Problem(CONTENT + result.name, ProblemKind.MISSING_LAYER,
                                 f"not restoring image: layer {chain} does not exist")])
        return False
    p.problems.note(result.problems)
    return result.row is not None


def sync_images(p: Pass, changes: Changes, loadable: LoadableLayers, layers: LayerChange
                ) -> Linked:
    """Update images; the IDs of the images given a parent link this pass (a new parent
    cycle goes through one of them)."""
    report = p.report
    changed, removed, present = changes.diff(CONTENT)
    meta_changed, meta_removed, meta_present = changes.diff(METADATA)
    total = p.tx.count_images()
    if not (changed or removed or meta_changed or meta_removed or layers.moved):
        report.unchanged = total
        return Linked()
    reread = changed  # not a copy: ``changed`` is not used again
    if layers.moved:
        # Images skipped for a missing layer may load now; loaded ones may have lost theirs.
        reread |= {n for n in (path[len(CONTENT):] for path in p.problems.old_paths(CONTENT))
                   if n in present}
        lost = p.tx.images_without_layer() if layers.lost is None \
            else p.tx.images_on_layers(layers.lost) if layers.lost else []
        reread |= {i[len(PREFIX):] for i in lost}
    known = _known(p, reread | removed | meta_changed | meta_removed) if total else set()
    meta_only = ((meta_changed | meta_removed) & known) - reread - removed
    gone = sorted(PREFIX + n for n in (removed | reread) & known)
    p.tx.delete_images(gone)
    if p.problems.old:
        for name in removed | reread:
            p.problems.clear((CONTENT + name, METADATA + name))
    loaded = loaded_known = 0
    # Images with a metadata folder, then those without: two lists of names cost a fraction
    # of one list of (name, flag) pairs.
    ordered = sorted(reread)
    groups = {True: [n for n in ordered if n in meta_present],
              False: [n for n in ordered if n not in meta_present]}
    count = len(ordered)
    del changed, removed, present, meta_changed, meta_removed, meta_present, reread, ordered
    if count:
        report.read[CONTENT] += count
    done = 0
    linked = Linked()
    with p.tx.bulk_load("images", count):
        for has_metadata, group in groups.items():
            read = functools.partial(read_images, has_metadata=has_metadata)
            for results in chunked_map(read, p.root.base, group, chunk=IMAGE_CHUNK):
                done += len(results)
                p.tell("images", done, count)
                rows, rows_known = _load(p, loadable, results, known, linked)
                loaded += rows
                loaded_known += rows_known
    p.problems.clear(METADATA + n for n in meta_only)
    refreshed = _refresh_metadata(p, sorted(meta_only), linked)
    report.added = loaded - loaded_known
    report.removed = len(gone) - loaded_known
    report.changed = loaded_known + refreshed
    report.unchanged = total - len(gone) - refreshed
    return linked


def _load(p: Pass, loadable: LoadableLayers, results: list[ImageRead], known: set[str],
          linked: Linked) -> tuple[int, int]:
    """Insert what a chunk of reads may add; (rows inserted, of those already indexed).
    ``linked`` is given the images inserted with a parent link."""
    rows, edges = [], []
    again = 0
    loadable.ask(None if r.row is None else row_chain(r.row) for r in results)
    for result in results:
        if accept(p, loadable, result):
            assert result.row is not None
            rows.append(result.row)
            if result.parent is not None:
                edges.append((row_id(result.row), result.parent))
            again += result.name in known
    p.tx.insert_images(rows, edges)
    linked.add(child for child, _ in edges)
    return len(rows), again


def _known(p: Pass, names: Collection[str]) -> set[str]:
    """Which of these names are images in the index now."""
    ids = [PREFIX + n for n in names if len(n) == 64]
    return {i[len(PREFIX):] for i in p.tx.known_images(ids)}


def _refresh_metadata(p: Pass, names: list[str], linked: Linked) -> int:
    """Images whose metadata folder moved: new times, flags and parent edges, batched; how
    many really changed (a folder read again only because it had not settled yet may hold
    just what the index has)."""
    if not names:
        return 0
    p.report.read[METADATA] += len(names)
    stored = p.tx.image_metadata([PREFIX + n for n in names])
    values, edges = [], []
    for name in names:
        meta, problems = read_metadata(p.root.base, name)
        p.problems.note(problems)
        image_id = PREFIX + name
        if stored.get(image_id) == (meta.last_updated, meta.built_locally, meta.parent):
            continue
        values.append((image_id, meta.last_updated, meta.built_locally))
        if meta.parent is not None:
            edges.append((image_id, meta.parent))
    p.tx.refresh_metadata(values, edges)
    linked.add(child for child, _ in edges)
    return len(values)


def reread_one(p: Pass, loadable: LoadableLayers, image_id: str) -> Problem | None:
    """(Re)load one image from disk; the problem that kept it out, if any."""
    name = image_id[len(PREFIX):]
    p.problems.clear([CONTENT + name, METADATA + name])
    p.tx.delete_images([image_id])
    result = read_image(p.root.base, name)
    p.report.read[CONTENT] += 1
    if accept(p, loadable, result):
        assert result.row is not None
        p.tx.insert_image(result.row, result.parent)
    return p.problems.get(CONTENT + name)


__all__ = ["IMAGE_CHUNK", "accept", "reread_one", "sync_images"]
