"""moby's image ``Store`` on top of the index: every question is answered in SQL.

Writes go to disk first (the root stays the source of truth, readable by a real engine), then
to the index in one transaction, under a lock that serialises writers of the same index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, func, select, text, update

from imagestore import changes, db, schema
from imagestore.daemon import running_daemon
from imagestore.digest import (
    PREFIX,
    chain_id,
    hex_of,
    normalize_id,
    parse_search_term,
    prefix_upper_bound,
)
from imagestore.entries import CONTENT, LAYERS, METADATA, REPOSITORIES, Root
from imagestore.errors import (
    AmbiguousImageID,
    DaemonRunning,
    ImageNotFound,
    ImageStoreError,
    InvalidConfigType,
    InvalidImageConfig,
    LayerNotFound,
    ReadOnlyStore,
)
from imagestore.fastread import FastReader
from imagestore.fs import MAX_FILE_SIZE, ImageDB, atomic_write, read_optional
from imagestore.image import Image, check_history, format_time, parse_config, parse_time
from imagestore.layers import LayerMetadata
from imagestore.references import BadReferences, normalize_reference, without_image
from imagestore.sync import Progress, SyncReport, ingest_image, run, set_parent_edge

MAX_CANDIDATES = 1000
# Every image whose ID starts with a prefix is in [sha256:<p>, sha256:<p>g): one range read of
# the primary-key index (tests/test_search.py checks the plan).
PREFIX_SQL = "SELECT id FROM images WHERE id >= :lo AND id < :hi ORDER BY id LIMIT :n"


def _image_id(value: str) -> str:
    """A full ID from user input, or ``ImageNotFound`` (never a path from garbage)."""
    image_id = normalize_id(value) if isinstance(value, str) else None
    if image_id is None:
        raise ImageNotFound(f"No such image: {str(value)[:100]!r} is not a full image ID")
    return image_id


class Store:
    """A Docker image root and its index. Use ``imagestore.open`` to get one."""

    def __init__(self, root: Path, engine: Engine, lock_path: Path, *, readonly: bool,
                 force: bool = False) -> None:
        self.root = Root(root)
        self.engine = engine
        self.readonly = readonly
        self.force = force
        self._lock_path = lock_path
        # The report of this store's latest sync (the one ``open`` ran, if it did).
        self.last_sync: SyncReport | None = None
        self.fast = FastReader(db.sqlite_path(str(engine.url)), engine.dialect)

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self.fast.close()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Connection]:
        """The writer's lock (one writer per index at a time), then a write transaction."""
        with (db.writer_lock(self._lock_path),
              self.engine.connect().execution_options(write=True) as conn, conn.begin()):
            yield conn

    def check_writable(self, what: str) -> None:
        """Raise unless writing under the root is allowed now (not read-only, no dockerd)."""
        if self.readonly:
            raise ReadOnlyStore(f"cannot {what}: the store was opened read-only")
        if not self.force:
            pid = running_daemon(self.root.path)
            if pid is not None:
                raise DaemonRunning(
                    f"cannot {what}: dockerd (pid {pid}) is using this root; stop it first, "
                    f"or pass --force (force=True) at the risk of corrupting its view")

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        self.check_writable(what)
        with self._locked() as conn:
            yield conn

    def _imagedb(self) -> ImageDB:
        return ImageDB(self.root.path / "imagedb", create=not self.readonly)

    @staticmethod
    def _require(conn: Connection, image_id: str, message: str = "No such image") -> None:
        t = schema.images
        if conn.execute(select(t.c.id).where(t.c.id == image_id)).first() is None:
            raise ImageNotFound(f"{message}: {image_id}")

    # -- the moby Store interface -----------------------------------------------------------
    def create(self, config: bytes) -> str:
        """Store a config; idempotent. The layers its rootfs names must be in layerdb."""
        if not isinstance(config, (bytes, bytearray)):
            raise InvalidConfigType("config must be bytes")
        config = bytes(config)
        if len(config) > MAX_FILE_SIZE:
            raise InvalidImageConfig(f"config of {len(config)} bytes is larger than the "
                                     f"{MAX_FILE_SIZE} bytes imagestore accepts")
        fields = parse_config(config)
        check_history(fields)
        with self._write("create an image") as conn:
            image_id = self._imagedb().set(config)
            t = schema.images
            if conn.execute(select(t.c.id).where(t.c.id == image_id)).first() is not None:
                changes.record(conn, self.root, [CONTENT + hex_of(image_id)])  # rewritten
                return image_id
            chain = chain_id(fields["rootfs"]["diff_ids"])
            if chain is not None and not self._has_layer(conn, chain):
                # The index may not know a layer written since the last sync: ask the disk.
                run(conn, self.root)
                if not self._has_layer(conn, chain):
                    raise LayerNotFound(f"failed to get layer {chain}: layer does not exist")
            problem = ingest_image(conn, self.root, image_id)
            if problem is not None:
                raise ImageStoreError(f"image {image_id} did not load: {problem.reason}")
            return image_id

    @staticmethod
    def _has_layer(conn: Connection, chain: str) -> bool:
        lt = schema.layers
        return conn.execute(select(lt.c.chain_id).where(lt.c.chain_id == chain)).first() is not None

    def get(self, image_id: str) -> Image:
        image_id = _image_id(image_id)
        t, p = schema.images, schema.parents
        query = (select(t.c.raw, p.c.parent_id).outerjoin(p, p.c.child_id == t.c.id)
                 .where(t.c.id == image_id))
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return Image(image_id, row.raw, row.parent_id)

    def delete(self, image_id: str) -> list[LayerMetadata]:
        """Delete as moby does: children lose their parent link, unreferenced layers go."""
        image_id = _image_id(image_id)
        t, p, lt = schema.images, schema.parents, schema.layers
        with self._write("delete an image") as conn:
            row = conn.execute(select(t.c.chain_id).where(t.c.id == image_id)).first()
            if row is None:
                raise ImageNotFound(f"unrecognized image ID {image_id}")
            children = list(conn.scalars(select(p.c.child_id).where(p.c.parent_id == image_id)))
            imagedb = self._imagedb()
            for child in children:
                imagedb.delete_metadata(child, "parent")
            imagedb.delete(image_id)
            conn.execute(delete(p).where(p.c.parent_id == image_id))
            conn.execute(delete(t).where(t.c.id == image_id))
            released = self._release(conn, row.chain_id)
            for layer in released:
                self.root.layerdb.remove_layer(layer.chain_id)
                conn.execute(delete(lt).where(lt.c.chain_id == layer.chain_id))
            touched = [CONTENT + hex_of(image_id), METADATA + hex_of(image_id)]
            touched += [METADATA + hex_of(c) for c in children]
            touched += [LAYERS + hex_of(m.chain_id) for m in released]
            changes.record(conn, self.root, touched)
            return released

    @staticmethod
    def _release(conn: Connection, chain: str | None) -> list[LayerMetadata]:
        """Layers left with no reference once the image's row is gone, top first."""
        t, lt, mt = schema.images, schema.layers, schema.mounts
        released: list[LayerMetadata] = []
        while chain is not None:
            refs = conn.execute(select(
                select(func.count()).where(t.c.chain_id == chain).scalar_subquery()
                + select(func.count()).where(lt.c.parent_id == chain).scalar_subquery()
                + select(func.count()).where(mt.c.parent_id == chain).scalar_subquery()
            )).scalar_one()
            layer = conn.execute(select(lt).where(lt.c.chain_id == chain)).first()
            if refs or layer is None:
                break
            released.append(LayerMetadata(layer.chain_id, layer.diff_id, layer.size,
                                          layer.diff_size))
            conn.execute(delete(lt).where(lt.c.chain_id == chain))
            chain = layer.parent_id
        return released

    def search(self, term: str) -> str:
        """The one ID starting with ``term`` (moby's digest-set rules, no minimum length)."""
        parsed = parse_search_term(term) if isinstance(term, str) else None
        if parsed is None or not parsed.possible or not parsed.hex_prefix:
            raise ImageNotFound(f"No such image: {str(term)[:100]}")
        ids = self._prefix_query(parsed.hex_prefix, 2)
        if not ids:
            raise ImageNotFound(f"No such image: {term}")
        if len(ids) > 1:
            raise AmbiguousImageID(term, self._prefix_query(parsed.hex_prefix, MAX_CANDIDATES))
        return ids[0]

    def fetch(self, *queries: Any) -> list[list[tuple[Any, ...]]]:
        """All rows of read-only queries, as plain tuples from one snapshot (through the
        plain sqlite3 reader on an SQLite index: listings of 100,000 rows)."""
        fast = self.fast.fetch(*queries)
        if fast is not None:
            return fast
        with self._read() as conn:
            return [[tuple(r) for r in conn.execute(q)] for q in queries]

    def _prefix_query(self, hex_prefix: str, limit: int) -> list[str]:
        bounds = {"lo": PREFIX + hex_prefix, "hi": prefix_upper_bound(hex_prefix), "n": limit}
        fast = self.fast.connection()
        if fast is not None:
            return [row[0] for row in fast.execute(PREFIX_SQL, bounds)]
        with self._read() as conn:
            return list(conn.scalars(text(PREFIX_SQL), bounds))

    def set_parent(self, image_id: str, parent: str) -> None:
        image_id, parent = _image_id(image_id), _image_id(parent)
        with self._write("set a parent") as conn:
            self._require(conn, parent, "unknown parent image ID")
            self._require(conn, image_id)
            if parent == image_id or image_id in self._ancestors(conn, parent):
                raise ImageStoreError(
                    f"cannot make {parent} the parent of {image_id}: it would create a cycle")
            self._imagedb().set_metadata(image_id, "parent", parent.encode())
            set_parent_edge(conn, image_id, parent)
            changes.record(conn, self.root, [METADATA + hex_of(image_id)])

    @staticmethod
    def _ancestors(conn: Connection, image_id: str) -> set[str]:
        query = text(
            "WITH RECURSIVE up(id) AS (SELECT id FROM images WHERE id = :id UNION "
            "SELECT p.parent_id FROM image_parents p JOIN up ON p.child_id = up.id) "
            "SELECT id FROM up"
        )
        return set(conn.scalars(query, {"id": image_id}))

    def get_parent(self, image_id: str) -> str | None:
        image_id = _image_id(image_id)
        p = schema.parents
        with self._read() as conn:
            self._require(conn, image_id)
            return conn.scalar(select(p.c.parent_id).where(p.c.child_id == image_id))

    def children(self, image_id: str) -> list[str]:
        image_id = _image_id(image_id)
        p = schema.parents
        with self._read() as conn:
            return list(conn.scalars(
                select(p.c.child_id).where(p.c.parent_id == image_id).order_by(p.c.child_id)))

    def map(self) -> dict[str, Image]:
        return self._images(None)

    def heads(self) -> dict[str, Image]:
        """Images that no image in the store names as its parent."""
        child = schema.parents.alias("child")
        return self._images(~exists().where(child.c.parent_id == schema.images.c.id))

    def _images(self, where: object) -> dict[str, Image]:
        t, p = schema.images, schema.parents
        query = select(t.c.id, t.c.raw, p.c.parent_id).outerjoin(p, p.c.child_id == t.c.id)
        if where is not None:
            query = query.where(where)  # type: ignore[arg-type]
        with self._read() as conn:
            return {r.id: Image(r.id, r.raw, r.parent_id) for r in conn.execute(query)}

    def __len__(self) -> int:
        with self._read() as conn:
            return int(conn.scalar(select(func.count()).select_from(schema.images)) or 0)

    def __contains__(self, image_id: object) -> bool:
        if not isinstance(image_id, str) or normalize_id(image_id) is None:
            return False
        t = schema.images
        with self._read() as conn:
            return conn.execute(
                select(t.c.id).where(t.c.id == normalize_id(image_id))).first() is not None

    def set_last_updated(self, image_id: str, when: datetime | None = None) -> None:
        image_id = _image_id(image_id)
        stamp = format_time(when or datetime.now(timezone.utc))
        self._set_metadata(image_id, "lastUpdated", stamp.encode(), last_updated=stamp)

    def get_last_updated(self, image_id: str) -> datetime | None:
        value = self._column(image_id, schema.images.c.last_updated)
        return parse_time(value) if isinstance(value, str) and value else None

    def set_built_locally(self, image_id: str) -> None:
        self._set_metadata(_image_id(image_id), "builtLocally", b"\x01", built_locally=True)

    def is_built_locally(self, image_id: str) -> bool:
        return bool(self._column(image_id, schema.images.c.built_locally))

    def _set_metadata(self, image_id: str, key: str, data: bytes, **values: object) -> None:
        t = schema.images
        with self._write(f"set {key}") as conn:
            self._require(conn, image_id)
            self._imagedb().set_metadata(image_id, key, data)
            conn.execute(update(t).where(t.c.id == image_id).values(**values))
            changes.record(conn, self.root, [METADATA + hex_of(image_id)])

    def _column(self, image_id: str, column: object) -> object:
        image_id = _image_id(image_id)
        t = schema.images
        with self._read() as conn:
            row = conn.execute(select(column).where(t.c.id == image_id)).first()  # type: ignore[call-overload]
        if row is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return row[0]

    def sync(self, *, full: bool = False, progress: Progress | None = None) -> SyncReport:
        """Bring the index up to date with the root (``full``: rebuild it from scratch;
        ``progress(phase, done, total)``: told as entries are read)."""
        with self._locked() as conn:
            self.last_sync = run(conn, self.root, full=full, progress=progress,
                                 tidy=may_tidy(self.root.path, self.readonly))
            return self.last_sync

    # -- beyond moby: what a command line needs ---------------------------------------------
    def resolve(self, ref: str) -> str:
        """A REF as docker resolves it: full ID, then a name from repositories.json, then a
        unique ID prefix."""
        if not isinstance(ref, str) or not ref or len(ref) > 4096 or "\x00" in ref:
            raise ImageNotFound(f"No such image: {str(ref)[:100]!r}")
        full = normalize_id(ref)
        if full is not None and full in self:
            return full
        tt = schema.tags
        with self._read() as conn:
            target = conn.scalar(select(tt.c.image_id).where(tt.c.ref == normalize_reference(ref)))
            if target is not None:
                self._require(conn, target, f"reference {ref} names a missing image")
                return str(target)
        return self.search(ref)

    def untag(self, image_id: str) -> list[str]:
        """Remove every reference to the image from ``repositories.json``; the removed refs.

        Not part of moby's image store (the daemon untags before it deletes), but a root whose
        reference store names a deleted image confuses the engine, so the CLI's ``rm`` does it.
        """
        image_id = _image_id(image_id)
        path = self.root.repositories
        with self._write("untag an image") as conn:
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
            tt = schema.tags
            conn.execute(delete(tt).where(tt.c.image_id == image_id))
            changes.record(conn, self.root, [REPOSITORIES])
            return removed

    def references(self, image_id: str) -> list[str]:
        tt = schema.tags
        with self._read() as conn:
            return list(conn.scalars(select(tt.c.ref).where(tt.c.image_id == image_id)
                                     .order_by(tt.c.ref)))

    def size(self, image_id: str) -> int:
        """Bytes of the image's whole layer chain (docker's ``Size``)."""
        t, lt = schema.images, schema.layers
        query = (select(func.coalesce(lt.c.size, 0)).select_from(t)
                 .outerjoin(lt, lt.c.chain_id == t.c.chain_id).where(t.c.id == _image_id(image_id)))
        with self._read() as conn:
            value = conn.scalar(query)
        if value is None:
            raise ImageNotFound(f"No such image: {image_id}")
        return int(value)


def may_tidy(root: Path, readonly: bool) -> bool:
    """Under the writers' lock no imagestore write is in flight: temp files are leftovers of
    a crash, safe to remove unless the root is read-only or a dockerd is writing."""
    return not readonly and running_daemon(root) is None


__all__ = ["Store", "may_tidy"]
