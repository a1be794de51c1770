"""The restore pass, made incremental: bring the index in line with the root.

moby's restore re-reads and re-hashes every config at every start. Here each entry's
signature (size, mtime, inode of its files) is kept in the index and only entries whose
signature moved are read again; the result is the same index a full rebuild would give.
Broken entries are skipped and recorded as problems, exactly where moby logs and skips.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from imagestore import schema
from imagestore.digest import PREFIX, chain_id, digest_of, is_hex64, is_image_id
from imagestore.errors import InvalidImageConfig
from imagestore.fs import (
    METADATA_KEYS,
    TEMP_PREFIX,
    ImageDB,
    files_signature,
    read_optional,
    read_regular,
    signature,
)
from imagestore.image import parse_config, parse_time
from imagestore.layers import MOUNT_FILES, BadEntry, Layer, LayerDB
from imagestore.references import BadReferences, parse_repositories

CONTENT = "imagedb/content/sha256/"
METADATA = "imagedb/metadata/sha256/"
LAYERS = "layerdb/sha256/"
MOUNTS = "layerdb/mounts/"
REPOSITORIES = "repositories.json"
BATCH = 5000


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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


@dataclass(frozen=True)
class Root:
    """An image root on disk: ``<data-root>/image/<driver>``."""

    path: Path

    @property
    def base(self) -> str:
        return str(self.path)

    @property
    def imagedb(self) -> ImageDB:
        return ImageDB(self.path / "imagedb", create=False)

    @property
    def layerdb(self) -> LayerDB:
        return LayerDB(self.path / "layerdb")

    @property
    def repositories(self) -> Path:
        return self.path / REPOSITORIES


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _scandir(folder: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return


def scan(root: Root) -> dict[str, str]:
    """The current signature of every entry under the root, keyed by its relative path.

    One ``lstat`` per content file and per layer folder (dockerd writes a layer folder
    elsewhere and renames it into place, never rewriting its files), one per metadata file
    (other tools rewrite those in place); ``sync --full`` re-reads everything regardless.
    """
    base = root.base
    sigs: dict[str, str] = {}
    for entry in _scandir(f"{base}/{CONTENT}"):
        sigs[CONTENT + entry.name] = signature(entry.stat(follow_symlinks=False))
    for entry in _scandir(f"{base}/{METADATA}"):
        if is_hex64(entry.name) and entry.is_dir(follow_symlinks=False):
            sigs[METADATA + entry.name] = files_signature(
                f"{base}/{METADATA}{entry.name}", METADATA_KEYS)
    for entry in _scandir(f"{base}/{LAYERS}"):
        if is_hex64(entry.name) and entry.is_dir(follow_symlinks=False):
            sigs[LAYERS + entry.name] = signature(entry.stat(follow_symlinks=False))
    for entry in _scandir(f"{base}/{MOUNTS}"):
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            sigs[MOUNTS + entry.name] = files_signature(f"{base}/{MOUNTS}{entry.name}",
                                                        MOUNT_FILES)
    try:
        sigs[REPOSITORIES] = signature(os.lstat(f"{base}/{REPOSITORIES}"))
    except FileNotFoundError:
        pass
    return sigs


def entry_signature(root: Root, path: str) -> str | None:
    """The signature ``scan`` would give one entry now; ``None`` when it is gone."""
    full = f"{root.base}/{path}"
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return None
    if path.startswith(METADATA) or path.startswith(MOUNTS):
        if not stat.S_ISDIR(st.st_mode):
            return None
        return files_signature(full, METADATA_KEYS if path.startswith(METADATA) else MOUNT_FILES)
    if path.startswith(LAYERS) and not stat.S_ISDIR(st.st_mode):
        return None
    return signature(st)


def _batched(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


class _Pass:
    """One sync: decides what to re-read, reads it, and writes the differences."""

    def __init__(self, conn: Connection, root: Root, current: dict[str, str]) -> None:
        self.conn = conn
        self.root = root
        self.current = current  # what is on disk now (scan's result)
        self.problems: dict[str, Problem] = {}
        self.cleared: set[str] = set()  # paths whose old problem no longer applies
        self._chains: set[str] | None = None

    def problem(self, path: str, kind: str, reason: str) -> None:
        self.problems[path] = Problem(path, kind, reason)

    # -- layers -----------------------------------------------------------------------------
    def sync_layers(self, changed: set[str], removed: set[str]) -> bool:
        """Update layers and mounts; True when the set of loadable layers changed."""
        layer_changed = {p for p in changed | removed if p.startswith(LAYERS)}
        mount_changed = {p for p in changed | removed if p.startswith(MOUNTS)}
        touched = False
        if layer_changed:
            touched = self._sync_layer_rows(layer_changed)
        if mount_changed:
            self._sync_mounts()
        return touched

    def _sync_layer_rows(self, changed_paths: set[str]) -> bool:
        t = schema.layers
        stored = {
            r.chain_id: r for r in self.conn.execute(select(t))
        }
        broken = {r.path for r in self.conn.execute(
            select(schema.problems.c.path).where(schema.problems.c.path.like(LAYERS + "%")))}
        reread = {p for p in changed_paths | broken if p in self.current}
        records: dict[str, Layer] = {
            cid: Layer(cid, r.diff_id, r.diff_size, r.cache_id, r.parent_id)
            for cid, r in stored.items()
        }
        for path in changed_paths | broken:
            records.pop(PREFIX + path[len(LAYERS):], None)
            self.cleared.add(path)
        layerdb = self.root.layerdb
        for path in sorted(reread):
            name = path[len(LAYERS):]
            try:
                records[PREFIX + name] = layerdb.read_layer(name)
            except BadEntry as exc:
                self.problem(path, "bad-layer", f"layer not loaded: {exc}")
        valid = _resolve_layers(records, self)
        self._chains = set(valid)
        new_rows = []
        updates = []
        for cid, (layer, size, depth) in valid.items():
            row = {"chain_id": cid, "diff_id": layer.diff_id, "parent_id": layer.parent,
                   "diff_size": layer.size, "size": size, "cache_id": layer.cache_id,
                   "depth": depth}
            old = stored.get(cid)
            if old is None:
                new_rows.append(row)
            elif (old.diff_id, old.parent_id, old.diff_size, old.size, old.cache_id,
                  old.depth) != (layer.diff_id, layer.parent, layer.size, size,
                                 layer.cache_id, depth):
                updates.append(row)
        gone = [cid for cid in stored if cid not in valid]
        for chunk in _batched([{"c": c} for c in gone]):
            self.conn.execute(delete(t).where(t.c.chain_id.in_([r["c"] for r in chunk])))
        for chunk in _batched(new_rows):
            self.conn.execute(insert(t), chunk)
        for row in updates:
            self.conn.execute(update(t).where(t.c.chain_id == row["chain_id"]).values(**row))
        return bool(new_rows or gone)

    def _sync_mounts(self) -> None:
        layerdb = self.root.layerdb
        rows = []
        self.conn.execute(delete(schema.mounts))
        old = self.conn.execute(
            select(schema.problems.c.path).where(schema.problems.c.path.like(MOUNTS + "%"))
        )
        self.cleared.update(r.path for r in old)
        for name in sorted(layerdb.mount_names()):
            try:
                m = layerdb.read_mount(name)
            except BadEntry as exc:
                self.problem(MOUNTS + name, "bad-mount", f"mount not loaded: {exc}")
                continue
            rows.append({"name": m.name, "mount_id": m.mount_id, "init_id": m.init_id,
                         "parent_id": m.parent})
        if rows:
            self.conn.execute(insert(schema.mounts), rows)

    # -- images -----------------------------------------------------------------------------
    def sync_images(self, changed: set[str], removed: set[str], layers_moved: bool,
                    report: SyncReport) -> None:
        t = schema.images
        content_changed = {p[len(CONTENT):] for p in changed if p.startswith(CONTENT)}
        content_removed = {p[len(CONTENT):] for p in removed if p.startswith(CONTENT)}
        meta_changed = {p[len(METADATA):] for p in changed | removed if p.startswith(METADATA)}
        known = {r[0][len(PREFIX):] for r in self.conn.execute(select(t.c.id))}

        reread = set(content_changed)
        if layers_moved:
            # Images skipped for a missing layer may load now; loaded ones may have lost theirs.
            reread |= {r.path[len(CONTENT):] for r in self.conn.execute(
                select(schema.problems.c.path).where(schema.problems.c.path.like(CONTENT + "%")))
                if r.path in self.current}
            orphans = self.conn.execute(
                select(t.c.id).where(t.c.chain_id.is_not(None),
                                     t.c.chain_id.not_in(select(schema.layers.c.chain_id))))
            reread |= {r.id[len(PREFIX):] for r in orphans}
        # Metadata of a loaded image moved but its content did not: re-read the metadata only.
        meta_only = (meta_changed & known) - reread - content_removed
        rows = []
        for name in sorted(reread):
            self.cleared.add(CONTENT + name)
            self.cleared.add(METADATA + name)
            row = self._ingest(name)
            if row is not None:
                rows.append(row)
        gone = (content_removed | reread) & known
        for name in content_removed:
            self.cleared.add(CONTENT + name)
            self.cleared.add(METADATA + name)
        ids_gone = [PREFIX + h for h in gone]
        for i in range(0, len(ids_gone), BATCH):
            self.conn.execute(delete(t).where(t.c.id.in_(ids_gone[i : i + BATCH])))
        image_rows = [r for r, _ in rows]
        for chunk in _batched(image_rows):
            self.conn.execute(insert(t), chunk)
        edges = [{"child_id": r["id"], "parent_id": p} for r, p in rows if p is not None]
        for chunk in _batched(edges):
            self.conn.execute(insert(schema.parents), chunk)
        for name in sorted(meta_only):
            self.cleared.add(METADATA + name)
            self._refresh_metadata(PREFIX + name)
        loaded = {r["id"][len(PREFIX):] for r in image_rows}
        report.added = len(loaded - known)
        report.removed = len(gone - loaded)
        report.changed = len(loaded & known) + len(meta_only)
        report.unchanged = len(known) - len(gone) - len(meta_only)

    def _ingest(self, name: str) -> tuple[dict[str, Any], str | None] | None:
        path = CONTENT + name
        if name.startswith(TEMP_PREFIX):
            self.problem(path, "temp-file", "temporary file left by an interrupted write")
            return None
        if not is_hex64(name):
            self.problem(path, "invalid-name", "name is not 64 lowercase hex digits; skipped")
            return None
        image_id = PREFIX + name
        try:
            raw = read_regular(f"{self.root.base}/{path}")
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problem(path, "unreadable", f"invalid image: {exc.strerror or exc}")
            return None
        if digest_of(raw) != image_id:
            self.problem(path, "digest-mismatch", f"invalid image: failed to verify: {image_id}")
            return None
        try:
            fields = parse_config(raw)
        except InvalidImageConfig as exc:
            self.problem(path, "invalid-config", f"invalid image: {exc}")
            return None
        diff_ids = fields["rootfs"]["diff_ids"]
        chain = chain_id(diff_ids)
        if chain is not None and not self._layer_exists(chain):
            self.problem(path, "missing-layer",
                         f"not restoring image: layer {chain} does not exist")
            return None
        meta = self._read_metadata(image_id)

        def text(key: str) -> str:
            value = fields.get(key)
            return value if isinstance(value, str) else ""

        created = fields.get("created")
        row = {
            "id": image_id, "created": created if isinstance(created, str) else None,
            "os": text("os"), "architecture": text("architecture"), "variant": text("variant"),
            "author": text("author"), "comment": text("comment"),
            "docker_version": text("docker_version"), "chain_id": chain,
            "layer_count": len(diff_ids), "config_size": len(raw), "raw": raw,
            "last_updated": meta["last_updated"], "built_locally": meta["built_locally"],
        }
        return row, meta["parent"]

    def _layer_exists(self, chain: str) -> bool:
        if self._chains is None:
            self._chains = set(self.conn.scalars(select(schema.layers.c.chain_id)))
        return chain in self._chains

    def _read_metadata(self, image_id: str) -> dict[str, Any]:
        name = image_id[len(PREFIX):]
        path = METADATA + name
        folder = f"{self.root.base}/{path}/"
        out: dict[str, Any] = {"parent": None, "last_updated": None, "built_locally": False}
        try:
            parent = read_optional(folder + "parent")
            last = read_optional(folder + "lastUpdated")
            built = read_optional(folder + "builtLocally")
        except OSError as exc:
            self.problem(path, "bad-metadata", f"metadata unreadable: {exc.strerror or exc}")
            return out
        if parent is not None:
            text = parent.decode("utf-8", "replace")
            if is_image_id(text):
                out["parent"] = text
            else:
                self.problem(path, "bad-parent",
                             f"parent file does not hold an image ID: {text[:80]!r}")
        if last:
            text = last.decode("utf-8", "replace")
            try:
                parse_time(text)
                out["last_updated"] = text
            except InvalidImageConfig:
                self.problem(path, "bad-metadata", f"lastUpdated is not RFC 3339: {text[:40]!r}")
        out["built_locally"] = built is not None and built[:1] == b"\x01"
        return out

    def _refresh_metadata(self, image_id: str) -> None:
        meta = self._read_metadata(image_id)
        self.conn.execute(
            update(schema.images).where(schema.images.c.id == image_id).values(
                last_updated=meta["last_updated"], built_locally=meta["built_locally"]))
        set_parent_edge(self.conn, image_id, meta["parent"])

    # -- tags -------------------------------------------------------------------------------
    def sync_tags(self) -> None:
        self.conn.execute(delete(schema.tags))
        old = self.conn.execute(select(schema.problems.c.path).where(
            schema.problems.c.path.like(REPOSITORIES + "%")))
        self.cleared.update(r.path for r in old)
        try:
            raw = read_optional(self.root.repositories)
        except OSError as exc:
            self.problem(REPOSITORIES, "bad-references", f"unreadable: {exc.strerror or exc}")
            return
        if raw is None:
            return
        try:
            refs, bad = parse_repositories(raw)
        except BadReferences as exc:
            self.problem(REPOSITORIES, "bad-references", f"tags not loaded: {exc}")
            return
        for i, reason in enumerate(bad):
            self.problem(f"{REPOSITORIES}#{i}", "bad-reference", reason)
        rows = [{"ref": r.ref, "repository": r.repository, "tag": r.tag, "digest": r.digest,
                 "image_id": r.image_id} for r in refs]
        for chunk in _batched(rows):
            self.conn.execute(insert(schema.tags), chunk)

    # -- bookkeeping ------------------------------------------------------------------------
    def save_problems(self) -> None:
        p = schema.problems
        stale = sorted(self.cleared | set(self.problems))
        for i in range(0, len(stale), BATCH):
            self.conn.execute(delete(p).where(p.c.path.in_(stale[i : i + BATCH])))
        found = now_text()
        rows = [{"path": x.path, "kind": x.kind, "reason": x.reason, "found_at": found}
                for x in self.problems.values()]
        for chunk in _batched(rows):
            self.conn.execute(insert(p), chunk)


def all_problems(conn: Connection) -> list[Problem]:
    p = schema.problems
    return [Problem(r.path, r.kind, r.reason) for r in conn.execute(select(p).order_by(p.c.path))]


def _resolve_layers(records: dict[str, Layer], sync: _Pass) -> dict[str, tuple[Layer, int, int]]:
    """Layers moby would load (a layer loads only if its parent does), with chain size and depth."""
    out: dict[str, tuple[Layer, int, int]] = {}
    failed: set[str] = set()
    for start in records:
        stack = []
        cid: str | None = start
        while cid is not None and cid not in out and cid not in failed:
            if cid in stack or cid not in records:
                break
            stack.append(cid)
            cid = records[cid].parent
        ok = cid is None or cid in out
        for c in reversed(stack):
            layer = records[c]
            if ok:
                base = (0, 0) if layer.parent is None else out[layer.parent][1:]
                out[c] = (layer, base[0] + layer.size, base[1] + 1)
            else:
                failed.add(c)
                sync.problem(LAYERS + c[len(PREFIX):], "bad-layer",
                             f"layer not loaded: parent {layer.parent} cannot be loaded")
    return out


def set_parent_edge(conn: Connection, image_id: str, parent: str | None) -> None:
    conn.execute(delete(schema.parents).where(schema.parents.c.child_id == image_id))
    if parent is not None:
        conn.execute(insert(schema.parents).values(child_id=image_id, parent_id=parent))


def record_signatures(conn: Connection, root: Root, paths: Iterable[str]) -> None:
    """Store the current signature of entries the store itself just wrote or removed."""
    sigs, gone = [], []
    for path in paths:
        sig = entry_signature(root, path)
        if sig is None:
            gone.append(path)
        else:
            sigs.append({"path": path, "signature": sig})
    e = schema.entries
    if gone or sigs:
        conn.execute(delete(e).where(e.c.path.in_(gone + [s["path"] for s in sigs])))
    if sigs:
        conn.execute(insert(e), sigs)


def ingest_image(conn: Connection, root: Root, image_id: str) -> Problem | None:
    """(Re)load one image from disk after the store wrote it; the problem if it cannot load."""
    name = image_id[len(PREFIX):]
    one = _Pass(conn, root, {CONTENT + name: ""})
    one.cleared.update({CONTENT + name, METADATA + name})
    conn.execute(delete(schema.images).where(schema.images.c.id == image_id))
    loaded = one._ingest(name)
    if loaded is not None:
        row, parent = loaded
        conn.execute(insert(schema.images), [row])
        set_parent_edge(conn, image_id, parent)
    one.save_problems()
    record_signatures(conn, root, [CONTENT + name, METADATA + name])
    return one.problems.get(CONTENT + name)


def run(conn: Connection, root: Root, *, full: bool = False) -> SyncReport:
    """Sync the index on ``conn`` (inside the caller's write transaction) with ``root``."""
    e = schema.entries
    stored = {} if full else {r.path: r.signature for r in conn.execute(select(e))}
    if full:
        for table in (schema.parents, schema.images, schema.layers, schema.mounts, schema.tags,
                      schema.problems, schema.entries):
            conn.execute(delete(table))
    current = scan(root)
    changed = {p for p, sig in current.items() if stored.get(p) != sig}
    removed = set(stored) - set(current)
    sync = _Pass(conn, root, current)
    report = SyncReport()
    layers_moved = sync.sync_layers(changed, removed)
    sync.sync_images(changed, removed, layers_moved, report)
    if REPOSITORIES in changed or REPOSITORIES in removed:
        sync.sync_tags()
    sync.save_problems()
    report.problems = all_problems(conn)
    report.skipped = sum(1 for p in report.problems if p.path.startswith(CONTENT))
    for chunk in _batched([{"p": p} for p in sorted(removed | changed)]):
        conn.execute(delete(e).where(e.c.path.in_([r["p"] for r in chunk])))
    rows = [{"path": p, "signature": current[p]} for p in sorted(changed)]
    for chunk in _batched(rows):
        conn.execute(insert(e), chunk)
    return report
