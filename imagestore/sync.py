"""The restore pass, made incremental: bring the index in line with the root.

moby's restore re-reads and re-hashes every config at every start. Here each entry's
signature is kept in the index and only entries whose signature moved are read again; the
result is the same index a full rebuild would give. Broken entries are skipped and recorded
as problems, exactly where moby logs and skips them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from imagestore import changes, schema
from imagestore.changes import Progress
from imagestore.db import IN_BATCH, ROW_BATCH, batches, bulk_insert, bulk_load
from imagestore.digest import PREFIX
from imagestore.entries import CONTENT, LAYERS, METADATA, MOUNTS, REPOSITORIES, Root
from imagestore.fs import MAX_FILE_SIZE, read_optional
from imagestore.ingest import (
    ImageRead,
    Problem,
    check_layers,
    layer_rows,
    read_image,
    read_images,
    read_metadata,
)
from imagestore.layers import BadEntry
from imagestore.parallel import CHUNK, chunked_map, shared_workers
from imagestore.references import BadReferences, parse_repositories

# Configs travel back from the workers a hundred at a time: a chunk in flight holds every
# config's bytes twice (pickled and not), and a few chunks are in flight.
IMAGE_CHUNK = 100
_ASK_MAX = 2000  # layer lookups answered one by one before all chains are loaded at once
_DEPTHS = 1 << 32  # a chain's size and depth packed in one int: size * _DEPTHS + depth
Link = tuple[str | None, int, bool]  # a layer's parent chain, own size, and read this pass

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

        Chains are keyed by their bare hex, one string per chain shared by parent and child
        links, not by ``sha256:`` IDs: at 100,000 images that keeps tens of MB of copies out
        of memory."""
        changed, removed, present = self.diff(LAYERS)
        mounts_changed, mounts_removed, _ = self.diff(MOUNTS)
        if mounts_changed or mounts_removed:
            self._sync_mounts()
        if not changed and not removed:
            return False
        t = schema.layers
        broken = {path[len(LAYERS):] for path in self.problem_paths(LAYERS)}
        stale = changed | removed | broken
        self.clear(LAYERS + n for n in stale)
        names = sorted(n for n in changed | broken if n in present)
        del changed, removed, present
        # Only what chain sizes need stays in memory: chain -> (parent, own size, read now).
        links: dict[str, Link] = {}
        pool: dict[str, str] = {}
        stored: dict[str, tuple[int, int]] = {}
        for r in self.conn.execute(select(t.c.chain_id, t.c.parent_id, t.c.diff_size, t.c.size,
                                          t.c.depth)):
            chain = _bare(r.chain_id, pool)
            stored[chain] = (r.size, r.depth)
            if chain not in stale:
                links[chain] = (r.parent_id and _bare(r.parent_id, pool), r.diff_size, False)
        del stale
        for done, checked in enumerate(chunked_map(check_layers, self.root.base, names)):
            self.tell("layers", done * CHUNK + len(checked), len(names))
            for name, parent, diff_size, problem in checked:
                if problem is not None:
                    self.note([problem])
                    continue
                chain = _bare(name, pool)
                links[chain] = (parent and _bare(parent, pool), diff_size, True)
        del names
        valid = _resolve_layers(links, self)
        gone = [PREFIX + c for c in stored if c not in valid or links[c][2]]
        for chunk in batches(gone, IN_BATCH):
            self.conn.execute(delete(t).where(t.c.chain_id.in_(chunk)))
        # Folders read now are (re)inserted whole; the rest may only need new chain sizes.
        to_write = sorted(c for c, (_, _, new) in links.items() if new and c in valid)
        with bulk_load(self.conn, [t], len(to_write)):
            for results in chunked_map(layer_rows, self.root.base, to_write):
                rows = []
                for chain, diff_id, cache_id in results:
                    parent, diff_size, _ = links[chain]
                    size, depth = divmod(valid[chain], _DEPTHS)
                    rows.append({"chain_id": PREFIX + chain, "diff_id": diff_id,
                                 "parent_id": parent and PREFIX + parent,
                                 "diff_size": diff_size, "size": size, "cache_id": cache_id,
                                 "depth": depth})
                bulk_insert(self.conn, t, rows)
        for chain, packed in valid.items():
            size, depth = divmod(packed, _DEPTHS)
            if chain in stored and not links[chain][2] and stored[chain] != (size, depth):
                self.conn.execute(update(t).where(t.c.chain_id == PREFIX + chain)
                                  .values(size=size, depth=depth))
        self._chains = {bytes.fromhex(c) for c in valid}
        return bool(gone) or any(c not in stored for c in valid)

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
            self._chains = {_digest(c) for c in self.conn.scalars(select(schema.layers.c.chain_id))}
        return _digest(chain) in self._chains

    # -- images -----------------------------------------------------------------------------
    def sync_images(self, layers_moved: bool, report: SyncReport) -> None:
        t = schema.images
        changed, removed, present = self.diff(CONTENT)
        meta_changed, meta_removed, meta_present = self.diff(METADATA)
        total = self.conn.scalar(select(func.count()).select_from(t)) or 0
        if not (changed or removed or meta_changed or meta_removed or layers_moved):
            report.unchanged = total
            return
        reread = set(changed)
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
        loaded = 0
        loaded_known = 0
        names = [(n, n in meta_present) for n in sorted(reread)]
        del changed, removed, present, meta_changed, meta_removed, meta_present, reread
        with bulk_load(self.conn, [t, schema.parents], len(names)):
            for done, results in enumerate(chunked_map(read_images, self.root.base, names,
                                                       chunk=IMAGE_CHUNK)):
                self.tell("images", done * IMAGE_CHUNK + len(results), len(names))
                rows, edges = [], []
                for result in results:
                    if self._accept(result):
                        assert result.row is not None
                        rows.append(result.row)
                        if result.parent is not None:
                            edges.append({"child_id": result.row["id"],
                                          "parent_id": result.parent})
                        loaded_known += result.name in known
                bulk_insert(self.conn, t, rows)
                bulk_insert(self.conn, schema.parents, edges)
                loaded += len(rows)
        self.clear(METADATA + n for n in meta_only)
        self._refresh_metadata(sorted(meta_only))
        report.added = loaded - loaded_known
        report.removed = len(gone) - loaded_known
        report.changed = loaded_known + len(meta_only)
        report.unchanged = total - len(gone) - len(meta_only)

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
        row = result.row
        if row is not None and row["chain_id"] is not None \
                and not self.layer_exists(row["chain_id"]):
            self.note([Problem(CONTENT + result.name, "missing-layer",
                               f"not restoring image: layer {row['chain_id']} does not exist")])
            return False
        self.note(result.problems)
        return row is not None

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


def _bare(chain: str, pool: dict[str, str]) -> str:
    """A chain ID as bare hex, one string per chain in ``pool`` (a parent and its children
    share it); unlike ``sys.intern``'s, the table goes away with the pass."""
    key = chain[len(PREFIX):] if chain.startswith(PREFIX) else chain
    return pool.setdefault(key, key)


def _digest(chain: str) -> bytes:
    try:
        return bytes.fromhex(chain[len(PREFIX):])
    except ValueError:
        return b""


def _resolve_layers(links: dict[str, Link], sync: _Pass) -> dict[str, int]:
    """Layers moby would load (a layer loads only if its parent does): chain -> size of the
    whole chain * ``_DEPTHS`` + depth (one int, not a tuple: 100,000s of them are alive)."""
    out: dict[str, int] = {}
    failed: set[str] = set()
    for start in links:
        stack: list[str] = []
        on_stack: set[str] = set()  # a cycle check that stays linear in a deep chain
        cid: str | None = start
        while cid is not None and cid not in out and cid not in failed:
            if cid in on_stack or cid not in links:
                break
            stack.append(cid)
            on_stack.add(cid)
            cid = links[cid][0]
        ok = cid is None or cid in out
        for c in reversed(stack):
            parent, diff_size, _ = links[c]
            if ok:
                below = 0 if parent is None else out[parent]
                out[c] = below + diff_size * _DEPTHS + 1
            else:
                failed.add(c)
                sync.note([Problem(LAYERS + c, "bad-layer",
                                   f"layer not loaded: parent {PREFIX}{parent} cannot be "
                                   f"loaded")])
    return out


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
        conn.execute(insert(schema.images), [result.row])
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
