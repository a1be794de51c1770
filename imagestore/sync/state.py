"""One sync pass's shared state, handed to each of its steps (scan, compare, read, write)
rather than inherited: the transaction, the root, the options, the problems, the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagestore.index import Writer
from imagestore.moby.root import Root
from imagestore.sync.problems import Problems
from imagestore.sync.report import Progress, SyncReport


@dataclass
class Pass:
    tx: Writer
    root: Root
    problems: Problems
    full: bool = False
    progress: Progress | None = None
    report: SyncReport = field(default_factory=SyncReport)

    @classmethod
    def start(cls, tx: Writer, root: Root, *, full: bool = False,
              progress: Progress | None = None) -> Pass:
        return cls(tx, root, Problems(tx), full=full, progress=progress)

    def tell(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, min(done, total), total)


__all__ = ["Pass"]
