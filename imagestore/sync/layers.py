"""The layers step of a sync: layer folders and container mounts into the index, chain sizes
resolved as moby's layer store loads them, and the set of loadable layers that the images
step asks about."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from imagestore.moby.digest import PREFIX, is_hex64
from imagestore.moby.layerdb import BadEntry
from imagestore.moby.root import CONTENT, LAYERS, METADATA, MOUNTS
from imagestore.sync import chains
from imagestore.sync.changes import Changes
from imagestore.sync.compact import (
    LayerCheck,
    Link,
    chain_id,
    digest,
    key,
    packed,
    split,
    unpack_ids,
)
from imagestore.sync.problems import Problem, ProblemKind
from imagestore.sync.read import check_layers
from imagestore.sync.scan import Scan
from imagestore.sync.state import Pass
from imagestore.sync.workers import CHUNK, chunked_map, started_map

# Layer checks a new index starts before it asks for any: about what two workers do while
# this process saves the listing's signatures.
LAYER_CHUNKS_AHEAD = 16
_ASK_MAX = 2000  # layer lookups answered one by one before all chains are loaded at once
# Layer rows built at once: memory stays flat however many folders were read.
_ROWS_AT_ONCE = 5000


class LayerChange(NamedTuple):
    """What the layers step did that the images step must follow."""

    moved: bool  # the set of loadable layers changed
    # Chain IDs that loaded before and do not now; ``None``: not known which (every image is
    # then checked for its layer).
    lost: list[str] | None


UNMOVED = LayerChange(False, [])


class LoadableLayers:
    """Which chains load: asked one by one while few questions come, loaded whole past that
    (a cold sync), or handed over by the layers step when it resolved them all."""

    def __init__(self, p: Pass) -> None:
        self.p = p
        self.chains: set[bytes] | None = None  # raw digests
        self._asked: dict[str, bool] = {}

    def __contains__(self, chain: str) -> bool:
        if self.chains is None:
            if len(self._asked) < _ASK_MAX:
                if chain not in self._asked:
                    self._asked[chain] = self.p.tx.has_layer(chain)
                return self._asked[chain]
            self.chains = {digest(c) for c in self.p.tx.layer_ids()}
        return digest(chain) in self.chains

    def ask(self, chains: Iterable[str | None]) -> None:
        """Ask about these chains in one query (a chunk of images read) rather than one
        query each."""
        if self.chains is not None:
            return
        todo = {c for c in chains if c is not None and c not in self._asked}
        if not todo or len(self._asked) + len(todo) >= _ASK_MAX:
            return  # past the limit, the first question loads every chain
        found = self.p.tx.layers_present(todo)
        self._asked.update((c, c in found) for c in todo)


def sync_layers(p: Pass, changes: Changes, loadable: LoadableLayers) -> LayerChange:
    """Update layers and mounts, and say how the set of loadable layers changed. The images'
    scans are started as soon as the layers' reads are done."""
    early: list[tuple[dict[bytes, bytes], list[bytes], Iterator[list[LayerCheck]]]] = []

    def check_all(current: Scan) -> None:
        # Every folder is read (a new index): the workers start on them now, while this
        # process saves what the listing found.
        pool: dict[bytes, bytes] = {}
        keys = [key(n, pool) for n in current.names]
        early.append((pool, keys, started_map(check_layers, p.root.base, keys,
                                              ahead=LAYER_CHUNKS_AHEAD)))

    every = p.full or not (p.tx.has_layers() or p.tx.buckets.any(LAYERS))
    changed, removed, present = changes.diff(LAYERS, scanned=check_all if every else None)
    mounts_changed, mounts_removed, _ = changes.diff(MOUNTS)
    if mounts_changed or mounts_removed:
        _sync_mounts(p)
    if not changed and not removed:
        return UNMOVED
    broken = {path[len(LAYERS):] for path in p.problems.old_paths(LAYERS)}
    p.problems.clear(LAYERS + n for n in itertools.chain(changed, removed, broken))
    if not early:
        return _update(p, changes, (changed, removed, broken), present)
    # A new index: every folder is read and no layer is stored.
    del changed, removed, present, broken
    pool, keys, checks = early.pop()
    if keys:
        p.report.read[LAYERS] += len(keys)
    # Only what chain sizes and new rows need stays in memory: chain -> Link.
    links: dict[bytes, Link] = {}
    _take_checks(p, links, pool, keys, checks)
    del keys, pool
    valid, unloadable = chains.resolve(links)
    p.problems.note(unloadable)
    # The workers scan the images' entries while this process writes the layers.
    changes.start(CONTENT)
    changes.start(METADATA)
    _write_layers(p, links, valid, {})
    del links
    # Grown, not presized from the dict: a table of half the size.
    loadable.chains = {chain for chain in valid}
    del valid
    return LayerChange(bool(loadable.chains), None)


def _take_checks(p: Pass, links: dict[bytes, Link], pool: dict[bytes, bytes],
                 keys: list[bytes], checks: Iterator[list[LayerCheck]]) -> None:
    """The folders read, as links (or problems)."""
    for done, checked in enumerate(checks):
        p.tell("layers", done * CHUNK + len(checked), len(keys))
        start = done * CHUNK
        for chain, check in zip(keys[start : start + len(checked)], checked, strict=True):
            if check.problem is not None:
                p.problems.note([check.problem])
                continue
            parent = check.parent and pool.setdefault(check.parent, check.parent)
            links[chain] = Link(parent, check.diff_size, check.ids)


def _update(p: Pass, changes: Changes, moved: tuple[set[str], set[str], set[str]],
            present: Scan) -> LayerChange:
    """Layers of an index that has some: the folders that moved are read again, and of the
    stored layers only those above them (whose chains may now load differently) and those
    just below them (which they stand on) are looked up, so a pull into a large store costs
    what it brought, not the store's size. The result is the one resolving every chain
    would give: a stored layer with nothing moved beneath it keeps its chain."""
    changed, removed, broken = moved
    pool: dict[bytes, bytes] = {}
    keys = [key(n, pool) for n in sorted(changed | broken) if is_hex64(n) and n in present]
    checks = chunked_map(check_layers, p.root.base, keys)
    if keys:
        p.report.read[LAYERS] += len(keys)
    odd = p.tx.odd_layers()  # rows no sync writes (an index edited by hand): dropped
    dropped = {PREFIX + n for n in itertools.chain(changed, removed, broken)}
    dropped.update(odd)
    del changed, removed, broken, present
    ignored = set(odd)
    stored: dict[bytes, tuple[int, int]] = {}
    links: dict[bytes, Link] = {}
    for chain_name, parent_name, diff_size, size, depth in _above(p, dropped):
        if chain_name in ignored:
            continue
        try:
            chain = key(chain_name, pool)
            parent = None if parent_name is None else key(parent_name, pool)
        except ValueError:  # not hex: dropped, and what stands on it does not load
            odd.append(chain_name)
            ignored.add(chain_name)
            continue
        stored[chain] = (size, depth)
        if chain_name not in dropped:  # unchanged on disk: its link is the stored one
            links[chain] = Link(parent, diff_size, b"")
    _take_checks(p, links, pool, keys, checks)
    del keys
    below = {chain_id(link.parent) for link in links.values()
             if link.parent is not None and link.parent not in links} - dropped
    known: dict[bytes, int] = {}
    for c, parent_name, _, size, depth in p.tx.layer_rows(below):
        if parent_name is not None and not is_hex64(parent_name[len(PREFIX):]):
            odd.append(c)  # stands on a row no sync writes: dropped, as is what is above it
        elif c not in ignored:
            known[key(c, pool)] = packed(size, depth)
    del pool, below
    valid, unloadable = chains.resolve(links, known)
    p.problems.note(unloadable)
    changes.start(CONTENT)
    changes.start(METADATA)
    lost = [chain_id(c) for c in stored if c not in valid]
    gone = odd + lost + [chain_id(c) for c in stored if c in valid and links[c].ids]
    p.tx.delete_layers(gone)
    _write_layers(p, links, valid, stored)
    return LayerChange(bool(gone) or any(c not in stored for c in valid), lost + odd)


def _above(p: Pass, dropped: set[str]) -> list[tuple[str, str | None, int, int, int]]:
    """The stored rows of these chains and of every layer above them, walked a level at a
    time through the index's parent column."""
    rows = p.tx.layer_rows(dropped)
    seen = set(dropped)
    level = dropped
    while level:
        up = [r for r in p.tx.layer_rows(level, children=True) if r[0] not in seen]
        level = {r[0] for r in up}
        seen |= level
        rows += up
    return rows


def _write_layers(p: Pass, links: dict[bytes, Link], valid: dict[bytes, int],
                  stored: dict[bytes, tuple[int, int]]) -> None:
    """Folders read now are (re)inserted whole; the rest may only need new chain sizes."""
    to_write = sorted(c for c, link in links.items() if link.ids and c in valid)
    with p.tx.bulk_load("layers", len(to_write)):
        for start in range(0, len(to_write), _ROWS_AT_ONCE):
            rows = []
            for chain in to_write[start : start + _ROWS_AT_ONCE]:
                link = links[chain]
                diff_id, cache_id = unpack_ids(link.ids)
                size, depth = split(valid[chain])
                rows.append((chain_id(chain), diff_id,
                             None if link.parent is None else chain_id(link.parent),
                             link.diff_size, size, cache_id, depth))
            p.tx.insert_layers(rows)
        del to_write
        for chain, packed in valid.items():
            size, depth = split(packed)
            if chain in stored and not links[chain].ids and stored[chain] != (size, depth):
                p.tx.set_layer_size(chain_id(chain), size, depth)


def _sync_mounts(p: Pass) -> None:
    layerdb = p.root.layerdb
    rows = []
    p.problems.clear(p.problems.old_paths(MOUNTS))
    for name in sorted(layerdb.mount_names()):
        p.report.read[MOUNTS] += 1
        try:
            m = layerdb.read_mount(name)
        except BadEntry as exc:
            p.problems.note([Problem(MOUNTS + name, ProblemKind.BAD_MOUNT,
                                     f"mount not loaded: {exc}")])
            continue
        rows.append((m.name, m.mount_id, m.init_id, m.parent))
    p.tx.replace_mounts(rows)


__all__ = ["UNMOVED", "LayerChange", "LoadableLayers", "sync_layers"]
