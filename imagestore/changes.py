"""What the index remembers of the disk, to tell cheaply what changed since the last sync.

Entries are grouped in buckets (a kind and the first characters of a name). Each bucket row
holds the digest of its entries' signatures and the signatures themselves, as a JSON object
that sqlite3 users can read with ``json_each``. A warm sync compares digests only; a bucket
whose digest moved is compared entry by entry. A cold sync of 100,000 images writes some
12,000 rows here instead of one per entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from imagestore import schema
from imagestore.db import bulk_insert
from imagestore.entries import KINDS, Digests, Root, bucket, entry_signature

# The digest of a bucket that must be compared entry by entry (real digests are >= 0).
UNKNOWN = -1
_BATCH = 500


def under(column: Any, kind: str) -> Any:
    """Rows whose key lies under ``kind`` (a range, so the primary key answers it)."""
    if kind.endswith("/"):
        return (column >= kind) & (column < kind[:-1] + "0")
    return column == kind


def split(path: str) -> tuple[str, str]:
    """An entry path as (kind, name)."""
    for kind in KINDS:
        if path.startswith(kind):
            return kind, path[len(kind):]
    raise ValueError(f"not an entry path: {path!r}")


def stored_digests(conn: Connection, kind: str) -> Digests:
    b = schema.entry_buckets
    return {r.prefix[len(kind):]: (r.digest, r.entries) for r in conn.execute(
        select(b.c.prefix, b.c.digest, b.c.entries).where(under(b.c.prefix, kind)))}


def stored_signatures(conn: Connection, kind: str, buckets: set[str] | None) -> dict[str, int]:
    """Name -> stored signature of the entries of one kind in these buckets (``None``: all)."""
    b = schema.entry_buckets
    query = select(b.c.signatures)
    out: dict[str, int] = {}
    if buckets is None:
        for text in conn.scalars(query.where(under(b.c.prefix, kind))):
            out.update(_load(text))
        return out
    for chunk in _chunks(sorted(kind + k for k in buckets)):
        for text in conn.scalars(query.where(b.c.prefix.in_(chunk))):
            out.update(_load(text))
    return out


def save(conn: Connection, kind: str, now: dict[str, int], digests: Digests,
         replaced: Iterable[str]) -> None:
    """Replace the rows of the ``replaced`` buckets with what ``now`` holds of them (a bucket
    left empty gets no row); ``digests`` are those of ``now``, by bucket."""
    b = schema.entry_buckets
    for chunk in _chunks(sorted(kind + k for k in replaced)):
        conn.execute(delete(b).where(b.c.prefix.in_(chunk)))
    grouped: dict[str, dict[str, int]] = {}
    for name, sig in now.items():
        grouped.setdefault(bucket(name), {})[name] = sig
    # Written a slice at a time: a cold sync's 12,000 JSON objects need not all be alive.
    keys = sorted(grouped)
    for part in _chunks(keys):
        bulk_insert(conn, b, [{"prefix": kind + k, "digest": digests[k][0],
                               "entries": len(grouped[k]), "signatures": _dump(grouped[k])}
                              for k in part])


def record(conn: Connection, root: Root, paths: Iterable[str]) -> None:
    """Store the current signature of entries the store itself just wrote or removed.

    Their buckets are marked unknown rather than summed again here (the next sync compares
    them entry by entry); a bucket with no row reads as empty, so the row stays, even with
    no entry left in it."""
    b = schema.entry_buckets
    for path in paths:
        kind, name = split(path)
        prefix = kind + bucket(name)
        sigs = _load(conn.scalar(select(b.c.signatures).where(b.c.prefix == prefix)))
        sig = entry_signature(root, kind, name)
        if sig is None:
            sigs.pop(name, None)
        else:
            sigs[name] = sig
        conn.execute(delete(b).where(b.c.prefix == prefix))
        conn.execute(insert(b).values(prefix=prefix, digest=UNKNOWN, entries=len(sigs),
                                      signatures=_dump(sigs)))


def _dump(sigs: dict[str, int]) -> str:
    return json.dumps(sigs, separators=(",", ":"), sort_keys=True)


def _load(text: str | None) -> dict[str, int]:
    """Signatures of one bucket; anything unreadable counts as nothing stored (its entries
    are then read again, which is always safe)."""
    try:
        sigs = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(sigs, dict):
        return {}
    return {k: v for k, v in sigs.items() if type(v) is int}


def _chunks(items: list[Any], size: int = _BATCH) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
