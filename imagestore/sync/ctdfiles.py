"""A containerd store's layer file lists into the index (``sync.files`` for classic ones):
each diff ID of the namespace whose list no store of the index has read is read once from a
blob of the content store that holds it (``containerd.layerfiles``), and written through
``Writer`` into the same lists, keyed by diff ID, as a classic store's."""

from __future__ import annotations

import datetime as dt

from imagestore.containerd.content import blob_size
from imagestore.containerd.layerfiles import read_blob_files
from imagestore.containerd.layout import Layout
from imagestore.index import Writer
from imagestore.index.ctdfiles import layer_blobs
from imagestore.index.location import stamp
from imagestore.moby.layerfiles import LayerFiles
from imagestore.sync.files import FilesReport
from imagestore.sync.report import Progress

NO_BLOB = "no blob of the layer is in the content store"


def _from_blobs(layout: Layout, diff_id: str, blobs: list[tuple[str, str, bool]]
                ) -> LayerFiles | None:
    """The list read from the first blob of the layer that reads without a problem (or the
    one with the fewest); ``None`` when no blob of it is in the content store."""
    best: LayerFiles | None = None
    for digest, media_type, _ in blobs:
        if blob_size(layout, digest) is None:
            continue  # absent (whatever the last sync saw): another store may read it
        found = read_blob_files(layout, digest, diff_id, media_type)
        if best is None or len(found.problems) < len(best.problems):
            best = found
        if not found.problems:
            break
    return best


def read_containerd_files(tx: Writer, layout: Layout, progress: Progress | None = None
                          ) -> FilesReport:
    """Read the lists of this namespace's layers not yet read by any store: each from a
    present blob that holds it. A layer without one is a problem of the report and stays
    unread (a later reading, or another store, may have it)."""
    report = FilesReport()
    todo = tx.unread_layers()
    blobs = layer_blobs(tx) if todo else {}
    when = stamp(dt.datetime.now(dt.timezone.utc))
    for done, (diff_id, _) in enumerate(todo, 1):
        found = _from_blobs(layout, diff_id, blobs.get(diff_id, []))
        if found is None:
            report.problems.append((diff_id, NO_BLOB))
        else:
            rows = [(e.path, e.type, e.size, e.mode, e.uid, e.gid, e.mtime, e.link, e.crc64,
                     e.whiteout, e.target) for e in found.entries]
            if tx.write_file_list(diff_id, rows, found.problems, when):
                report.layers += 1
                report.entries += len(rows)
                report.problems += [(diff_id, p) for p in found.problems]
        if progress is not None:
            progress("files", done, len(todo))
    report.removed = tx.forget_unheld_files()
    return report


__all__ = ["NO_BLOB", "read_containerd_files"]
