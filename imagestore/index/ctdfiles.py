"""The blobs a containerd store's layers are read from, for their file lists (which live in
``filelists``' tables, keyed by diff ID and shared with classic stores)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imagestore.index.queries import Reader

# Every layer blob of the store's manifests that has a diff ID: present ones first.
_BLOBS = ("SELECT diff_id, digest, media_type, present FROM ctd_layers "
          "WHERE store_id = :s AND diff_id IS NOT NULL "
          "ORDER BY diff_id, present DESC, digest")


def layer_blobs(q: Reader) -> dict[str, list[tuple[str, str, bool]]]:
    """For each diff ID of this containerd store: (blob digest, media type, present) of
    each distinct blob that holds it, present ones first."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for diff_id, digest, media_type, present in q.rows(_BLOBS, {"s": q.store}):
        blobs = out.setdefault(diff_id, [])
        if all(b[0] != digest for b in blobs):
            blobs.append((digest, media_type, bool(present)))
    return out


__all__ = ["layer_blobs"]
