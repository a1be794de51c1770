"""What one sync did, for its caller: counts, problems, and public counters of the work it
did (entries read, buckets compared, folders listed), which show that an unchanged root costs
next to nothing without anyone spying on internals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imagestore.sync.problems import Problem

# progress(phase, done, total), told as entries are read.
Progress = Callable[[str, int, int], None]


@dataclass
class SyncReport:
    """What a sync did to the index's images, and every problem the store has now."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    # Entries read again, by kind (the entry kinds of ``imagestore.moby.root``).
    read: Counter[str] = field(default_factory=Counter)
    # Buckets of stored signatures compared entry by entry, by kind.
    compared: Counter[str] = field(default_factory=Counter)
    # Kinds whose folder was listed (layer folders are not while their folder stays put).
    listed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "removed": self.removed, "changed": self.changed,
            "unchanged": self.unchanged, "skipped": self.skipped,
            "problems": [{"path": p.path, "kind": str(p.kind), "reason": p.reason}
                         for p in self.problems],
        }


__all__ = ["Progress", "SyncReport"]
