"""``fsck`` of a containerd store: what ``imagestore.containerd.check`` finds on the disk
(blobs, documents, records, garbage, ingests, snapshot chains, a torn ``meta.db``), and the
index against the disk. Nothing under the root is ever written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagestore.containerd.check import check as check_disk
from imagestore.moby.problems import ProblemKind
from imagestore.service.findings import Finding

if TYPE_CHECKING:
    from imagestore.service.ctdhost import ContainerdHost


def check(store: ContainerdHost) -> list[Finding]:
    """Every finding on the namespace, as fsck prints them (``path`` is the subject: a
    digest, ``<snapshotter>/<key>``, or a path under the root)."""
    out = [Finding.of(ProblemKind(f.kind), f.subject, f.message)
           for f in check_disk(store.layout, store.namespace)]
    if not store.fresh():
        out.append(Finding.of(ProblemKind.INDEX, "index",
                              "the index is older than the containerd root: resync it "
                              "(imagestore sync)", action="imagestore sync"))
    return out


__all__ = ["check"]
