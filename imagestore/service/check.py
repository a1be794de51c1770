"""``fsck``: verify a root the slow, thorough way, and repair only what is safe to repair.

The sync trusts signatures; fsck trusts nothing: it rebuilds the index from every file on
disk into a private in-memory index, with the sync's own readers (so it re-hashes every
content file and walks every layer chain by the same rules), reports what that rebuild
skipped, compares it with the stored index, checks the index file itself, and checks what
no sync looks at (``checks``): the graph driver's folders (what nothing uses, what is gone,
deletes left half done) and, with ``layers``, every layer's files against its tar-split.

Without ``--repair`` nothing under the root changes: every check here only reads.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from imagestore.errors import IndexCorrupt
from imagestore.index import Index, listing
from imagestore.moby import buildkit, drivers
from imagestore.moby.daemon import check_writable
from imagestore.moby.digest import printable
from imagestore.moby.drivers import Driver, UnsupportedDriver
from imagestore.moby.problems import ProblemKind
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS
from imagestore.service import findings as checks
from imagestore.service.findings import Finding
from imagestore.store import Store
from imagestore.sync import run
from imagestore.sync.scan import names, scan


def _driver(store: Store, *, layers: bool = False) -> Driver | None:
    """The driver whose folders fsck checks; ``None`` (with a warning where it matters) when
    there is none to check: a root outside a data-root, an unsupported driver, or an image
    root copied without its driver's data (no ``<data-root>/<driver>`` at all: every layer
    would read as missing, which says nothing)."""
    try:
        driver = store.driver()
    except UnsupportedDriver as exc:
        warnings.warn(f"{exc}: its folders are not checked", stacklevel=2)
        return None
    if driver is None:
        if layers:
            warnings.warn("the root is not inside a data-root with a vfs or overlay2 driver: "
                          "its layers' files cannot be checked", stacklevel=2)
        return None
    if not os.path.lexists(driver.home):
        warnings.warn(f"no graph-driver data at {driver.home}: driver folders and layer "
                      f"files are not checked", stacklevel=2)
        return None
    return driver


def check(store: Store, *, layers: bool = False) -> list[Finding]:
    root = store.root
    fresh = Index.scratch(root.path)
    try:
        with fresh.write() as tx:
            rebuild = run(tx, root, full=True)
        truth = listing.contents(fresh)
        configs = listing.configs(fresh)
    finally:
        fresh.close()
    driver = _driver(store, layers=layers)
    findings = checks.from_problems(rebuild.problems, root, truth)
    content = set(names(root, CONTENT))  # each folder listed once for every check
    scans = {kind: scan(root, kind) for kind in (METADATA, LAYERS, MOUNTS)}
    findings += checks.leftovers(root, content, scans[LAYERS], removing=driver is None)
    findings += checks.special_files(root, scans)
    findings += checks.dangling_tags(content, truth)
    kind = ProblemKind.INDEX
    damage = store.index.damage()
    try:
        stored = {} if damage else listing.contents(store.index)
    except IndexCorrupt as exc:
        damage = [str(exc)]
    if damage:
        findings.append(Finding.of(kind, store.index.location(),
                                   f"the index file is damaged: {damage[0]}"))
    for what, rows in truth.items() if stored else ():
        findings += [Finding.of(kind, str(row[0]), f"{what} on disk missing from index")
                     for row in sorted(rows - stored[what], key=str)]
        findings += [Finding.of(kind, str(row[0]), f"{what} in index not on disk")
                     for row in sorted(stored[what] - rows, key=str)]
    findings += checks.links(truth, configs)
    if driver is not None:
        findings += driver_findings(store, driver)
    if layers:
        findings += layer_findings(store, driver, sorted((str(r[0]), str(r[1]))
                                                         for r in truth["layer"]))
    return findings


def _shown(store: Store, path: str) -> str:
    """A path as findings name them: relative to the image root when inside it."""
    return str(Path(path).relative_to(store.root.path)) \
        if Path(path).is_relative_to(store.root.path) else path


def driver_findings(store: Store, driver: Driver) -> list[Finding]:
    """Driver folders nothing uses (no layer, container or BuildKit snapshot), with their
    sizes; dangling ``l/`` links; layers whose folder is gone; deletes left half done. When
    BuildKit's ``snapshots.db`` cannot be read, an unused folder is only unclaimed."""
    refs = drivers.read_references(store.root.layerdb)
    owned = buildkit.owned_folders(driver.home.parent)
    found = drivers.find_orphans(driver, refs, None if owned.unreadable else owned.ids,
                                 owned.unreadable or "")
    out = []
    for f in found:
        finish = f.kind == drivers.UNFINISHED and f.path.endswith("-removing")
        free = f.kind in (drivers.ORPHAN, drivers.DANGLING_LINK) and not refs.unreadable
        action = f.kind.action if finish or f.kind != drivers.UNFINISHED else \
            "left alone: the engine's own write in progress (dockerd clears it at start)"
        if f.kind == drivers.ORPHAN and refs.unreadable:
            action = f"left alone: {refs.unreadable[0]} cannot be read, so its use is unknown"
        size = f" ({f.size} bytes)" if f.kind in (drivers.ORPHAN, drivers.UNCLAIMED,
                                                  drivers.UNFINISHED) else ""
        out.append(Finding(_shown(store, f.path), f.kind, f.detail + size, action,
                           free or finish, subject=f.path))
    return out


def layer_findings(store: Store, driver: Driver | None,
                   layers: list[tuple[str, str]]) -> list[Finding]:
    """Every layer's tar rebuilt from its tar-split and the driver's files, written nowhere:
    each file missing or changed, by layer and path (in worker processes, one per core)."""
    from imagestore.moby.tarsplit import check_layers, layer_source

    if driver is None:  # _driver said why
        return []
    problems = check_layers(layer_source(store.root.path, chain, diff) for chain, diff in layers)
    kind = ProblemKind.LAYER_DATA
    return [Finding(f"{LAYERS}{p.chain_id[7:]}" + (f"#{_relative(store, p.path)}"
                                                   if p.path else ""),
                    kind, printable(p.reason), kind.action) for p in problems]


def _relative(store: Store, path: str) -> str:
    """A file at fault as a finding names it: a tar member as it is, an on-disk path
    relative to the data-root (or the image root outside one), never this host's prefix."""
    if not os.path.isabs(path):
        return printable(path)
    base = store.root.path.parent.parent if store.root.path.parent.name == "image" \
        else store.root.path
    return printable(os.path.relpath(path, base) if Path(path).is_relative_to(base) else path)


def repair(store: Store, findings: list[Finding]) -> list[Finding]:
    """Remove leftovers of interrupted writes, orphan metadata, tags of missing images,
    content files nothing refers to whose layers are missing, and driver folders and links
    nothing uses; finish deletes left half done; then resync (or rebuild) the index.
    Nothing else is touched."""
    check_writable(store.root.path, readonly=store.readonly, force=store.force,
                   what="repair the store")
    driver_kinds = {drivers.ORPHAN, drivers.DANGLING_LINK, drivers.UNFINISHED}
    repaired = [f for f in findings if f.repairable and f.check not in driver_kinds]
    base = store.root.path
    for f in repaired:
        if f.check == ProblemKind.MISSING_LAYER:
            name = f.path[len(CONTENT):]
            _remove(base / (METADATA + name))
        if f.check != ProblemKind.DANGLING_TAG:
            _remove(base / f.path)
    dangling = [f.subject for f in repaired if f.check == ProblemKind.DANGLING_TAG]
    if dangling:
        store.drop_references(dangling)
    repaired += _repair_driver(store, [f for f in findings if f.repairable
                                       and f.check in driver_kinds])
    stale = [f for f in findings if f.check == ProblemKind.INDEX]
    if store.index.damage():
        store.rebuild()
    elif stale or repaired:
        store.sync(full=True)
    return repaired + stale


def _repair_driver(store: Store, found: list[Finding]) -> list[Finding]:
    """Finish interrupted deletes (their driver data released), then remove what nothing
    uses, both judged afresh; the findings whose path went."""
    driver = _driver(store) if found else None
    if driver is None:
        return []
    layerdb = store.root.layerdb
    done = drivers.finish_removals(driver, layerdb)
    owned = buildkit.owned_folders(driver.home.parent)
    more = drivers.remove_orphans(driver, drivers.read_references(layerdb),
                                  None if owned.unreadable else owned.ids, owned.unreadable or "")
    for why in (done.refused, more.refused, *(f"{p}: {e}" for p, e in done.failed + more.failed)):
        if why:
            warnings.warn(why, stacklevel=2)
    removed = {*done.removed, *more.removed}
    return [f for f in found if f.subject in removed]


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


__all__ = ["Finding", "check", "driver_findings", "layer_findings", "repair"]
