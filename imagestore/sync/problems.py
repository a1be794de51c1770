"""What is wrong with a store, in one vocabulary: every kind of problem a sync records or
fsck reports is a ``ProblemKind``, whose value is the name users see (``sync_problems.kind``,
``sync --json``, ``fsck``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from imagestore.index.queries import Reader
from imagestore.moby.problems import ProblemKind

if TYPE_CHECKING:
    from imagestore.index import Writer


@dataclass(frozen=True)
class Problem:
    """A store entry that was skipped (or an fsck finding), and why."""

    path: str
    kind: ProblemKind
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def kind_of(value: str) -> ProblemKind | str:
    """A stored kind as the enum (a kind written by another version stays a string)."""
    try:
        return ProblemKind(value)
    except ValueError:
        return value


def recorded(reader: Reader) -> list[Problem]:
    """Every problem the index holds, by path."""
    return [Problem(path, kind_of(kind), reason)  # type: ignore[arg-type]
            for path, kind, reason in reader.problems()]


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Problems:
    """One pass's bookkeeping: the problems recorded before it, those it has found, and the
    old ones that no longer apply because their entry is being read again."""

    def __init__(self, tx: Writer) -> None:
        self.found: dict[str, Problem] = {}
        self.old: dict[str, str] = tx.problem_kinds()
        self.cleared: set[str] = set()

    def note(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.found[p.path] = p

    def clear(self, paths: Iterable[str]) -> None:
        """Forget the old problems of these entries (they are being read again)."""
        if self.old:
            self.cleared.update(p for p in paths if p in self.old)

    def old_paths(self, kind: str) -> set[str]:
        """Paths of the old problems under one entry kind."""
        return {p for p in self.old if p.startswith(kind)}

    def old_of_kind(self, kind: str, problem: ProblemKind) -> list[str]:
        return [p for p, k in self.old.items() if k == problem.value and p.startswith(kind)]

    def get(self, path: str) -> Problem | None:
        return self.found.get(path)

    def save(self, tx: Writer) -> None:
        tx.delete_problems((self.cleared | self.found.keys()) & self.old.keys())
        found = now_text()
        tx.insert_problems([(p.path, p.kind.value, p.reason, found)
                            for p in self.found.values()])


__all__ = ["Problem", "ProblemKind", "Problems", "kind_of", "recorded"]
