"""Whether a containerd store's sync would find nothing to do, told from what containerd
changes whenever its images change: ``meta.db``'s transaction ID (two small reads, no lock),
each snapshotter's ``metadata.db`` transaction ID, and the blob, ingest (and Docker's
containers) folders' own stat (a blob added or removed changes its folder). Read through any
``Reader``: a warm command line answers without SQLAlchemy."""

from __future__ import annotations

import json
import os

from imagestore.containerd.content import Platform, host_platform
from imagestore.containerd.layout import Layout
from imagestore.index.ctdread import SIGNATURE
from imagestore.index.queries import Reader
from imagestore.moby import bbolt


def signature(layout: Layout, namespace: str, platform: Platform | None = None) -> str:
    """What the disk looks like to a sync, in a few stats and two small reads per bbolt
    file; equal signatures mean nothing a sync reads has changed."""
    parts: dict[str, object] = {"ns": namespace, "platform": str(platform or host_platform())}
    try:
        parts["meta"] = bbolt.txid(layout.meta)
    except bbolt.BoltError as exc:
        parts["meta"] = f"error: {exc}"
    for name in layout.snapshotters():
        try:
            parts[f"sn:{name}"] = bbolt.txid(layout.snapshotter_db(name))
        except bbolt.BoltError:
            parts[f"sn:{name}"] = "error"
    folders = [("blobs", layout.blobs / "sha256"), ("ingest", layout.ingest)]
    if layout.docker_root is not None:
        folders.append(("containers", layout.docker_root / "containers"))
    for label, folder in folders:
        try:
            st = os.stat(folder)
            parts[label] = [st.st_ino, st.st_mtime_ns, st.st_nlink]
        except OSError:
            parts[label] = None
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def unchanged(layout: Layout, namespace: str, q: Reader, platform: Platform | None = None
              ) -> bool:
    return q.setting(SIGNATURE) == signature(layout, namespace, platform)


__all__ = ["signature", "unchanged"]
