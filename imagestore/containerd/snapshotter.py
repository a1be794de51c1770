"""A snapshotter's own ``metadata.db`` (containerd core/snapshots/storage/bolt.go): each
snapshot's numeric id (its folder), kind, parent and disk usage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagestore.containerd.decode import DecodeError, uvarint, varint
from imagestore.moby import bbolt

KINDS = {1: "view", 2: "active", 3: "committed"}


@dataclass(frozen=True)
class Snapshot:
    name: str  # "<ns>/<n>/<key>"
    id: int
    kind: str
    parent: str | None
    size: int
    inodes: int


def read(path: Path) -> tuple[dict[str, Snapshot], int]:
    """Every snapshot of the file by backend name, and the file's transaction ID."""
    tree, txid = bbolt.read_with_txid(path)
    out: dict[str, Snapshot] = {}
    top = tree.bucket(b"v1")
    snaps = top.bucket(b"snapshots") if top else None
    for key, rec in (snaps or bbolt.Bucket()).buckets().items():
        try:
            sid = uvarint(rec.value(b"id") or b"")[0]
            size = varint(rec.value(b"size") or b"\x00")
            inodes = varint(rec.value(b"inodes") or b"\x00")
        except DecodeError:
            sid, size, inodes = -1, 0, 0
        kind = (rec.value(b"kind") or b"\x00")[:1]
        parent = rec.value(b"parent")
        out[key.decode("utf-8", "replace")] = Snapshot(
            key.decode("utf-8", "replace"), sid, KINDS.get(kind[0], "unknown"),
            parent.decode("utf-8", "replace") if parent else None, size, inodes)
    return out, txid


__all__ = ["KINDS", "Snapshot", "read"]
