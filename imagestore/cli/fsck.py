"""``fsck``: verify a root the slow, thorough way, and repair only what is safe to repair.

The sync trusts signatures; fsck trusts nothing: it rebuilds the index from every file on
disk into a private in-memory index, with the sync's own readers (so it re-hashes every
content file and walks every layer chain by the same rules), reports what that rebuild
skipped, compares it with the stored index, checks the index file itself, and checks what
no sync looks at (``checks``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from imagestore.cli import checks, report
from imagestore.cli.checks import Finding
from imagestore.errors import IndexCorrupt
from imagestore.index import Index, listing
from imagestore.moby.daemon import check_writable
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS
from imagestore.store import Store
from imagestore.sync import ProblemKind, run
from imagestore.sync.scan import names, scan


def check(store: Store) -> list[Finding]:
    root = store.root
    fresh = Index.scratch()
    try:
        with fresh.write() as tx:
            rebuild = run(tx, root, full=True)
        truth = listing.contents(fresh)
        configs = listing.configs(fresh)
    finally:
        fresh.close()
    findings = checks.from_problems(rebuild.problems, root, truth)
    content = set(names(root, CONTENT))  # each folder listed once for every check
    scans = {kind: scan(root, kind) for kind in (METADATA, LAYERS, MOUNTS)}
    findings += checks.leftovers(root, content, scans[LAYERS])
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
    return findings


def repair(store: Store, findings: list[Finding]) -> list[Finding]:
    """Remove leftovers of interrupted writes, orphan metadata, tags of missing images and
    content files nothing refers to whose layers are missing; then resync (or rebuild) the
    index. Nothing else is touched."""
    check_writable(store.root.path, readonly=store.readonly, force=store.force,
                   what="repair the store")
    repaired = [f for f in findings if f.repairable]
    base = store.root.path
    for f in repaired:
        if f.check == ProblemKind.MISSING_LAYER:
            name = f.path[len(CONTENT):]
            _remove(base / (METADATA + name))
        if f.check != ProblemKind.DANGLING_TAG:
            _remove(base / f.path)
    report.drop_references(store.root.repositories,
                           [f.subject for f in repaired if f.check == ProblemKind.DANGLING_TAG])
    stale = [f for f in findings if f.check == ProblemKind.INDEX]
    if store.index.damage():
        store.index.rebuild(lambda tx: run(tx, store.root))
    elif stale or repaired:
        store.sync(full=True)
    return repaired + stale


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


__all__ = ["Finding", "check", "repair"]
