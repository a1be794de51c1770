"""Opening a store: finding the image root, bringing its index to the schema head (a new
one is built aside and filled by its first sync before anyone can see it), then syncing."""

from __future__ import annotations

import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from imagestore.errors import ImageStoreError, IndexCorrupt, NoSuchNamespace
from imagestore.index.location import default_index_path, within
from imagestore.moby.root import Root, find_root
from imagestore.reading import Reading

if TYPE_CHECKING:
    from imagestore.containerd.layout import Layout
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
    namespace: str | None = None,
    platform: str | None = None,
    docker_root: str | os.PathLike[str] | None = None,
) -> Host:
    """Open the image root ``root`` with its index (created and migrated as needed).

    ``root`` is a classic image root (``<data-root>/image/<driver>``, or the data-root), or a
    containerd root (``/var/lib/containerd``, or a data-root whose own containerd keeps it
    in ``containerd/daemon``): then the store is the namespace ``namespace`` (default
    ``moby``, Docker 29's; ``k8s.io`` on a Kubernetes node), read-only, answering as Docker
    29's containerd image service does, for ``platform`` (``os/arch[/variant]``, default
    the host's) where an image holds several; ``docker_root``: the Docker data-root that
    uses it (its containers say which image each runs; known by itself for a managed
    containerd). ``namespace``, ``platform`` and ``docker_root`` mean nothing to a classic
    root.

    ``sync``: bring the index up to date first (``progress(phase, done, total)`` is told as
    entries are read; the report is ``Store.last_sync``). ``force``: write even while a
    ``dockerd`` is using the root (normally refused). ``name``: the store's name in the
    index (default ``HOST:/real/path`` of the image root); one index holds many stores.
    ``keep_env``: an index on a server keeps configs' Env values and build arguments too
    (by default it stores them redacted; a local file always keeps them). A ``name`` that
    belongs to another root is refused (``StoreNameTaken``) unless ``rename_root``, which
    gives it to this root and reads the root whole.
    """
    from imagestore.containerd import layout

    found = layout.find(root)
    if found is not None:
        return _open_containerd(layout.Layout.at(found, Path(docker_root) if docker_root
                                                 else None), index, namespace=namespace,
                                platform=platform, readonly=readonly, sync=sync,
                                progress=progress, name=name, keep_env=keep_env,
                                rename_root=rename_root)
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


def _open_containerd(where: Layout, index: str | os.PathLike[str] | None, *,
                     namespace: str | None, platform: str | None, readonly: bool, sync: bool,
                     progress: Progress | None, name: str | None, keep_env: bool,
                     rename_root: bool) -> Host:
    """A namespace of a containerd root: ``open`` for that kind of store."""
    from imagestore.containerd.content import parse_platform
    from imagestore.containerd.layout import DEFAULT_NAMESPACE
    from imagestore.index import Index, Writer
    from imagestore.index.location import containerd_name
    from imagestore.service.ctdhost import ContainerdHost
    from imagestore.sync import containerd as ctd_sync

    ns = namespace or DEFAULT_NAMESPACE
    try:
        wanted = parse_platform(platform) if platform else None
    except ValueError as exc:
        raise ImageStoreError(str(exc)) from None
    built: list[SyncReport] = []

    def fill(tx: Writer) -> None:
        built.append(ctd_sync.run(tx, where, ns, platform=wanted, progress=progress))

    store_name = name or containerd_name(where.root, ns)
    opened = Index.open(index, where.root, readonly=readonly, fill=fill if sync else None,
                        forbidden=[where.root], name=store_name, keep_env=keep_env,
                        rename_root=rename_root)
    store = ContainerdHost(where, ns, opened, wanted)
    try:
        if built:
            store.last_sync = built[-1]
        elif sync and opened.frozen:
            warnings.warn(f"index {opened.location()} cannot be written: answering from it "
                          f"as it stands, without syncing", stacklevel=3)
        elif sync and (opened.moved or not store.fresh()):
            store.sync(progress=progress)
    except NoSuchNamespace:
        if opened.store.last_sync is None and not opened.frozen:
            opened.forget(store_name)  # the store this open made for it
        store.close()
        raise
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
               name: str | None = None, namespace: str | None = None,
               platform: str | None = None,
               docker_root: str | os.PathLike[str] | None = None) -> Reading | None:
    """The image root ``root`` for reading, when its index is a local SQLite file at the
    schema head and nothing changed on disk since its last sync: opened in milliseconds,
    without SQLAlchemy, Alembic or a write. ``None`` otherwise: ``open`` does the work (and
    reports what is wrong). A containerd root's namespace comes back as a
    ``ContainerdReading``."""
    from imagestore.containerd import layout
    from imagestore.index.quick import QuickIndex

    found = layout.find(root)
    if found is not None:
        return _quick_containerd(layout.Layout.at(found, Path(docker_root) if docker_root
                                                  else None), index, name=name,
                                 namespace=namespace, platform=platform)
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


def _quick_containerd(where: Layout, index: str | os.PathLike[str] | None, *,
                      name: str | None, namespace: str | None,
                      platform: str | None) -> Reading | None:
    from imagestore.containerd.content import parse_platform
    from imagestore.containerd.layout import DEFAULT_NAMESPACE
    from imagestore.index.location import containerd_name
    from imagestore.index.quick import QuickIndex
    from imagestore.service.ctdreading import ContainerdReading

    ns = namespace or DEFAULT_NAMESPACE
    try:
        wanted = parse_platform(platform) if platform else None
    except ValueError:
        return None  # ``open`` says what is wrong
    quick = QuickIndex.open(index, where.root, name=name or containerd_name(where.root, ns))
    if quick is None:
        return None
    store = ContainerdReading(where, ns, quick, wanted)
    started = datetime.now(timezone.utc)
    try:
        fresh = store.fresh()
    except (ImageStoreError, OSError):
        fresh = False
    except BaseException:
        quick.close()
        raise
    if not fresh:
        quick.close()
        return None
    quick.synced(started)
    return store


def _docker_folders(image_root: Path) -> list[Path]:
    """Where the index may never be: it is derived data, never among the files it mirrors,
    nor beside them."""
    return [image_root, *([image_root.parent.parent] if image_root.parent.name == "image"
                          else [])]




def namespaces(root: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The namespaces of the containerd root ``root`` (or of the containerd a data-root
    keeps), each with its image records, images, blobs, snapshots, containers and leases;
    read from ``meta.db`` directly, without an index."""
    from imagestore.containerd import layout, meta

    found = layout.find(root)
    if found is None:
        raise ImageStoreError(f"{root} is not a containerd root (no "
                              f"{layout.META} under it)")
    return meta.summary(meta.read(layout.Layout(found).meta))


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
    from imagestore.containerd import layout

    found = layout.find(root)
    return str(default_index_path(found if found is not None else find_root(root)))


__all__ = ["default_index", "namespaces", "open", "open_index", "open_quick",
           "open_quick_index"]
