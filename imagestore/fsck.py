"""``fsck``: verify a root the slow, thorough way, and repair only what is safe to repair.

The sync pass trusts signatures; fsck trusts nothing: it re-hashes every content file, walks
every image's layer chain, and rebuilds the index in memory to compare with the stored one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, select

from imagestore import db, schema
from imagestore.digest import PREFIX, chain_id, digest_of, is_hex64, is_text, printable
from imagestore.entries import CONTENT, LAYERS, METADATA
from imagestore.fs import TEMP_PREFIX, read_regular
from imagestore.image import Image
from imagestore.store import Store
from imagestore.sync import run


@dataclass(frozen=True)
class Finding:
    path: str
    check: str
    message: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _snapshot(conn: Connection) -> dict[str, set[tuple[object, ...]]]:
    t, p, lt, mt, tt = (schema.images, schema.parents, schema.layers, schema.mounts,
                        schema.tags)
    return {
        "image": {tuple(r) for r in conn.execute(
            select(t.c.id, t.c.chain_id, t.c.last_updated, t.c.built_locally))},
        "parent link": {tuple(r) for r in conn.execute(select(p.c.child_id, p.c.parent_id))},
        "layer": {tuple(r) for r in conn.execute(
            select(lt.c.chain_id, lt.c.diff_id, lt.c.parent_id, lt.c.diff_size, lt.c.size))},
        "mount": {tuple(r) for r in conn.execute(select(mt.c.name, mt.c.parent_id))},
        "tag": {tuple(r) for r in conn.execute(select(tt.c.ref, tt.c.image_id))},
    }


def check(store: Store) -> list[Finding]:
    findings: list[Finding] = []
    base = store.root.path
    content = base / CONTENT
    # 1. every content file's digest, and leftovers of interrupted writes
    for path in sorted(content.iterdir()) if content.is_dir() else []:
        if not is_text(path.name):
            continue  # the rebuild below reports it (bad-name)
        rel = CONTENT + path.name
        if path.name.startswith(TEMP_PREFIX):
            findings.append(Finding(rel, "temp-file", "left by an interrupted write",
                                    "remove it (fsck --repair)"))
            continue
        if not is_hex64(path.name):
            findings.append(Finding(rel, "invalid-name", "not a 64-hex digest name",
                                    "inspect and remove it by hand"))
            continue
        try:
            data = read_regular(path)
        except OSError as exc:
            findings.append(Finding(rel, "unreadable", exc.strerror or str(exc),
                                    "inspect it by hand"))
            continue
        if digest_of(data) != PREFIX + path.name:
            findings.append(Finding(rel, "digest", "content does not hash to its name",
                                    "restore it from a backup, or remove the image"))
    # 2. orphan metadata folders and their temp files
    metadata = base / METADATA
    for folder in sorted(metadata.iterdir()) if metadata.is_dir() else []:
        if not is_text(folder.name):
            continue
        rel = METADATA + folder.name
        if not (content / folder.name).exists():
            findings.append(Finding(rel, "orphan-metadata", "metadata of an image with no content",
                                    "remove it (fsck --repair)"))
        elif folder.is_dir() and not folder.is_symlink():
            for name in os.listdir(folder):
                if name.startswith(TEMP_PREFIX):
                    findings.append(Finding(f"{rel}/{printable(name)}", "temp-file",
                                            "left by an interrupted write",
                                            "remove it (fsck --repair)"))
    layers = base / LAYERS
    for folder in sorted(layers.glob("*-removing")):
        if not is_text(folder.name):
            continue
        findings.append(Finding(LAYERS + folder.name, "temp-file",
                                "layer folder of an interrupted delete",
                                "remove it (fsck --repair)"))
    # 3. the index against a rebuild from disk
    fresh = db.make_engine("sqlite://")
    try:
        db.upgrade(fresh)
        with fresh.connect().execution_options(write=True) as conn, conn.begin():
            report = run(conn, store.root, full=True)
            truth = _snapshot(conn)
            images = {r.id: Image(r.id, r.raw) for r in conn.execute(
                select(schema.images.c.id, schema.images.c.raw))}
            valid_layers = {str(r[0]): r for r in truth["layer"]}
    finally:
        fresh.dispose()
    seen = {f.path for f in findings}
    findings += [Finding(p.path, p.kind, p.reason, "fix or remove the entry; it is skipped")
                 for p in report.problems if p.path not in seen]
    with store.engine.connect() as conn:
        stored = _snapshot(conn)
    for kind, rows in truth.items():
        for row in sorted(rows - stored[kind], key=str):
            findings.append(Finding(str(row[0]), "index", f"{kind} on disk missing from index",
                                    "resync the index (fsck --repair)"))
        for row in sorted(stored[kind] - rows, key=str):
            findings.append(Finding(str(row[0]), "index", f"{kind} in index not on disk",
                                    "resync the index (fsck --repair)"))
    # 4. layer chains, parent links, unreferenced layers (on the verified state)
    for child, parent in sorted(truth["parent link"], key=str):
        if parent not in images:
            findings.append(Finding(METADATA + str(child)[7:] + "/parent", "parent",
                                    f"names {parent}, which is not in the store",
                                    "set another parent, or ignore (docker does)"))
    used: set[str] = set()
    for image_id, image in sorted(images.items()):
        diff_ids = image.rootfs.diff_ids
        # Every prefix's chain ID, even for odd diff IDs ("" is one to Go's decoder).
        chains = [chain_id(diff_ids[: i + 1]) or "" for i in range(len(diff_ids))]
        used.update(chains)
        for i, (chain, diff) in enumerate(zip(chains, image.rootfs.diff_ids, strict=True)):
            layer = valid_layers.get(chain)
            if layer is None or layer[1] != diff or layer[2] != (chains[i - 1] if i else None):
                findings.append(Finding(CONTENT + image_id[7:], "layer-chain",
                                        f"layer {i} ({chain}) is missing or inconsistent",
                                        "re-pull or rebuild the image"))
                break
    mounted = {r[1] for r in truth["mount"] if r[1]}
    parents = {r[2] for r in truth["layer"]}
    for chain in sorted(valid_layers):
        if chain not in used and chain not in mounted and chain not in parents:
            findings.append(Finding(LAYERS + chain[7:], "unreferenced-layer",
                                    "no image and no container uses this layer",
                                    "docker keeps it until the next layer GC; remove by hand "
                                    "if unwanted"))
    return findings


def repair(store: Store, findings: list[Finding]) -> list[Finding]:
    """Remove temp files and orphan metadata, then resync the index; nothing else."""
    store.check_writable("repair the store")
    repaired = []
    base = store.root.path
    for f in findings:
        if f.check not in ("temp-file", "orphan-metadata"):
            continue
        target = base / f.path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        repaired.append(f)
    if any(f.check == "index" for f in findings) or repaired:
        store.sync(full=True)
        repaired += [f for f in findings if f.check == "index"]
    return repaired


__all__ = ["Finding", "check", "repair"]
