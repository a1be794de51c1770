"""The restore pass, made incremental: bring the index in line with the root.

moby's restore re-reads and re-hashes every config at every start. Here each entry's
signature is kept in the index and only entries whose signature moved are read again; the
result is the same index a full rebuild would give. Broken entries are skipped and recorded
as problems, exactly where moby logs and skips them.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from imagestore import chains, changes, schema
from imagestore.changes import Progress, under
from imagestore.db import IN_BATCH, ROW_BATCH, batches, bulk_insert, bulk_load
from imagestore.digest import PREFIX, is_hex64
from imagestore.entries import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root, Scan
from imagestore.fs import MAX_FILE_SIZE, read_optional
from imagestore.ingest import (
    IMAGE_COLUMNS,
    ROW_CHAIN,
    ROW_ID,
    ImageRead,
    LayerCheck,
    Problem,
    check_layers,
    read_image,
    read_images,
    read_metadata,
    unpack_ids,
)
from imagestore.layers import BadEntry
from imagestore.parallel import CHUNK, chunked_map, shared_workers, started_map
from imagestore.references import BadReferences, parse_repositories

# Configs travel back from the workers 250 at a time: a chunk in flight holds every config's
# bytes twice (pickled and not), and a few chunks are in flight; smaller chunks cost more in
# hand-offs than they save in memory (100: +0.5 s on a cold sync of 100,000, 500: +6 MB).
IMAGE_CHUNK = 250
# Layer checks a new index starts before it asks for any: about what two workers do while
# this process saves the listing's signatures (a few MB of results at most).
LAYER_CHUNKS_AHEAD = 16
EDGE_COLUMNS = ("child_id", "parent_id")
LAYER_COLUMNS = ("chain_id", "diff_id", "parent_id", "diff_size", "size", "cache_id", "depth")
_ASK_MAX = 2000  # layer lookups answered one by one before all chains are loaded at once

__all__ = ["Problem", "Progress", "Root", "SyncReport", "all_problems", "ingest_image", "run",
           "set_parent_edge"]


@dataclass
class SyncReport:
    """What a sync did to the index's images, and every problem the store has now."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "removed": self.removed, "changed": self.changed,
            "unchanged": self.unchanged, "skipped": self.skipped,
            "problems": [{"path": p.path, "kind": p.kind, "reason": p.reason}
                         for p in self.problems],
        }


class _Pass(changes.Tracker):
    """One sync: decides what to re-read, reads it, and writes the differences."""

    def __init__(self, conn: Connection, root: Root, *, full: bool = False,
                 progress: Progress | None = None, tidy: bool = False) -> None:
        super().__init__(conn, root, full=full, progress=progress, tidy=tidy)
        self._chains: set[bytes] | None = None  # loadable layers, as raw digests
        self._asked: dict[str, bool] = {}

    # -- layers -----------------------------------------------------------------------------
    def sync_layers(self) -> bool:
        """Update layers and mounts; True when the set of loadable layers changed.

        Chains are keyed by their raw digest, one object per chain shared by parent and
        child links (``chains.key``); the loadable set is kept afterwards as it is."""
        early: list[tuple[dict[bytes, bytes], list[bytes], Iterator[list[LayerCheck]]]] = []

        def check_all(current: Scan) -> None:
            # Every folder is read (a new index): the workers start on them now, while this
            # process saves what the listing found.
            pool: dict[bytes, bytes] = {}
            keys = [chains.key(n, pool) for n in current.names]
            early.append((pool, keys, started_map(check_layers, self.root.base, keys,
                                                  ahead=LAYER_CHUNKS_AHEAD)))

        changed, removed, present = self.diff(
            LAYERS, scanned=check_all if self._no_layers_indexed() else None)
        mounts_changed, mounts_removed, _ = self.diff(MOUNTS)
        if mounts_changed or mounts_removed:
            self._sync_mounts()
        if not changed and not removed:
            return False
        t = schema.layers
        broken = {path[len(LAYERS):] for path in self.problem_paths(LAYERS)}
        self.clear(LAYERS + n for n in itertools.chain(changed, removed, broken))
        if early:
            pool, keys, checks = early.pop()
        else:
            pool = {}
            # The scan's hex names are let go before the links grow (16 MB at 100,000).
            keys = [chains.key(n, pool) for n in sorted(changed | broken)
                    if is_hex64(n) and n in present]
            checks = chunked_map(check_layers, self.root.base, keys)
        # Only what chain sizes and new rows need stays in memory: chain -> Link.
        links: dict[bytes, chains.Link] = {}
        stored: dict[bytes, tuple[int, int]] = {}
        junk: list[str] = []  # rows no sync writes (an index edited by hand): dropped
        for r in self.conn.execute(select(t.c.chain_id, t.c.parent_id, t.c.diff_size, t.c.size,
                                          t.c.depth)):
            try:
                chain = chains.key(r.chain_id, pool)
                parent = None if r.parent_id is None else chains.key(r.parent_id, pool)
            except ValueError:
                junk.append(r.chain_id)
                continue
            stored[chain] = (r.size, r.depth)
            name = chain.hex()
            if name not in changed and name not in removed and name not in broken:
                links[chain] = (parent, r.diff_size, b"")
        del changed, removed, present, broken
        for done, checked in enumerate(checks):
            self.tell("layers", done * CHUNK + len(checked), len(keys))
            start = done * CHUNK
            for chain, (parent, diff_size, ids, problem) in zip(
                    keys[start : start + len(checked)], checked, strict=True):
                if problem is not None:
                    self.note([problem])
                    continue
                links[chain] = (parent and pool.setdefault(parent, parent), diff_size, ids)
        del keys, pool
        valid, unloadable = chains.resolve(links)
        self.note(unloadable)
        # The workers scan the images' entries while this process writes the layers.
        self.start(CONTENT)
        self.start(METADATA)
        gone = junk + [PREFIX + c.hex() for c in stored if c not in valid or links[c][2]]
        for chunk in batches(gone, IN_BATCH):
            self.conn.execute(delete(t).where(t.c.chain_id.in_(chunk)))
        # Folders read now are (re)inserted whole; the rest may only need new chain sizes.
        to_write = sorted(c for c, link in links.items() if link[2] and c in valid)
        with bulk_load(self.conn, [t], len(to_write)):
            for part in batches(to_write, ROW_BATCH):
                rows = []
                for chain in part:
                    parent, diff_size, ids = links[chain]
                    diff_id, cache_id = unpack_ids(ids)
                    size, depth = chains.split(valid[chain])
                    rows.append((PREFIX + chain.hex(), diff_id,
                                 None if parent is None else PREFIX + parent.hex(), diff_size,
                                 size, cache_id, depth))
                bulk_insert(self.conn, t, rows, LAYER_COLUMNS)
            del to_write
            for chain, packed in valid.items():
                size, depth = chains.split(packed)
                if chain in stored and not links[chain][2] and stored[chain] != (size, depth):
                    self.conn.execute(update(t).where(t.c.chain_id == PREFIX + chain.hex())
                                      .values(size=size, depth=depth))
            del links
            # Grown, not presized from the dict: a table of half the size (4 MB at 100,000).
            self._chains = {chain for chain in valid}
            del valid
        return bool(gone) or any(c not in stored for c in self._chains)

    def _no_layers_indexed(self) -> bool:
        """A new index, or a full pass: every layer folder will be read."""
        if self.full:
            return True
        lt, b = schema.layers, schema.entry_buckets
        return (self.conn.execute(select(lt.c.chain_id).limit(1)).first() is None and
                self.conn.execute(select(b.c.prefix).where(under(b.c.prefix, LAYERS))
                                  .limit(1)).first() is None)

    def _sync_mounts(self) -> None:
        layerdb = self.root.layerdb
        rows = []
        self.conn.execute(delete(schema.mounts))
        self.clear(self.problem_paths(MOUNTS))
        for name in sorted(layerdb.mount_names()):
            try:
                m = layerdb.read_mount(name)
            except BadEntry as exc:
                self.note([Problem(MOUNTS + name, "bad-mount", f"mount not loaded: {exc}")])
                continue
            rows.append({"name": m.name, "mount_id": m.mount_id, "init_id": m.init_id,
                         "parent_id": m.parent})
        if rows:
            self.conn.execute(insert(schema.mounts), rows)

    def layer_exists(self, chain: str) -> bool:
        """Few questions are asked one by one; many load every chain once (a cold sync)."""
        if self._chains is None:
            if len(self._asked) < _ASK_MAX:
                if chain not in self._asked:
                    lt = schema.layers
                    self._asked[chain] = self.conn.scalar(
                        select(lt.c.chain_id).where(lt.c.chain_id == chain)) is not None
                return self._asked[chain]
            self._chains = {chains.digest(c)
                            for c in self.conn.scalars(select(schema.layers.c.chain_id))}
        return chains.digest(chain) in self._chains

    # -- images -----------------------------------------------------------------------------
    def sync_images(self, layers_moved: bool, report: SyncReport) -> None:
        t = schema.images
        changed, removed, present = self.diff(CONTENT)
        meta_changed, meta_removed, meta_present = self.diff(METADATA)
        total = self.conn.scalar(select(func.count()).select_from(t)) or 0
        if not (changed or removed or meta_changed or meta_removed or layers_moved):
            report.unchanged = total
            return
        reread = changed  # not a copy: ``changed`` is not used again
        if layers_moved:
            # Images skipped for a missing layer may load now; loaded ones may have lost theirs.
            reread |= {n for n in (p[len(CONTENT):] for p in self.problem_paths(CONTENT))
                       if n in present}
            orphans = self.conn.scalars(select(t.c.id).where(
                t.c.chain_id.is_not(None), t.c.chain_id.not_in(select(schema.layers.c.chain_id))))
            reread |= {i[len(PREFIX):] for i in orphans}
        known = self._known(reread | removed | meta_changed | meta_removed) if total else set()
        meta_only = ((meta_changed | meta_removed) & known) - reread - removed
        gone = sorted(PREFIX + n for n in (removed | reread) & known)
        for chunk in batches(gone, IN_BATCH):
            self.conn.execute(delete(t).where(t.c.id.in_(chunk)))
        if self.old_problems:
            for name in removed | reread:
                self.clear((CONTENT + name, METADATA + name))
        loaded = loaded_known = 0
        # Images with a metadata folder, then those without: two lists of names cost a
        # fraction of one list of (name, flag) pairs (6 MB at 100,000 images).
        ordered = sorted(reread)
        groups = {True: [n for n in ordered if n in meta_present],
                  False: [n for n in ordered if n not in meta_present]}
        count = len(ordered)
        del changed, removed, present, meta_changed, meta_removed, meta_present, reread, ordered
        done = 0
        with bulk_load(self.conn, [t, schema.parents], count):
            for has_metadata, group in groups.items():
                read = functools.partial(read_images, has_metadata=has_metadata)
                for results in chunked_map(read, self.root.base, group, chunk=IMAGE_CHUNK):
                    done += len(results)
                    self.tell("images", done, count)
                    rows, rows_known = self._load(results, known)
                    loaded += rows
                    loaded_known += rows_known
        self.clear(METADATA + n for n in meta_only)
        self._refresh_metadata(sorted(meta_only))
        report.added = loaded - loaded_known
        report.removed = len(gone) - loaded_known
        report.changed = loaded_known + len(meta_only)
        report.unchanged = total - len(gone) - len(meta_only)

    def _load(self, results: list[ImageRead], known: set[str]) -> tuple[int, int]:
        """Insert what a chunk of reads may add; (rows inserted, of those already indexed)."""
        rows, edges = [], []
        again = 0
        for result in results:
            if self._accept(result):
                assert result.row is not None
                rows.append(result.row)
                if result.parent is not None:
                    edges.append((result.row[ROW_ID], result.parent))
                again += result.name in known
        bulk_insert(self.conn, schema.images, rows, IMAGE_COLUMNS)
        bulk_insert(self.conn, schema.parents, edges, EDGE_COLUMNS)
        return len(rows), again

    def _known(self, names: set[str]) -> set[str]:
        """Which of these names are images in the index now."""
        t = schema.images
        ids = sorted(PREFIX + n for n in names if len(n) == 64)
        known: set[str] = set()
        for chunk in batches(ids, IN_BATCH):
            known.update(i[len(PREFIX):] for i in self.conn.scalars(
                select(t.c.id).where(t.c.id.in_(chunk))))
        return known

    def _accept(self, result: ImageRead) -> bool:
        """Record the problems of a read; True when its row may enter the index.

        An image that is not restored has only the one problem that stopped it: its metadata
        is not looked at (as in moby), so an incremental sync and a rebuild agree."""
        chain = None if result.row is None else result.row[ROW_CHAIN]
        if chain is not None and not self.layer_exists(chain):
            self.note([Problem(CONTENT + result.name, "missing-layer",
                               f"not restoring image: layer {chain} does not exist")])
            return False
        self.note(result.problems)
        return result.row is not None

    def _refresh_metadata(self, names: list[str]) -> None:
        """Images whose metadata alone changed: new times, flags and parent edges, batched."""
        t, p = schema.images, schema.parents
        values, edges = [], []
        for name in names:
            meta, problems = read_metadata(self.root.base, name)
            self.note(problems)
            values.append({"image": PREFIX + name, "last": meta["last_updated"],
                           "built": meta["built_locally"]})
            if meta["parent"] is not None:
                edges.append({"child_id": PREFIX + name, "parent_id": meta["parent"]})
        if not values:
            return
        self.conn.execute(update(t).where(t.c.id == bindparam("image")).values(
            last_updated=bindparam("last"), built_locally=bindparam("built")),
            values)
        for chunk in batches([PREFIX + n for n in names], IN_BATCH):
            self.conn.execute(delete(p).where(p.c.child_id.in_(chunk)))
        bulk_insert(self.conn, p, edges)

    # -- tags -------------------------------------------------------------------------------
    def sync_tags(self) -> None:
        changed, removed, _ = self.diff(REPOSITORIES)
        if not changed and not removed:
            return
        self.conn.execute(delete(schema.tags))
        self.clear(self.problem_paths(REPOSITORIES))
        try:
            raw = read_optional(self.root.repositories, limit=MAX_FILE_SIZE)
        except OSError as exc:
            self.note([Problem(REPOSITORIES, "bad-references",
                               f"unreadable: {exc.strerror or exc}")])
            return
        if raw is None:
            return
        try:
            refs, bad = parse_repositories(raw)
        except BadReferences as exc:
            self.note([Problem(REPOSITORIES, "bad-references", f"tags not loaded: {exc}")])
            return
        self.note(Problem(f"{REPOSITORIES}#{i}", "bad-reference", reason)
                  for i, reason in enumerate(bad))
        rows = [{"ref": r.ref, "repository": r.repository, "tag": r.tag, "digest": r.digest,
                 "image_id": r.image_id} for r in refs]
        for chunk in batches(rows, ROW_BATCH):
            bulk_insert(self.conn, schema.tags, chunk)


def all_problems(conn: Connection) -> list[Problem]:
    p = schema.problems
    return [Problem(r.path, r.kind, r.reason) for r in conn.execute(select(p).order_by(p.c.path))]


def set_parent_edge(conn: Connection, image_id: str, parent: str | None) -> None:
    conn.execute(delete(schema.parents).where(schema.parents.c.child_id == image_id))
    if parent is not None:
        conn.execute(insert(schema.parents).values(child_id=image_id, parent_id=parent))


def ingest_image(conn: Connection, root: Root, image_id: str) -> Problem | None:
    """(Re)load one image from disk after the store wrote it; the problem if it cannot load."""
    name = image_id[len(PREFIX):]
    one = _Pass(conn, root)
    one.clear([CONTENT + name, METADATA + name])
    conn.execute(delete(schema.images).where(schema.images.c.id == image_id))
    result = read_image(root.base, name)
    if one._accept(result):
        assert result.row is not None
        conn.execute(insert(schema.images), [dict(zip(IMAGE_COLUMNS, result.row, strict=True))])
        set_parent_edge(conn, image_id, result.parent)
    one.save_problems()
    changes.record(conn, root, [CONTENT + name, METADATA + name])
    return one.problems.get(CONTENT + name)


def run(conn: Connection, root: Root, *, full: bool = False,
        progress: Progress | None = None, tidy: bool = False) -> SyncReport:
    """Sync the index on ``conn`` (inside the caller's write transaction) with ``root``.

    ``progress(phase, done, total)`` is called as layers and images are read; ``tidy``
    removes what interrupted writes left behind (only for a writable root, under the
    writers' lock)."""
    if full:
        for table in (schema.parents, schema.images, schema.layers, schema.mounts, schema.tags,
                      schema.problems, schema.entry_buckets):
            conn.execute(delete(table))
    sync = _Pass(conn, root, full=full, progress=progress, tidy=tidy)
    report = SyncReport()
    with shared_workers():
        layers_moved = sync.sync_layers()
        sync.sync_images(layers_moved, report)
    sync.sync_tags()
    sync.save_problems()
    report.problems = all_problems(conn)
    report.skipped = sum(1 for p in report.problems if p.path.startswith(CONTENT))
    return report
