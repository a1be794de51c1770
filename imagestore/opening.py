"""Opening a store: finding the image root, bringing its index to the schema head (a new
one is built aside and filled by its first sync before anyone can see it), then syncing."""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from imagestore.errors import ImageStoreError, IndexCorrupt
from imagestore.index.location import default_index_path, within
from imagestore.moby.root import Root, find_root
from imagestore.reading import Reading

if TYPE_CHECKING:
    from imagestore.index import Index as Index  # re-exported for the command line's types
    from imagestore.index.fastread import Result as Result
    from imagestore.index.quick import QuickWhole
    from imagestore.service.host import Host
    from imagestore.sync import Progress, SyncReport


def open(
    root: str | os.PathLike[str],
    index: str | os.PathLike[str] | None = None,
    *,
    readonly: bool = False,
    sync: bool = True,
    force: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
    keep_env: bool = False,
    rename_root: bool = False,
) -> Host:
    """Open the image root ``root`` with its index (created and migrated as needed).

    ``sync``: bring the index up to date first (``progress(phase, done, total)`` is told as
    entries are read; the report is ``Store.last_sync``). ``force``: write even while a
    ``dockerd`` is using the root (normally refused). ``name``: the store's name in the
    index (default ``HOST:/real/path`` of the image root); one index holds many stores.
    ``keep_env``: an index on a server keeps configs' Env values and build arguments too
    (by default it stores them redacted; a local file always keeps them). A ``name`` that
    belongs to another root is refused (``StoreNameTaken``) unless ``rename_root``, which
    gives it to this root and reads the root whole.
    """
    from imagestore.index import Index, Writer
    from imagestore.service.host import Host
    from imagestore.sync import run

    image_root = find_root(root)  # nothing under it changes before the first write
    built: list[SyncReport] = []

    def fill(tx: Writer) -> None:
        # A new index is synced before anyone else can see it.
        built.append(run(tx, Root(image_root), progress=progress))

    store = Host(image_root, Index.open(index, image_root, readonly=readonly,
                                         fill=fill if sync else None,
                                         forbidden=_docker_folders(image_root),
                                         name=name, keep_env=keep_env,
                                         rename_root=rename_root),
                  readonly=readonly, force=force)
    # Configs stored under another redaction rule, or another root's rows, are read again.
    policy_changed = store.index.store.redacted != store.index.redact or store.index.moved
    if built:
        store.last_sync = built[-1]
    elif sync and store.index.frozen:
        warnings.warn(f"index {store.index.location()} cannot be written: answering from it "
                      f"as it stands, without syncing", stacklevel=2)
    elif sync or (policy_changed and not store.index.frozen):
        try:
            if policy_changed or not _in_sync(store):
                store.sync(full=policy_changed, progress=progress)
        except BaseException:
            store.close()
            raise
    return store


def _in_sync(store: Host) -> bool:
    """Nothing to sync, told from one read snapshot without the writers' lock (a warm open
    then never waits behind another process's sync); ``last_sync`` gets the report a sync
    that found nothing gives."""
    from imagestore.sync.fresh import quiet_report, unchanged

    started = datetime.now(timezone.utc)
    try:
        with store.index.read() as q:
            if not unchanged(store.root, q):
                return False
            store.last_sync = quiet_report(q)
    except IndexCorrupt:
        return False  # the sync sets the index aside and rebuilds it
    store.index.note_synced(started)
    return True


def open_quick(root: str | os.PathLike[str], index: str | os.PathLike[str] | None = None, *,
               name: str | None = None) -> Reading | None:
    """The image root ``root`` for reading, when its index is a local SQLite file at the
    schema head and nothing changed on disk since its last sync: opened in milliseconds,
    without SQLAlchemy, Alembic or a write. ``None`` otherwise: ``open`` does the work (and
    reports what is wrong)."""
    from imagestore.index.quick import QuickIndex
    from imagestore.sync.fresh import unchanged

    image_root = find_root(root)
    quick = QuickIndex.open(index, image_root, name=name)
    if quick is None:
        return None
    if any(within(quick.file, folder) for folder in _docker_folders(image_root)):
        quick.close()
        return None
    started = datetime.now(timezone.utc)
    try:
        with quick.read() as q:
            fresh = unchanged(Root(image_root), q)
    except (ImageStoreError, OSError):
        fresh = False  # ``open`` says what is wrong
    except BaseException:
        quick.close()
        raise
    if not fresh:
        quick.close()
        return None
    quick.synced(started)
    return Reading(image_root, quick)


def _docker_folders(image_root: Path) -> list[Path]:
    """Where the index may never be: it is derived data, never among the files it mirrors,
    nor beside them."""
    return [image_root, *([image_root.parent.parent] if image_root.parent.name == "image"
                          else [])]




def open_index(where: str) -> Index:
    """An index with all its stores (a file path or an SQLAlchemy URL), migrated as
    needed; no root is read and nothing is synced (``sql``, ``info``, ``stores``)."""
    from imagestore.index import Index

    return Index.open_all(where)


def open_quick_index(where: str) -> QuickWhole | None:
    """The same through sqlite3 alone, when it is a local file at the schema head;
    ``None`` otherwise (then ``open_index``)."""
    from imagestore.index.quick import QuickWhole

    return QuickWhole.open(where)


def default_index(root: str | os.PathLike[str]) -> str:
    """Where the index of ``root`` lives when none is named."""
    return str(default_index_path(find_root(root)))


__all__ = ["default_index", "open", "open_index", "open_quick", "open_quick_index"]
