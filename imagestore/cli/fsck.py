"""``fsck``: verify a root the slow, thorough way, and repair only what is safe to repair.

The sync trusts signatures; fsck trusts nothing: it rebuilds the index from every file on
disk into a private in-memory index, with the sync's own readers (so it re-hashes every
content file and walks every layer chain by the same rules), reports what that rebuild
skipped, compares it with the stored index, and checks what no sync looks at (orphan
metadata, parent links, layer chains, unreferenced layers).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from imagestore.errors import IndexCorrupt
from imagestore.index import Index, listing
from imagestore.moby.daemon import check_writable
from imagestore.moby.digest import chain_id, is_text
from imagestore.moby.image import Image
from imagestore.moby.root import CONTENT, LAYERS, METADATA, Root
from imagestore.store import Store
from imagestore.sync import Problem, ProblemKind, run
from imagestore.sync.scan import names, scan


@dataclass(frozen=True)
class Finding:
    path: str
    check: ProblemKind
    message: str
    action: str

    @classmethod
    def of(cls, kind: ProblemKind, path: str, message: str) -> Finding:
        return cls(path, kind, message, kind.action)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "check": str(self.check), "message": self.message,
                "action": self.action}


def check(store: Store) -> list[Finding]:
    root = store.root
    fresh = Index.scratch()
    try:
        with fresh.write() as tx:
            report = run(tx, root, full=True)
        truth = listing.contents(fresh)
        configs = listing.configs(fresh)
    finally:
        fresh.close()
    findings = [_from_problem(p) for p in report.problems]
    findings += _leftovers(root)
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
    findings += _links(truth, configs)
    return findings


def _from_problem(problem: Problem) -> Finding:
    kind = problem.kind if isinstance(problem.kind, ProblemKind) else ProblemKind.INDEX
    return Finding.of(kind, problem.path, problem.reason)


def _leftovers(root: Root) -> list[Finding]:
    """Metadata of images with no content, and layer folders of an interrupted delete."""
    findings = []
    content = set(names(root, CONTENT))
    for name in sorted(names(root, METADATA)):
        if is_text(name) and name not in content:
            findings.append(Finding.of(ProblemKind.ORPHAN_METADATA, METADATA + name,
                                       "metadata of an image with no content"))
    for name in sorted(scan(root, LAYERS).others):
        if name.endswith("-removing") and is_text(name):
            findings.append(Finding.of(ProblemKind.TEMP_FILE, LAYERS + name,
                                       "layer folder of an interrupted delete"))
    return findings


def _links(truth: dict[str, set[tuple[Any, ...]]], configs: dict[str, bytes]
           ) -> list[Finding]:
    """Parent links, layer chains and unreferenced layers, on the verified state."""
    findings = []
    for child, parent in sorted(truth["parent link"], key=str):
        if parent not in configs:
            findings.append(Finding.of(ProblemKind.PARENT, METADATA + child[7:] + "/parent",
                                       f"names {parent}, which is not in the store"))
    layers = {str(r[0]): r for r in truth["layer"]}
    used: set[str] = set()
    for image_id, raw in sorted(configs.items()):
        diff_ids = Image(image_id, raw).rootfs.diff_ids
        # Every prefix's chain ID, aligned with the diff IDs ("" is one to Go's decoder).
        chains = [chain_id(diff_ids[: i + 1]) or "" for i in range(len(diff_ids))]
        used.update(chains)
        for i, (chain, diff) in enumerate(zip(chains, diff_ids, strict=True)):
            layer = layers.get(chain)
            if layer is None or layer[1] != diff or layer[2] != (chains[i - 1] if i else None):
                findings.append(Finding.of(ProblemKind.LAYER_CHAIN, CONTENT + image_id[7:],
                                           f"layer {i} ({chain}) is missing or inconsistent"))
                break
    mounted = {r[1] for r in truth["mount"] if r[1]}
    parents = {r[2] for r in truth["layer"]}
    for chain in sorted(layers):
        if chain not in used and chain not in mounted and chain not in parents:
            findings.append(Finding.of(ProblemKind.UNREFERENCED_LAYER, LAYERS + chain[7:],
                                       "no image and no container uses this layer"))
    return findings


def repair(store: Store, findings: list[Finding]) -> list[Finding]:
    """Remove temp files and orphan metadata, then resync the index; nothing else."""
    check_writable(store.root.path, readonly=store.readonly, force=store.force,
                   what="repair the store")
    repaired = []
    base = store.root.path
    for f in findings:
        if not f.check.repairable:
            continue
        target = base / f.path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        repaired.append(f)
    stale = [f for f in findings if f.check == ProblemKind.INDEX]
    if store.index.damage():
        store.index.rebuild(lambda tx: run(tx, store.root))
    elif stale or repaired:
        store.sync(full=True)
    return repaired + stale


__all__ = ["Finding", "check", "repair"]
