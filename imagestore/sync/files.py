"""Layer file lists into the index, on first need: each diff ID of the store whose list was
never read is read once from its ``tar-split.json.gz`` (``moby.layerfiles``) and written
through ``Writer``; lists that no store holds any more are then removed. A containerd store's
lists are read from its blobs (``sync.ctdfiles``)."""

from __future__ import annotations

import datetime as dt
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imagestore.index import Writer
from imagestore.index.location import stamp
from imagestore.moby.digest import PREFIX, is_image_id
from imagestore.moby.layerfiles import LayerFiles, read_layer_files
from imagestore.moby.root import Root
from imagestore.sync.report import Progress
from imagestore.sync.workers import shared_workers, start_workers, started_call


@dataclass
class FilesReport:
    """What one reading of lists did: layers read, entries written, lists removed, and the
    problems of the layers read, as (diff ID, reason)."""

    layers: int = 0
    entries: int = 0
    removed: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"layers": self.layers, "entries": self.entries, "removed": self.removed,
                "problems": [{"layer": d, "reason": r} for d, r in self.problems]}


def read_files(tx: Writer, root: Root, progress: Progress | None = None) -> FilesReport:
    """Read the lists of this store's layers not yet read (each diff ID once)."""
    report = FilesReport()
    todo = tx.unread_layers()
    when = stamp(dt.datetime.now(dt.timezone.utc))
    for done, (diff_id, (rows, problems)) in enumerate(_parsed(root.path, todo), 1):
        if tx.write_file_list(diff_id, rows, problems, when):
            report.layers += 1
            report.entries += len(rows)
            report.problems += [(diff_id, p) for p in problems]
        if progress is not None:
            progress("files", done, len(todo))
    report.removed = tx.forget_unheld_files()
    return report


# -- parsing in worker processes (``sync.workers``): the lists are parsed there while this
# process writes the rows of those already parsed. Below ``PARALLEL_LAYERS`` layers the
# parsing stays in-process (starting workers costs more than it saves).
PARALLEL_LAYERS = 16
Parsed = tuple[list[tuple[object, ...]], list[str]]


def _parse(base: str, item: tuple[str, str]) -> Parsed:
    """One layer's ``FileRow``s and problems (in a worker: tuples pickle cheaply)."""
    _, chain_id = item
    found = LayerFiles(problems=["chain ID is not a sha256 digest"]) \
        if not is_image_id(chain_id) else \
        read_layer_files(Path(base) / "layerdb" / "sha256" / chain_id[len(PREFIX):])
    return ([(e.path, e.type, e.size, e.mode, e.uid, e.gid, e.mtime, e.link, e.crc64,
              e.whiteout, e.target) for e in found.entries], found.problems)


def _parsed(path: Path, todo: list[tuple[str, str]]) -> Iterator[tuple[str, Parsed]]:
    """(diff ID, parsed list) of each layer of ``todo``, in order."""
    base = str(path)
    with shared_workers():
        if len(todo) < PARALLEL_LAYERS or not start_workers():
            for item in todo:
                yield item[0], _parse(base, item)
            return
        window: deque[tuple[str, Callable[[], Parsed]]] = deque()
        ahead = 2 * (os.cpu_count() or 1)
        for item in todo:
            window.append((item[0], started_call(_parse, base, item)))
            if len(window) > ahead:
                diff_id, result = window.popleft()
                yield diff_id, result()
        while window:
            diff_id, result = window.popleft()
            yield diff_id, result()


__all__ = ["FilesReport", "read_files"]
